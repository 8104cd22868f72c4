"""LeNet-5 as LeCun, Bottou, Bengio and Haffner built it in 1998, layer by layer.

Source: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 86(11):2278-2324, 1998: section II.B (the network), Table I (C3's
connections), Appendix A (the squashing function and the initialization), Appendix C (the
second derivatives of the stochastic diagonal Levenberg-Marquardt method, `lenet_keras.optim`).

    input 28x28 in [0, 1] -> 32x32 field, background -0.1, ink 1.175    (`ZeroPadding2D`, `Rescaling`)
    C1  6 maps 5x5 over the input                       156 parameters  (`MappedConv2D`)
    S2  2x2 sums x coefficient + bias per map, squashed  12             (`Subsampling`)
    C3  16 maps 5x5 over Table I's subsets of S2      1,516             (`MappedConv2D`, `C3_TABLE`)
    S4  as S2                                           32
    C5  120 maps 5x5 over all of S4                  48,120
    F6  84 units                                     10,164             (`FullConnection`)
    output: 10 Euclidean RBF units, fixed +1/-1 codes (`EuclideanRBF`, `DIGIT_CODES`)
                                                     60,000 trainable in all

Every layer up to F6 is followed by the squashing function f(a) = A tanh(S a), A = 1.7159,
S = 2/3 (`ScaledTanh`). Weights and biases start uniform in +-2.4 / F, F the unit's fan-in
(inputs per unit: 25 for C1, 4 for S2 and S4, 25 x the input maps for C3, 400 for C5, 120 for
F6). The RBF unit i outputs the penalty y_i = sum_j (x_j - w_ij)^2; the predicted class is the
unit with the smallest penalty; the model returns softmax(-y), whose arg-max is that class.

Training uses the MAP criterion of Eq. 9 (`map_criterion`), E = y_correct + log(e^-j + sum_i
e^-y_i), j being `rubbish_penalty`: `LeNet5_1998.compute_loss` computes it (the compiled loss is
not used), and `LeNet5_1998.gauss_newton_diagonal` the second derivatives the SDLM optimizer
divides its steps by (Eqs. 25-27).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from lenet_keras.paper1998 import (  # noqa: F401  (re-exported: the network's numbers)
    BACKGROUND, C3_TABLE, DIGIT_BITMAPS, INITIAL_RANGE, INK, SQUASH_AMPLITUDE, SQUASH_SLOPE, digit_codes)


@keras.saving.register_keras_serializable(package="lenet_keras")
class FanInUniform(keras.initializers.Initializer):
    """Uniform in [-2.4 / fan_in, 2.4 / fan_in] (Appendix A), `fan_in` the inputs of one unit."""

    def __init__(self, fan_in: int, seed=None):
        self.fan_in = int(fan_in)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        limit = INITIAL_RANGE / self.fan_in
        return keras.random.uniform(shape, -limit, limit, dtype=dtype, seed=self.seed)

    def get_config(self):
        """Constructor arguments."""
        return {"fan_in": self.fan_in, "seed": self.seed}


@keras.saving.register_keras_serializable(package="lenet_keras")
class ScaledTanh(layers.Layer):
    """The squashing function f(a) = 1.7159 tanh(2/3 a) (Appendix A), elementwise; any shape."""

    def call(self, inputs):
        """f(inputs): float32 of any shape in, same shape out, values in (-1.7159, 1.7159)."""
        return SQUASH_AMPLITUDE * tf.tanh(SQUASH_SLOPE * inputs)

    @staticmethod
    def derivative(inputs):
        """f'(a) = A S (1 - tanh(S a)^2), elementwise."""
        return SQUASH_AMPLITUDE * SQUASH_SLOPE * (1.0 - tf.square(tf.tanh(SQUASH_SLOPE * inputs)))


