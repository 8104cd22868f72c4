"""The deck's LeNet-5 built from `lenet_keras.scratch.layers`, its optimizer, and weight exchange with Keras.

`ScratchLeNet5` has exactly the layer layout of `lenet_keras.models.LeNet5` (deck variant, seed
002): Conv2D 6@5x5 'same' tanh -> AveragePooling 2 -> Conv2D 16@5x5 tanh -> AveragePooling 2 ->
Conv2D 120@5x5 tanh -> Flatten -> Dense 84 tanh -> Dense 10 (softmax in the loss), 61,706
parameters, so weights copy both ways (`from_keras`, `to_keras`).

`SGD` is Keras's SGD with momentum (Keras 3: m <- momentum m - lr g; w <- w + m) under Keras's
`ExponentialDecay` (lr = initial * rate ** (step / decay_steps), step = updates done so far).
"""

from __future__ import annotations

import numpy as np

from lenet_keras.scratch import layers as L

PARAMETERS = 61_706
"""Trainable parameters of the deck's LeNet-5 on 28x28x1 inputs with 10 classes."""


def _glorot(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))  # Keras's default GlorotUniform
    return rng.uniform(-limit, limit, shape).astype(dtype)


class ScratchLeNet5:
    """LeNet-5 in NumPy (see the module docstring).

    Args:
        input_shape: (H, W, C) of one image; default MNIST's (28, 28, 1).
        num_classes: outputs of the last Dense layer.
        seed: seeds the Glorot-uniform initialization (biases start at 0, as in Keras).
        dtype: np.float32 (training) or np.float64 (gradient checks).

    Input: float images (N, H, W, C) in [0, 1]. `logits(x)` -> (N, classes); `predict(x)` ->
    softmax probabilities (N, classes).

    Raises:
        ValueError: images smaller than 28x28 (too small for the three 5x5 convolutions).
    """

    def __init__(self, input_shape=(28, 28, 1), num_classes: int = 10, seed: int = 0, dtype=np.float32):
        height, width, channels = input_shape
        if min(height, width) < 28:
            raise ValueError(f"ScratchLeNet5 needs inputs of at least 28x28, got input_shape={tuple(input_shape)}")
        rng = np.random.default_rng(seed)
        h3, w3 = (height // 2 - 4) // 2 - 4, (width // 2 - 4) // 2 - 4  # after conv3 ('valid')

        def _conv(cin, cout, name, padding="valid"):
            kernel = _glorot(rng, (5, 5, cin, cout), 25 * cin, 25 * cout, dtype)
            # the first layer's input gradient is never used: not computed
            return L.Conv2D(kernel, np.zeros(cout, dtype), padding=padding, name=name, input_gradient=name != "conv1")

        def _dense(nin, nout, name):
            return L.Dense(_glorot(rng, (nin, nout), nin, nout, dtype), np.zeros(nout, dtype), name=name)

        self.layers = [
            _conv(channels, 6, "conv1", "same"), L.Tanh(), L.AveragePooling2D(2, "pool1"),
            _conv(6, 16, "conv2"), L.Tanh(), L.AveragePooling2D(2, "pool2"),
            _conv(16, 120, "conv3"), L.Tanh(), L.Flatten(),
            _dense(120 * h3 * w3, 84, "dense1"), L.Tanh(),
            _dense(84, num_classes, "dense2"),
        ]
        self.input_shape, self.num_classes = tuple(input_shape), num_classes

    @property
    def trainable(self) -> list:
        """The layers with parameters, in order (conv1, conv2, conv3, dense1, dense2)."""
        return [layer for layer in self.layers if layer.params]

    def count_params(self) -> int:
        """Number of trainable parameters (61,706 for MNIST)."""
        return sum(p.size for layer in self.trainable for p in layer.params.values())

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Forward pass: images (N, H, W, C) -> logits (N, classes); caches what `backward` needs."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Softmax probabilities (N, classes), computed `batch_size` images at a time."""
        return np.concatenate([L.softmax(self.logits(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])

    def loss_and_gradients(self, x: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        """(mean softmax cross-entropy on (x, one-hot targets (N, classes)), logits (N, classes));
        fills every layer's `grads`."""
        logits = self.logits(x)
        loss, grad = L.softmax_cross_entropy(logits, targets)
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return loss, logits

    def from_keras(self, model) -> "ScratchLeNet5":
        """Copy the weights of a Keras `LeNet5` (deck variant) into this network; returns self.

        Raises:
            ValueError: the Keras model's weights do not have this network's shapes.
        """
        weights = [w for w in model.get_weights()]
        mine = [p for layer in self.trainable for p in (layer.params["kernel"], layer.params["bias"])]
        if [w.shape for w in weights] != [p.shape for p in mine]:
            raise ValueError(f"from_keras: weight shapes {[w.shape for w in weights]} differ from "
                             f"ScratchLeNet5's {[p.shape for p in mine]}")
        for target, value in zip(mine, weights):
            target[...] = value
        return self

    def to_keras(self, model) -> None:
        """Copy this network's weights into a Keras `LeNet5` (deck variant) of the same shapes."""
        model.set_weights([p for layer in self.trainable for p in (layer.params["kernel"], layer.params["bias"])])


class SGD:
    """SGD with momentum under an exponential-decay learning rate, as Keras computes it.

    lr(step) = learning_rate * decay_rate ** (step / decay_steps) (floor of the exponent with
    `staircase`); velocity <- momentum * velocity - lr * grad; param <- param + velocity.
    """

    def __init__(self, learning_rate: float = 1e-2, momentum: float = 0.9, decay_steps: int = 10_000,
                 decay_rate: float = 1.0, staircase: bool = False):
        self.learning_rate, self.momentum = learning_rate, momentum
        self.decay_steps, self.decay_rate, self.staircase = decay_steps, decay_rate, staircase
        self.iterations = 0
        self._velocity: dict[int, np.ndarray] = {}

    def current_learning_rate(self) -> float:
        """The learning rate the next update uses."""
        exponent = self.iterations / self.decay_steps
        return self.learning_rate * self.decay_rate ** (np.floor(exponent) if self.staircase else exponent)

    def apply(self, network: ScratchLeNet5) -> None:
        """One update of every parameter from its layer's `grads`."""
        lr = self.current_learning_rate()
        for layer in network.trainable:
            for key, param in layer.params.items():
                velocity = self._velocity.setdefault(id(param), np.zeros_like(param))
                velocity *= self.momentum
                velocity -= lr * layer.grads[key]
                param += velocity
        self.iterations += 1
