"""Faster TensorFlow versions of two layers of `models.CifarFast` (airbench94 in Keras).

Keras 3 builds `BatchNormalization` from separate moment and normalization ops and runs GELU
as several elementwise kernels; on a CPU both are memory-bound passes over every activation.
These two do each in one fused pass, which makes a training step of `CifarFast` faster
(`make bench`, workload `cifar_fast`, measures the step).

- `ScalelessBatchNorm`: TensorFlow's fused batch normalization (`FusedBatchNormV3`, a oneDNN
  kernel on the CPU, cuDNN on a GPU) with the scale fixed at 1 (airbench's BatchNorm has no
  trained weight), a trained offset `beta`, and PyTorch's running statistics: the moving
  variance is updated with the unbiased (Bessel-corrected) batch variance, as
  `torch.nn.BatchNorm2d` does.
- `xla_gelu`: the exact GELU, x * Phi(x) (Hendrycks & Gimpel 2016; `torch.nn.GELU()`),
  compiled by XLA into one fused pass forward and one backward.

Both are TensorFlow-backend only, as this whole package is.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf


@tf.function(jit_compile=True)
def _gelu(x):
    return tf.nn.gelu(x, approximate=False)


_XLA = [True]


@contextlib.contextmanager
def without_xla():
    """Within this block, `xla_gelu` traces as plain TensorFlow ops (same values), e.g. so that
    TensorFlow's profiler can count the FLOPs of a graph (`bench.forward_flops`)."""
    _XLA[0] = False
    try:
        yield
    finally:
        _XLA[0] = True


@keras.saving.register_keras_serializable(package="lenet_keras")
def xla_gelu(x):
    """Exact GELU of a tensor of any shape and float dtype (same shape and dtype out), XLA-fused.

    Equals `keras.activations.gelu(x, approximate=False)` (0.5 x (1 + erf(x / sqrt 2))) up to
    rounding; use it as `layers.Activation(xla_gelu)`.
    """
    return _gelu(x) if _XLA[0] else tf.nn.gelu(x, approximate=False)


@keras.saving.register_keras_serializable(package="lenet_keras")
class ScalelessBatchNorm(keras.layers.Layer):
    """Batch normalization over the last axis with no scale, a trained offset, fused kernels.

    As airbench94's `BatchNorm(weight=False)` (PyTorch `BatchNorm2d`, weight frozen at 1):
    in training y = (x - mean_B) / sqrt(var_B + epsilon) + beta with the batch's mean and
    biased variance over (batch, height, width), and
    moving = momentum * moving + (1 - momentum) * batch statistic, the batch variance
    Bessel-corrected (n / (n - 1)) as PyTorch does. In inference the moving statistics are used.

    Args:
        momentum: Keras convention, the weight of the old moving value (airbench: 0.6, which
            is PyTorch momentum 0.4).
        epsilon: added to the variance (airbench: 1e-12).

    Input: float (batch, height, width, channels) of the compute dtype (bfloat16, float16 or
    float32); output: the same shape and dtype. Weights: `beta`, `moving_mean`,
    `moving_variance`, each (channels,) float32. Variables are not autocast (the fused kernel
    takes float32 statistics with low-precision activations).
    """

    def __init__(self, momentum: float = 0.6, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        """Create `beta`, `moving_mean`, `moving_variance`: (channels,) float32, never autocast."""
        channels = int(input_shape[-1])
        float32 = {"dtype": "float32", "autocast": False}
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta", **float32)
        self.moving_mean = self.add_weight(shape=(channels,), initializer="zeros", trainable=False,
                                           name="moving_mean", **float32)
        self.moving_variance = self.add_weight(shape=(channels,), initializer="ones", trainable=False,
                                               name="moving_variance", **float32)

    def compute_output_shape(self, input_shape):
        """Same shape as the input."""
        return input_shape

    def call(self, inputs, training=False):
        """Normalize `inputs` (B, H, W, C): batch statistics when `training`, else the moving ones."""
        x = tf.convert_to_tensor(inputs)
        if x.dtype != tf.dtypes.as_dtype(self.compute_dtype):
            x = tf.cast(x, self.compute_dtype)
        beta = tf.convert_to_tensor(self.beta.value)
        scale = tf.ones_like(beta)
        if training:
            y, batch_mean, batch_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=beta, mean=tf.constant([], tf.float32), variance=tf.constant([], tf.float32),
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
            keep = self.momentum
            self.moving_mean.assign(keep * self.moving_mean.value + (1.0 - keep) * tf.stop_gradient(batch_mean))
            self.moving_variance.assign(
                keep * self.moving_variance.value + (1.0 - keep) * tf.stop_gradient(batch_variance))
            return y
        y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=beta, mean=tf.convert_to_tensor(self.moving_mean.value),
            variance=tf.convert_to_tensor(self.moving_variance.value), epsilon=self.epsilon,
            data_format="NHWC", is_training=False)
        return y

    def get_config(self):
        """Constructor arguments, for saving."""
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}