class _Connections(layers.Layer):
    """A layer whose units are weighted sums of their inputs plus a bias: a = linear(x, kernel) + bias.

    Each subclass defines `linear(inputs, kernel)`, linear in the kernel and in the inputs
    separately, which is what `gauss_newton_diagonal` needs to back-propagate squared weights and
    inputs, and creates `kernel` and `bias` in `build`.
    """

    def call(self, inputs):
        """linear(inputs, kernel) + bias: float32 inputs in, float32 pre-activations out (shapes per subclass)."""
        return self.linear(inputs, self.kernel) + self.bias


@keras.saving.register_keras_serializable(package="lenet_keras")
class MappedConv2D(_Connections):
    """A 'valid' stride-1 convolution whose output maps see given subsets of the input maps.

    Args:
        filters: output maps.
        kernel_size: the square kernel's side.
        table: per output map, the input maps it combines (`C3_TABLE`); empty = every input map.

    Input: float32 (batch, H, W, in_maps). Output: float32 (batch, H - k + 1, W - k + 1, filters).
    Only the connections of `table` are parameters: kernel (k, k, connections) and bias (filters,),
    e.g. C3: (5, 5, 60) + 16 = 1,516. Each starts uniform in +-2.4 / (k * k * maps it sees).

    Raises:
        ValueError: at build, a table entry names an input map that does not exist, or the
            table does not have one entry per output map.
    """

    def __init__(self, filters: int, kernel_size: int, table=(), **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.table = tuple(tuple(int(m) for m in maps) for maps in table)

    def build(self, input_shape):
        """Create the kernel (k, k, in_maps, filters) or, with a table, (k, k, connections) and the bias
        (filters,), uniform in +-2.4 / fan-in per output map; ValueError for a table that does not fit."""
        in_maps, k = int(input_shape[-1]), self.kernel_size
        table = self.table or tuple(tuple(range(in_maps)) for _ in range(self.filters))
        if len(table) != self.filters or any(not 0 <= m < in_maps for maps in table for m in maps):
            raise ValueError(f"{self.name}: table {self.table} does not map {in_maps} input maps to {self.filters}")
        self._full = not self.table
        fan_ins = np.array([k * k * len(maps) for maps in table], np.float32)
        if self._full:
            self.kernel = self.add_weight(shape=(k, k, in_maps, self.filters), name="kernel",
                                          initializer=FanInUniform(k * k * in_maps))
        else:
            connections = [(m, out) for out, maps in enumerate(table) for m in maps]
            index = np.full((in_maps, self.filters), len(connections), np.int32)  # the last slot: zero
            for c, (m, out) in enumerate(connections):
                index[m, out] = c
            self._index = index
            limits = np.array([INITIAL_RANGE / fan_ins[out] for _, out in connections], np.float32)
            self.kernel = self.add_weight(
                shape=(k, k, len(connections)), name="kernel",
                initializer=lambda shape, dtype=None: keras.random.uniform(shape, -1.0, 1.0, dtype=dtype) * limits)
        limits = INITIAL_RANGE / fan_ins
        self.bias = self.add_weight(
            shape=(self.filters,), name="bias",
            initializer=lambda shape, dtype=None: keras.random.uniform(shape, -1.0, 1.0, dtype=dtype) * limits)

    def full_kernel(self, kernel):
        """The (k, k, in_maps, filters) kernel with zeros where `table` has no connection."""
        if self._full:
            return kernel
        padded = tf.concat([kernel, tf.zeros_like(kernel[..., :1])], axis=-1)
        return tf.gather(padded, self._index, axis=-1)

    def linear(self, inputs, kernel):
        """The convolution of `inputs` with `kernel` (the layer's compact shape), no bias."""
        return tf.nn.conv2d(inputs, self.full_kernel(kernel), strides=1, padding="VALID")

    def get_config(self):
        """Constructor arguments."""
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "table": [list(maps) for maps in self.table]}


