"""LeCun et al.'s 1998 LeNet-5 and its stochastic diagonal Levenberg-Marquardt optimizer in NumPy.

The same network as `lenet_keras.lenet1998.LeNet5_1998` (section II.B, Table I, Appendix A of
LeCun, Bottou, Bengio, Haffner, Proc. IEEE 86(11), 1998; the numbers in `lenet_keras.paper1998`),
with the paper's sequential training (Appendix C): one update per pattern,
w_k -= eta / (mu + h_kk) dE/dw_k, h_kk the Gauss-Newton second derivatives of the MAP criterion
(Eq. 9) back-propagated with squared weights and squared inputs (Eqs. 25-27) and averaged over a
few hundred patterns. Weights copy both ways with the Keras network (`from_keras`, `to_keras`);
`tests/test_scratch_lenet1998.py` checks the penalties, gradients, second derivatives and one
update against TensorFlow's.

Layers as `lenet_keras.scratch.layers` (NHWC, `forward`/`backward`, `params`/`grads`), plus
`backward_squared(d2y)`, which fills `second` (same keys as `params`) and returns the input's
second derivatives. C3 is a full 6 -> 16 convolution whose kernel is zero off Table I's
connections; its gradients and second derivatives are masked to them, so 60,000 parameters train.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from lenet_keras.paper1998 import BACKGROUND, C3_TABLE, INITIAL_RANGE, INK, SQUASH_AMPLITUDE, SQUASH_SLOPE, digit_codes
from lenet_keras.scratch import layers as L

PARAMETERS = 60_000
"""Trainable parameters (section II.B: "about 60,000"; 60,000 exactly with Table I's C3)."""


class ScaledTanh:
    """f(a) = 1.7159 tanh(2/3 a) (Appendix A), elementwise; dX = dY f'(X), d2X = d2Y f'(X)^2 (Eq. 26)."""

    params: dict = {}
    grads: dict = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        """f(x), same shape."""
        self._t = np.tanh(SQUASH_SLOPE * x)
        return SQUASH_AMPLITUDE * self._t

    def _slope(self) -> np.ndarray:
        return SQUASH_AMPLITUDE * SQUASH_SLOPE * (1 - self._t * self._t)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dY f'(X)."""
        return dy * self._slope()

    def backward_squared(self, d2y: np.ndarray) -> np.ndarray:
        """d2Y f'(X)^2 (f'' dropped, Eq. 26)."""
        return d2y * self._slope() ** 2


class Subsampling:
    """S2, S4: each map's 2x2 block sums times a trainable coefficient plus a trainable bias.

    Params: `kernel` (maps,) (the coefficients) and `bias` (maps,). (N, H, W, maps), H and W even,
    -> (N, H/2, W/2, maps).
    """

    def __init__(self, coefficient: np.ndarray, bias: np.ndarray, name: str = "subsampling"):
        self.params = {"kernel": coefficient, "bias": bias}
        self.grads: dict[str, np.ndarray] = {}
        self.name = name

    @staticmethod
    def _block_sums(x: np.ndarray) -> np.ndarray:
        n, h, w, c = x.shape
        return x.reshape(n, h // 2, 2, w // 2, 2, c).sum(axis=(2, 4))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """coefficient * (2x2 block sums) + bias."""
        self._x, self._sums = x, self._block_sums(x)
        return self._sums * self.params["kernel"] + self.params["bias"]

    @staticmethod
    def _spread(d: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(d, 2, axis=1), 2, axis=2)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dcoefficient = sum dY sums, dbias = sum dY, dX = dY coefficient on each block element."""
        self.grads = {"kernel": (dy * self._sums).sum(axis=(0, 1, 2)), "bias": dy.sum(axis=(0, 1, 2))}
        return self._spread(dy * self.params["kernel"])

    def backward_squared(self, d2y: np.ndarray) -> np.ndarray:
        """Eqs. 25, 27 for a weight shared by the 4 inputs of every unit of a map (after `forward`)."""
        squared_sums = self._block_sums(self._x * self._x)
        self.second = {"kernel": (d2y * squared_sums).sum(axis=(0, 1, 2)), "bias": d2y.sum(axis=(0, 1, 2))}
        return self._spread(d2y * self.params["kernel"] ** 2)


def rubbish_logsumexp(penalties: np.ndarray, rubbish_penalty: float) -> np.ndarray:
    """log(e^-j + sum_i e^-y_i) per row of `penalties` (N, 10), computed stably; (N,)."""
    scores = np.concatenate([np.full((len(penalties), 1), -rubbish_penalty, penalties.dtype), -penalties], axis=1)
    return logsumexp(scores, axis=1)


def map_posterior(penalties: np.ndarray, rubbish_penalty: float) -> np.ndarray:
    """p_i = e^-y_i / (e^-j + sum_k e^-y_k), (N, 10)."""
    return np.exp(-penalties - rubbish_logsumexp(penalties, rubbish_penalty)[:, None])


class ScratchLeNet5_1998:
    """LeNet-5 of 1998 in NumPy (module docstring), weights uniform in +-2.4 / fan-in from `seed`.

    Args:
        rubbish_penalty: j of the MAP criterion (Eq. 9), >= 0.
        seed: seeds NumPy's generator for the initial weights (not Keras's draw: copy weights with
            `from_keras` to start from a Keras network's).
        dtype: np.float32 (training) or np.float64 (checks).

    Input: images (N, 28, 28, 1) in [0, 1]. `penalties(x)` -> RBF outputs y (N, 10);
    `predict(x)` -> softmax(-y) (N, 10), as the Keras model returns.
    """

    def __init__(self, rubbish_penalty: float = 0.0, seed: int = 0, dtype=np.float32):
        rng, self.dtype = np.random.default_rng(seed), dtype
        self.rubbish_penalty = float(rubbish_penalty)
        self.codes = digit_codes().astype(dtype)
        self.c3_mask = np.zeros((5, 5, 6, 16), dtype)
        for out, maps in enumerate(C3_TABLE):
            self.c3_mask[:, :, list(maps), out] = 1

        def uniform(shape, fan_in):
            """Weights of `shape` uniform in +-2.4 / fan_in (a number, or one per output map: the last axis)."""
            fan_in = np.broadcast_to(fan_in, shape)
            return (rng.uniform(-1, 1, shape) * INITIAL_RANGE / fan_in).astype(dtype)

        c3_fan_in = self.c3_mask.sum(axis=(0, 1, 2))  # 25 x the S2 maps each C3 map sees
        self.layers = [
            L.Conv2D(uniform((5, 5, 1, 6), 25), uniform((6,), 25), name="C1", input_gradient=False), ScaledTanh(),
            Subsampling(uniform((6,), 4), uniform((6,), 4), name="S2"), ScaledTanh(),
            L.Conv2D(uniform((5, 5, 6, 16), c3_fan_in) * self.c3_mask, uniform((16,), c3_fan_in), name="C3"),
            ScaledTanh(),
            Subsampling(uniform((16,), 4), uniform((16,), 4), name="S4"), ScaledTanh(),
            L.Conv2D(uniform((5, 5, 16, 120), 400), uniform((120,), 400), name="C5"), ScaledTanh(), L.Flatten(),
            L.Dense(uniform((120, 84), 120), uniform((84,), 120), name="F6"), ScaledTanh(),
        ]

    @property
    def trainable(self) -> list:
        """The layers with parameters, in order: C1, S2, C3, S4, C5, F6."""
        return [layer for layer in self.layers if layer.params]

    def count_params(self) -> int:
        """Trained parameters: C3's kernel counts its Table I connections only."""
        total = sum(p.size for layer in self.trainable for p in layer.params.values())
        return int(total - (self.c3_mask.size - self.c3_mask.sum()))

    def _field(self, x: np.ndarray) -> np.ndarray:
        """(N, 28, 28, 1) in [0, 1] -> (N, 32, 32, 1) at -0.1 (background) .. 1.175 (ink)."""
        if x.ndim != 4 or x.shape[1:] != (28, 28, 1):
            raise ValueError(f"ScratchLeNet5_1998: expected images (N, 28, 28, 1), got shape {x.shape}")
        return np.pad(x.astype(self.dtype), ((0, 0), (2, 2), (2, 2), (0, 0))) * (INK - BACKGROUND) + BACKGROUND

    def penalties(self, x: np.ndarray) -> np.ndarray:
        """RBF penalties y_i = sum_j (x_j - w_ij)^2, (N, 10); keeps what backward passes need."""
        h = self._field(x)
        for layer in self.layers:
            h = layer.forward(h)
        self._f6 = h
        return ((h[:, None, :] - self.codes[None]) ** 2).sum(axis=-1)

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """softmax(-penalties), (N, 10): arg-max = the smallest penalty."""
        return np.concatenate([L.softmax(-self.penalties(x[first : first + batch_size]))
                               for first in range(0, len(x), batch_size)])

    def criterion(self, penalties: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Eq. 9 per pattern, (N,): y_c + log(e^-j + sum_i e^-y_i); labels int (N,)."""
        return penalties[np.arange(len(labels)), labels] + rubbish_logsumexp(penalties, self.rubbish_penalty)

    def loss_and_gradients(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """(batch mean of Eq. 9, penalties (N, 10)); fills every layer's `grads` (of the mean)."""
        penalties = self.penalties(x)
        loss = float(self.criterion(penalties, labels).mean())
        dpenalties = -map_posterior(penalties, self.rubbish_penalty)
        dpenalties[np.arange(len(labels)), labels] += 1
        grad = (dpenalties[:, :, None] * 2 * (self._f6[:, None, :] - self.codes[None])).sum(axis=1) / len(x)
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        self.layers[4].grads["kernel"] *= self.c3_mask
        return loss, penalties

    def gauss_newton_diagonal(self, x: np.ndarray) -> list[dict[str, np.ndarray]]:
        """h_kk averaged over the patterns x (N, 28, 28, 1): one dict per `trainable` layer, keys and
        shapes of its `params`. At F6's outputs: 2 (1 - sum_i p_i) + sum_i p_i (1 - p_i) (2 (x - w_i))^2
        (`lenet_keras.lenet1998.gauss_newton_diagonal` gives the derivation), then Eqs. 25-27."""
        posterior = map_posterior(self.penalties(x), self.rubbish_penalty)
        second = 2 * (1 - posterior.sum(axis=1, keepdims=True)) + np.einsum(
            "bi,bij->bj", posterior * (1 - posterior), 4 * (self._f6[:, None, :] - self.codes[None]) ** 2)
        for layer in reversed(self.layers):
            second = layer.backward_squared(second) if hasattr(layer, "backward_squared") else layer.backward(second)
        self.layers[4].second["kernel"] *= self.c3_mask
        return [{key: value / len(x) for key, value in layer.second.items()} for layer in self.trainable]

    def from_keras(self, model) -> "ScratchLeNet5_1998":
        """Copy a `lenet_keras.lenet1998.LeNet5_1998`'s weights (C3's compact kernel spread onto Table I)."""
        for layer, keras_layer in zip(self.trainable, [model.get_layer(n) for n in ("C1", "S2", "C3", "S4", "C5", "F6")]):
            kernel = keras_layer.kernel
            kernel = keras_layer.full_kernel(kernel) if layer.name == "C3" else kernel
            layer.params["kernel"][...] = np.asarray(kernel, self.dtype)
            layer.params["bias"][...] = np.asarray(keras_layer.bias, self.dtype)
        return self

    def to_keras(self, model) -> None:
        """Copy these weights into a `LeNet5_1998` (C3: the Table I entries of the full kernel)."""
        for layer, keras_layer in zip(self.trainable, [model.get_layer(n) for n in ("C1", "S2", "C3", "S4", "C5", "F6")]):
            kernel = layer.params["kernel"]
            if layer.name == "C3":
                kernel = np.stack([kernel[:, :, m, out] for out, maps in enumerate(C3_TABLE) for m in maps], axis=-1)
            keras_layer.kernel.assign(kernel.astype(np.float32))
            keras_layer.bias.assign(layer.params["bias"].astype(np.float32))


class StochasticDiagonalLM:
    """w_k -= eta / (mu + h_kk) * dE/dw_k for every parameter (Appendix C, Eqs. 21-24); `curvature`
    (one dict per trainable layer, `ScratchLeNet5_1998.gauss_newton_diagonal`) starts at 0.

    Args:
        damping: mu (the paper: 0.02).
    """

    def __init__(self, damping: float = 0.02):
        self.damping, self.curvature = float(damping), None

    def apply(self, network: ScratchLeNet5_1998, learning_rate: float) -> None:
        """One update of every parameter from its layer's `grads` at this `learning_rate` (eta)."""
        for index, layer in enumerate(network.trainable):
            for key, param in layer.params.items():
                h = self.curvature[index][key] if self.curvature is not None else 0.0
                param -= (learning_rate / (self.damping + h) * layer.grads[key]).astype(param.dtype)