@keras.saving.register_keras_serializable(package="lenet_keras")
class Subsampling(_Connections):
    """S2 and S4: each map's non-overlapping 2x2 blocks summed, times one trainable coefficient,
    plus one trainable bias (2 parameters per map), both uniform in +-2.4 / 4 at first.

    Input: float32 (batch, H, W, maps), H and W even. Output: (batch, H / 2, W / 2, maps).
    """

    def build(self, input_shape):
        """Create the coefficient and the bias, (maps,) each, uniform in +-2.4 / 4."""
        maps = int(input_shape[-1])
        self.kernel = self.add_weight(shape=(maps,), name="coefficient", initializer=FanInUniform(4))
        self.bias = self.add_weight(shape=(maps,), name="bias", initializer=FanInUniform(4))

    def linear(self, inputs, kernel):
        """kernel (maps,) times the 2x2 block sums of `inputs`."""
        return kernel * 4.0 * tf.nn.avg_pool2d(inputs, 2, 2, "VALID")


@keras.saving.register_keras_serializable(package="lenet_keras")
class FullConnection(_Connections):
    """F6: `units` units each connected to every input. Input (batch, n), output (batch, units);
    kernel (n, units) and bias uniform in +-2.4 / n."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        """Create the kernel (inputs, units) and the bias (units,), uniform in +-2.4 / inputs."""
        inputs = int(input_shape[-1])
        self.kernel = self.add_weight(shape=(inputs, self.units), name="kernel", initializer=FanInUniform(inputs))
        self.bias = self.add_weight(shape=(self.units,), name="bias", initializer=FanInUniform(inputs))

    def linear(self, inputs, kernel):
        """inputs @ kernel."""
        return tf.matmul(inputs, kernel)

    def get_config(self):
        """Constructor arguments."""
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="lenet_keras")
class EuclideanRBF(layers.Layer):
    """The output layer: unit i's penalty y_i = sum_j (x_j - w_ij)^2 with fixed codes w (`digit_codes`).

    Input: float32 (batch, n), F6's squashed outputs (n = 84). Output: float32 (batch, classes)
    penalties >= 0. The codes, float (classes, n), default `digit_codes()`, are constants, not
    weights (the paper keeps them fixed).
    """

    def __init__(self, codes=None, **kwargs):
        super().__init__(**kwargs)
        self.codes_ = np.asarray(digit_codes() if codes is None else codes, np.float32)
        self.codes = tf.constant(self.codes_)

    def get_config(self):
        """Constructor arguments."""
        return {**super().get_config(), "codes": self.codes_.tolist()}

    def call(self, inputs):
        """Penalties float32 (batch, classes) from F6 outputs float32 (batch, n)."""
        return tf.reduce_sum(tf.square(inputs[:, None, :] - self.codes[None]), axis=-1)


@keras.saving.register_keras_serializable(package="lenet_keras")
class SmallestPenalty(layers.Layer):
    """softmax(-penalties), float32 (batch, 10): rows sum to 1, the arg-max is the unit with the
    smallest penalty (the paper's decision), so the model returns probabilities like this
    package's other models."""

    def call(self, inputs):
        """softmax(-inputs) over the last axis: penalties (batch, 10) in, probabilities (batch, 10) out."""
        return tf.nn.softmax(-inputs, axis=-1)


def map_criterion(labels, penalties, rubbish_penalty: float):
    """The MAP criterion of Eq. 9 per pattern: E = y_c + log(e^-j + sum_i e^-y_i).

    Args:
        labels: one-hot float32 (batch, 10) (c: the correct class).
        penalties: the RBF outputs y, float32 (batch, 10).
        rubbish_penalty: j >= 0, the penalty of the "rubbish" class whose e^-j keeps already
            large penalties from being pushed up further.
    Returns:
        float32 (batch,), computed with a stable log-sum-exp.
    """
    correct = tf.reduce_sum(labels * penalties, axis=-1)
    rubbish = tf.fill(tf.shape(penalties[:, :1]), -tf.cast(rubbish_penalty, penalties.dtype))
    return correct + tf.reduce_logsumexp(tf.concat([rubbish, -penalties], axis=-1), axis=-1)


def map_posterior(penalties, rubbish_penalty: float):
    """p_i = e^-y_i / (e^-j + sum_k e^-y_k), float32 (batch, 10): the criterion is -log p_correct."""
    rubbish = tf.fill(tf.shape(penalties[:, :1]), -tf.cast(rubbish_penalty, penalties.dtype))
    return tf.exp(-penalties - tf.reduce_logsumexp(tf.concat([rubbish, -penalties], axis=-1), axis=-1, keepdims=True))


def gauss_newton_diagonal(model, images, rubbish_penalty: float) -> list:
    """Eqs. 25-27: the Gauss-Newton second derivatives of the criterion with respect to each
    trainable weight, averaged over the patterns given; float32, one tensor per entry of
    `model.trainable_variables`, in that order and of those shapes.

    Back-propagation with squared quantities. At F6's outputs x the criterion's own diagonal
    second derivative, with the log-sum-exp part in its Gauss-Newton form:
    ∂²E/∂x_j² = 2 sum_i ∂E/∂y_i + sum_i p_i (1 - p_i) (2 (x_j - w_ij))², where ∂E/∂y_c = 1 - p_c,
    ∂E/∂y_i = -p_i otherwise, so the first sum is 2 (1 - sum_i p_i) >= 0 (p: `map_posterior`;
    the second y derivatives of the RBF, 2, are exact; the cross terms p_i p_k are dropped).
    Then through f: ∂²E/∂a² = f'(a)² ∂²E/∂x² (Eq. 26, f'' dropped); through connections
    ∂²E/∂x_j² = sum_k w_kj² ∂²E/∂a_k² (Eq. 27) and, for a weight shared by the connections V,
    ∂²E/∂w² = sum_((k, j) in V) x_j² ∂²E/∂a_k² (Eq. 25; a bias: x = 1).

    Args:
        images: float32 (patterns, 28, 28, 1) as `call` takes them.
        model: a `keras.Sequential` of this module's layers: input preparation without weights,
            then `_Connections` layers, `ScaledTanh` and `Flatten`, then `EuclideanRBF` and
            `SmallestPenalty` (`LeNet5_1998`, or a smaller network of the same kinds).
        rubbish_penalty: j of the criterion.
    """
    inputs, x = [], tf.convert_to_tensor(images, tf.float32)
    for layer in model.layers[:-1]:
        inputs.append(x)
        x = layer(x, training=False)
    posterior = map_posterior(x, rubbish_penalty)
    codes = model.layers[-2].codes
    second = 2.0 * (1.0 - tf.reduce_sum(posterior, axis=-1, keepdims=True)) + tf.einsum(
        "bi,bij->bj", posterior * (1.0 - posterior), 4.0 * tf.square(inputs[-1][:, None, :] - codes[None]))
    curvature, patterns = {}, tf.cast(tf.shape(images)[0], tf.float32)
    for layer, x in reversed(list(zip(model.layers[:-2], inputs[:-1]))):
        if isinstance(layer, ScaledTanh):
            second = second * tf.square(layer.derivative(x))
        elif isinstance(layer, layers.Flatten):
            second = tf.reshape(second, tf.shape(x))
        elif isinstance(layer, _Connections):
            squared_kernel, squared_inputs = tf.square(layer.kernel), tf.square(x)
            with tf.GradientTape() as tape:
                tape.watch([squared_kernel, squared_inputs])
                total = tf.reduce_sum(second * layer.linear(squared_inputs, squared_kernel))
            kernel_term, below = tape.gradient(total, [squared_kernel, squared_inputs])
            bias_term = tf.reduce_sum(tf.reshape(second, [-1, layer.bias.shape[0]]), axis=0)
            curvature[id(layer.kernel)] = kernel_term / patterns
            curvature[id(layer.bias)] = bias_term / patterns
            second = below
        else:
            break  # the input preparation: nothing trainable before C1
    return [curvature[id(v)] for v in model.trainable_variables]



@keras.saving.register_keras_serializable(package="lenet_keras")
class LeNet5_1998(keras.Sequential):
    """LeCun et al.'s 1998 LeNet-5 (this module's docstring), as a `keras.Sequential`.

    Args:
        input_shape: (28, 28, 1) (centred in the 32x32 field) or (32, 32, 1).
        num_classes: 10 (the RBF codes are the ten digits').
        rubbish_penalty: j of the MAP criterion (Eq. 9), >= 0; the paper gives no value.

    Input: float32 images (batch, 28, 28, 1) in [0, 1] (0 background, 1 ink).
    Output: float32 (batch, 10), softmax of the negated RBF penalties (`SmallestPenalty`).
    `penalties(x)` gives the RBF outputs themselves, (batch, 10) float32. The shipped experiments
    train it in float32 (`train.precision = "float32"`); other precisions are untested.

    Raises:
        ValueError: another input shape or number of classes.
    """

    criterion = "MAP criterion (LeCun et al. 1998, Eq. 9)"
    """What `compute_loss` computes (`models.OwnCriterion`)."""
    PARAMETERS = 60_000
    """Trainable parameters (section II.B: "about 60,000"; exactly 60,000 with Table I's C3)."""

    def __init__(self, input_shape=(28, 28, 1), num_classes=10, rubbish_penalty=0.0, name="lenet5_1998", **kwargs):
        input_shape = tuple(int(d) for d in input_shape)
        if input_shape not in ((28, 28, 1), (32, 32, 1)) or int(num_classes) != 10:
            raise ValueError(f"LeNet5_1998 takes 28x28x1 or 32x32x1 digit images and 10 classes, got "
                             f"input_shape={input_shape}, num_classes={num_classes}")
        super().__init__(name=name, **kwargs)
        self.input_shape_, self.num_classes = input_shape, 10
        self.rubbish_penalty = float(rubbish_penalty)
        self.add(keras.Input(shape=input_shape))
        if input_shape[0] == 28:
            self.add(layers.ZeroPadding2D(2, name="field_32x32"))
        self.add(layers.Rescaling(INK - BACKGROUND, offset=BACKGROUND, name="levels"))
        for layer in (MappedConv2D(6, 5, name="C1"), Subsampling(name="S2"),
                      MappedConv2D(16, 5, C3_TABLE, name="C3"), Subsampling(name="S4"),
                      MappedConv2D(120, 5, name="C5")):
            self.add(layer)
            self.add(ScaledTanh(name=f"f_{layer.name}"))
        self.add(layers.Flatten(name="flatten"))
        self.add(FullConnection(84, name="F6"))
        self.add(ScaledTanh(name="f_F6"))
        self.add(EuclideanRBF(name="rbf"))
        self.add(SmallestPenalty(name="smallest_penalty", dtype="float32"))

    def penalties(self, images, training=False):
        """The RBF outputs y (batch, 10) float32 for images as `call` takes them."""
        x = images
        for layer in self.layers[:-1]:
            x = layer(x, training=training)
        return x

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The batch mean of `map_criterion` (Eq. 9) on one-hot labels `y` (float32 scalar); the compiled
        loss is not used, and `y_pred` neither: the penalties are computed again from `x` (a second
        forward pass, since the model returns softmax(-penalties), not the penalties)."""
        errors = map_criterion(tf.cast(y, tf.float32), self.penalties(x, training=training), self.rubbish_penalty)
        if sample_weight is not None:
            errors = errors * tf.cast(sample_weight, errors.dtype)
        return tf.reduce_mean(errors)

    def gauss_newton_diagonal(self, images, labels) -> list:
        """`gauss_newton_diagonal(self, images, self.rubbish_penalty)` (the SDLM optimizer's h_kk);
        `labels` (one-hot (patterns, 10)) are not needed by those terms."""
        del labels
        return gauss_newton_diagonal(self, images, self.rubbish_penalty)

    def get_config(self):
        """Constructor arguments, so `.keras` files load back into a `LeNet5_1998`."""
        return {"input_shape": self.input_shape_, "num_classes": self.num_classes,
                "rubbish_penalty": self.rubbish_penalty, "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuild from `get_config()` output."""
        return cls(**config)
