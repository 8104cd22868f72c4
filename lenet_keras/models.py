"""Models as `keras.Sequential` subclasses, built by registry name (`[model] name = ...`).

- `lenet5`: the deck's `MyLeNet` (seed 002, "LeNet Keras TensorFlow"), 28x28 input, conv1 'same'.
- `lenet5_classic`: the LeNet paper seed's table (seed 000, "Architecture details"): input
  zero-padded to 32x32, conv1 'valid' (28x28x6 feature maps), as LeCun et al. (1998).
- `lenet5_relu`: the deck's shapes with ReLU and max-pooling.
- `lenet5_wide`: 16/32/64 convolution maps and no F6 (65,162 parameters), ReLU and max-pooling.
- `lenet5_wide_bn`: `lenet5_wide` with each convolution bias-free and batch-normalized (65,386).
- `cifar_cnn`: the CIFAR-10 notebook's 6-block CNN (seed 004, section "Model architecture"),
  4,079,429 trainable parameters.
- `cifar_fast`: airbench94's network (`CifarFast`), whose first conv is set from the data.
- `lenet5_1998`: LeCun et al.'s 1998 LeNet-5 (sparse C3, trainable subsampling, scaled tanh,
  RBF output, MAP criterion; `lenet_keras.lenet1998`), 60,000 parameters.

The LeNet-5 variants have 61,706 parameters on MNIST (`lenet5_wide`: 65,162; `lenet5_wide_bn`: 65,386). Models never read files and never compile themselves:
the optimizer, loss and metrics are chosen by the experiment (`lenet_keras.optim`, `train`).
A model that needs data-dependent initialization says so through one protocol,
`InitializedFromData`: the runner checks `isinstance(model, InitializedFromData)` and hands it
`initialization_images` normalized training images.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import keras
import numpy as np
from keras import layers

from lenet_keras.config import ModelConfig
from lenet_keras.errors import ConfigError


@runtime_checkable
class InitializedFromData(Protocol):
    """A model whose initial weights depend on the training data (e.g. airbench94's whitening conv).

    The runner, after building (and compiling) such a model and before training it, calls
    `model.initialize_from_data(images)` with the first `model.initialization_images`
    training images, normalized as the input pipeline normalizes them. A model that is not an
    instance of this protocol (`isinstance` checks both members) gets no such call.
    """

    initialization_images: int
    """How many training images `initialize_from_data` wants (fewer when the training set is smaller)."""

    def initialize_from_data(self, images: np.ndarray) -> None:
        """Set the data-dependent weights from `images`: float32 (N, height, width, channels),
        normalized as the pipeline does (pixels / 255, then (x - mean) / std when the experiment
        has a mean and std)."""


@runtime_checkable
class OwnCriterion(Protocol):
    """A model that computes its own training criterion (`lenet1998.LeNet5_1998`: the MAP criterion).

    The runner compiles such a model without a loss; Keras then calls the model's
    `compute_loss(x, y, y_pred, sample_weight, training)` for the loss of a batch (training and
    evaluation). `criterion` names it in words.
    """

    criterion: str

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The batch's loss, a float32 scalar."""


LENET5_PARAMETERS = 61_706
"""Parameter count of LeNet-5 on 28x28x1 inputs with 10 classes (the deck's model summary)."""


@keras.saving.register_keras_serializable(package="lenet_keras")
class LeNet5(keras.Sequential):
    """LeNet-5 with tanh activations and average pooling, as a `keras.Sequential`.

    Layers (deck variant, MNIST shapes): Conv2D 6@5x5 tanh 'same' -> (28, 28, 6);
    AveragePooling 2x2/2 -> (14, 14, 6); Conv2D 16@5x5 tanh 'valid' -> (10, 10, 16);
    AveragePooling 2x2/2 -> (5, 5, 16); Conv2D 120@5x5 tanh -> (1, 1, 120); Flatten -> 120;
    Dense 84 tanh; Dense `num_classes` softmax. The deck's conv3 has strides 3, which on a
    5x5 input gives the same single output position as the paper's stride 1 used here.

    The classic variant zero-pads inputs smaller than 32x32 up to 32x32 (MNIST: 2 pixels per
    side) and uses 'valid' padding in conv1, giving the same feature-map sizes from conv1 on.
    The relu variant is the deck's shapes with ReLU activations and 2x2 max-pooling (the usual
    modern LeNet-5; same 61,706 parameters), for `experiments/mnist_lenet5_fast.toml`.
    The wide variant moves LeNet-5's parameters from the fully connected layers into the
    convolutions (ReLU, max-pooling): Conv2D 16@5x5 'same' -> (28, 28, 16); MaxPooling -> (14,
    14, 16); Conv2D 32@5x5 -> (10, 10, 32); MaxPooling -> (5, 5, 32); Conv2D 64@5x5 -> (1, 1,
    64); Flatten -> 64; Dense `num_classes` softmax: 65,162 parameters (LeNet-5's C5 with 64
    maps, no F6), for `experiments/mnist_lenet5_wide.toml`. The wide_bn variant has the wide
    variant's shapes with each convolution bias-free and followed by batch normalization (Ioffe &
    Szegedy 2015) before its ReLU: `fast_layers.ScalelessBatchNorm` (fused kernel, trained offset,
    no scale, momentum 0.9, epsilon 1e-5), 65,386 parameters (65,162 trained: the weights and the
    batch-normalization offsets; 224 moving statistics), for
    `experiments/mnist_lenet5_wide_bn.toml`.

    Args:
        input_shape: (height, width, channels) of one image; default MNIST's (28, 28, 1).
        num_classes: number of output classes; default 10.
        variant: "deck" (seed 002), "classic" (seed 000), "relu" (ReLU + max-pooling),
            "wide" (16/32/64 convolution maps, no F6) or "wide_bn" (wide, batch-normalized).
        name: the Keras model name.

    Input: float32 images (batch, height, width, channels) scaled to [0, 1].
    Output: float32 class probabilities (batch, num_classes) (softmax, rows sum to 1).

    Raises:
        ValueError: unknown `variant`, or a deck-variant input smaller than 28x28 (too small
            for the three 5x5 convolutions; the classic variant pads up to 32x32).
    """

    VARIANTS = ("deck", "classic", "relu", "wide", "wide_bn")
    WIDTHS = {"wide": (16, 32, 64, 0), "wide_bn": (16, 32, 64, 0)}
    """The maps of C1, C3, C5 and the units of F6 (0: no F6) where a variant changes LeNet-5's (6, 16, 120, 84)."""
    PARAMETERS = {"wide": 65_162, "wide_bn": 65_386}
    """Parameters on 28x28x1 inputs with 10 classes where a variant changes LeNet-5's `LENET5_PARAMETERS`."""

    def __init__(self, input_shape=(28, 28, 1), num_classes=10, variant="deck", name=None, **kwargs):
        if variant not in self.VARIANTS:
            raise ValueError(f"LeNet5 variant must be one of {self.VARIANTS}, got {variant!r}")
        input_shape = tuple(int(d) for d in input_shape)
        height, width = input_shape[:2]
        if variant != "classic" and min(height, width) < 28:
            raise ValueError(f"LeNet5 ({variant} variant) needs inputs of at least 28x28, got input_shape={input_shape}")
        super().__init__(name=name or ("lenet5" if variant == "deck" else f"lenet5_{variant}"), **kwargs)
        self.input_shape_ = input_shape
        self.num_classes = int(num_classes)
        self.variant = variant
        self.add(keras.Input(shape=input_shape))
        if variant == "classic":
            pad_h, pad_w = max(0, 32 - height), max(0, 32 - width)
            if pad_h or pad_w:
                self.add(layers.ZeroPadding2D(((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))))
        modern = variant in ("relu", "wide", "wide_bn")  # ReLU and max-pooling instead of tanh and average pooling
        activation = "relu" if modern else "tanh"
        pooling = layers.MaxPooling2D if modern else layers.AveragePooling2D
        c1, c3, c5, f6 = self.WIDTHS.get(variant, (6, 16, 120, 84))
        self._add_convolution(c1, activation, "valid" if variant == "classic" else "same")
        self.add(pooling(pool_size=2, strides=2))
        self._add_convolution(c3, activation, "valid")
        self.add(pooling(pool_size=2, strides=2))
        self._add_convolution(c5, activation, "valid")
        self.add(layers.Flatten())
        if f6:
            self.add(layers.Dense(f6, activation=activation))
        self.add(layers.Dense(self.num_classes, activation="softmax", dtype="float32"))  # float32 under mixed precision
        if input_shape in ((28, 28, 1), (32, 32, 1)) and self.num_classes == 10:
            assert self.count_params() == self.PARAMETERS.get(variant, LENET5_PARAMETERS), self.count_params()

    def _add_convolution(self, filters, activation, padding):
        """Add a 5x5 convolution with `activation`; in the wide_bn variant the convolution is
        bias-free and followed by `fast_layers.ScalelessBatchNorm` (batch normalization, Ioffe &
        Szegedy 2015, whose offset replaces the bias) before the activation."""
        if self.variant != "wide_bn":
            self.add(layers.Conv2D(filters, 5, activation=activation, padding=padding))
            return
        from lenet_keras import fast_layers

        self.add(layers.Conv2D(filters, 5, padding=padding, use_bias=False))
        self.add(fast_layers.ScalelessBatchNorm(momentum=0.9, epsilon=1e-5))
        self.add(layers.Activation(activation))

    def get_config(self):
        """Constructor arguments, so `.keras` files load back into a `LeNet5`."""
        return {
            "input_shape": self.input_shape_,
            "num_classes": self.num_classes,
            "variant": self.variant,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuild from `get_config()` output."""
        return cls(**config)


CIFAR_CNN_TRAINABLE_PARAMETERS = 4_079_429
"""Trainable parameters of `CifarCNN` on 32x32x3 inputs with 10 classes (the notebook's count)."""


@keras.saving.register_keras_serializable(package="lenet_keras")
class CifarCNN(keras.Sequential):
    """The CIFAR-10 notebook's CNN (seed 004: 94.48% test accuracy after 150 epochs in PyTorch).

    Six Conv2D(no bias, 'same') -> BatchNormalization -> ReLU blocks, with SpatialDropout2D
    (PyTorch's Dropout2d) and 2x2 average pooling where the notebook has them:

    ====  ===========  ======  ===================  ==================
    block  filters      kernel  dropout (channels)   then
    ====  ===========  ======  ===================  ==================
    1      3 -> 64      5x5     -                    -
    2      64 -> 119    5x5     0.04                 AveragePooling 2
    3      119 -> 221   3x3     0.05                 -
    4      221 -> 256   5x5     0.02                 AveragePooling 2
    5      256 -> 256   3x3     0.09                 -
    6      256 -> 256   5x5     0.08                 -
    ====  ===========  ======  ===================  ==================

    then GlobalAveragePooling2D, Dropout 0.38 and Dense `num_classes` with softmax (the
    notebook's Linear layer gives logits to a cross-entropy loss; the softmax here keeps every
    model of this package returning probabilities). BatchNormalization uses PyTorch's
    defaults: epsilon 1e-5 and momentum 0.1 in PyTorch's convention, i.e. Keras momentum 0.9.

    Args:
        input_shape: (height, width, channels); default CIFAR-10's (32, 32, 3).
        num_classes: default 10.

    Input: float32 normalized images (batch, 32, 32, 3). Output: float32 probabilities
    (batch, num_classes).
    """

    BLOCKS = ((64, 5, 0.0, False), (119, 5, 0.04, True), (221, 3, 0.05, False),
              (256, 5, 0.02, True), (256, 3, 0.09, False), (256, 5, 0.08, False))
    """(filters, kernel size, SpatialDropout2D rate, average pooling after) per block."""

    def __init__(self, input_shape=(32, 32, 3), num_classes=10, name="cifar_cnn", **kwargs):
        super().__init__(name=name, **kwargs)
        self.input_shape_ = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.add(keras.Input(shape=self.input_shape_))
        for filters, kernel, dropout, pool in self.BLOCKS:
            self.add(layers.Conv2D(filters, kernel, padding="same", use_bias=False))
            self.add(layers.BatchNormalization(epsilon=1e-5, momentum=0.9))
            self.add(layers.ReLU())
            if dropout:
                self.add(layers.SpatialDropout2D(dropout))
            if pool:
                self.add(layers.AveragePooling2D(pool_size=2))
        self.add(layers.GlobalAveragePooling2D())
        self.add(layers.Dropout(0.38))
        self.add(layers.Dense(self.num_classes, activation="softmax", dtype="float32"))  # float32 under mixed precision
        if self.input_shape_[-1] == 3 and self.num_classes == 10:
            trainable = sum(int(np.prod(w.shape)) for w in self.trainable_weights)
            assert trainable == CIFAR_CNN_TRAINABLE_PARAMETERS, trainable

    def get_config(self):
        """Constructor arguments, so `.keras` files load back into a `CifarCNN`."""
        return {"input_shape": self.input_shape_, "num_classes": self.num_classes, "name": self.name,
                "trainable": self.trainable}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuild from `get_config()` output."""
        return cls(**config)


@keras.saving.register_keras_serializable(package="lenet_keras")
class CifarFast(keras.Sequential):
    """airbench94's network in Keras (Jordan 2024, PyPI airbench==0.1.8; `lenet_keras.airbench`).

    ====================================  ==============================================
    layer                                 output (32x32x3 input)
    ====================================  ==============================================
    Conv2D 2x2 'valid', 24 filters, bias  31x31x24: patch whitening, kernel frozen and
                                          set from the data (`initialize_from_data`)
    GELU
    3 x ConvGroup(64, 256, 256):          Conv2D 3x3 'same' no bias (dirac init),
                                          MaxPooling 2, BatchNorm, GELU, Conv2D 3x3,
                                          BatchNorm, GELU -> 15x15x64, 7x7x256, 3x3x256
    MaxPooling 3, Flatten                 256
    Dense 10, no bias, times 1/9          logits
    Softmax (float32)                     probabilities
    ====================================  ==============================================

    BatchNorm has no scale (airbench freezes it at 1), a trained bias, epsilon 1e-12, Keras
    momentum 0.6 (PyTorch momentum 0.4) and PyTorch's unbiased moving variance; it and the exact
    GELU run as fused kernels (`fast_layers`). The softmax is its own `Activation` layer,
    so test-time augmentation can average the logits (`airbench.tta_probabilities`).

    It is an `InitializedFromData` model: the whitening kernel comes from the 2x2 patches of
    `initialization_images` (5,000) normalized training images, as airbench94's.

    Args:
        input_shape: (height, width, channels); default (32, 32, 3).
        num_classes: default 10.
        widths: filters of the three conv groups (airbench: 64, 256, 256).
        activation: "gelu" (airbench94), or "silu" in the conv groups (x * sigmoid(x), the
            hiverge cifar10-speedrun record's choice, 2025; the GELU after whitening stays).

    Raises:
        ValueError: `activation` is neither "gelu" nor "silu".

    Input: float32 normalized images (batch, H, W, C). Output: float32 probabilities (batch, classes).
    """

    WHITEN_SIZE = 2
    initialization_images: int = 5000
    """Training images the whitening kernel is computed from (airbench94: 5,000)."""
    LOGIT_SCALE = 1 / 9
    """airbench's `scaling_factor` on the logits."""

    ACTIVATIONS = ("gelu", "silu")

    def __init__(self, input_shape=(32, 32, 3), num_classes=10, widths=(64, 256, 256), name="cifar_fast",
                 activation="gelu", **kwargs):
        from lenet_keras import airbench, fast_layers

        if activation not in self.ACTIVATIONS:
            raise ValueError(f"CifarFast activation {activation!r}: expected one of {', '.join(self.ACTIVATIONS)}")
        super().__init__(name=name, **kwargs)
        self.activation = activation
        group_activation = fast_layers.xla_gelu if activation == "gelu" else "silu"
        self.input_shape_ = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.widths = tuple(int(w) for w in widths)
        channels = self.input_shape_[-1]
        whiten_width = 2 * channels * self.WHITEN_SIZE ** 2
        self.add(keras.Input(shape=self.input_shape_))
        self.add(layers.Conv2D(whiten_width, self.WHITEN_SIZE, padding="valid", use_bias=True, name="whiten"))
        self.add(layers.Activation(fast_layers.xla_gelu))
        for group, width in enumerate(self.widths, start=1):
            for index in (1, 2):
                self.add(layers.Conv2D(width, 3, padding="same", use_bias=False,
                                       kernel_initializer=airbench.dirac_initializer(), name=f"group{group}_conv{index}"))
                if index == 1:
                    self.add(layers.MaxPooling2D(2))
                self.add(fast_layers.ScalelessBatchNorm(momentum=0.6, epsilon=1e-12, name=f"group{group}_norm{index}"))
                self.add(layers.Activation(group_activation))
        self.add(layers.MaxPooling2D(3))
        self.add(layers.Flatten())
        self.add(layers.Dense(self.num_classes, use_bias=False, name="head",
                              kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")))
        self.add(layers.Rescaling(self.LOGIT_SCALE, dtype="float32"))
        self.add(layers.Activation("softmax", dtype="float32"))
        self.get_layer("whiten").kernel.trainable = False

    def initialize_from_data(self, images: np.ndarray) -> None:
        """Set the frozen whitening kernel from normalized float32 images (N, H, W, C) (airbench: the
        first `initialization_images`, 5,000, of the training set)."""
        from lenet_keras import airbench

        layer = self.get_layer("whiten")
        layer.kernel.assign(airbench.whitening_kernel(images, self.WHITEN_SIZE).astype(layer.kernel.dtype))

    def get_config(self):
        """Constructor arguments, so `.keras` files load back into a `CifarFast`."""
        return {"input_shape": self.input_shape_, "num_classes": self.num_classes, "widths": self.widths,
                "name": self.name, "activation": self.activation, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuild from `get_config()` output."""
        return cls(**config)


def _lenet5_1998(input_shape, num_classes, rubbish_penalty=0.0):
    from lenet_keras.lenet1998 import LeNet5_1998

    return LeNet5_1998(input_shape, num_classes, rubbish_penalty=rubbish_penalty)


MODELS: dict[str, Callable[..., keras.Model]] = {
    "lenet5": lambda input_shape, num_classes: LeNet5(input_shape, num_classes, variant="deck"),
    "lenet5_classic": lambda input_shape, num_classes: LeNet5(input_shape, num_classes, variant="classic"),
    "lenet5_relu": lambda input_shape, num_classes: LeNet5(input_shape, num_classes, variant="relu"),
    "lenet5_wide": lambda input_shape, num_classes: LeNet5(input_shape, num_classes, variant="wide"),
    "lenet5_wide_bn": lambda input_shape, num_classes: LeNet5(input_shape, num_classes, variant="wide_bn"),
    "cifar_cnn": lambda input_shape, num_classes: CifarCNN(input_shape, num_classes),
    "cifar_fast": lambda input_shape, num_classes: CifarFast(input_shape, num_classes),
    "cifar_fast_silu": lambda input_shape, num_classes: CifarFast(input_shape, num_classes, activation="silu"),
    "lenet5_1998": _lenet5_1998,
}
"""Registry: `model.name` -> constructor taking (input_shape, num_classes) and the options of
`MODEL_OPTIONS`."""

MODEL_OPTIONS: dict[str, tuple[str, ...]] = {"lenet5_1998": ("rubbish_penalty",)}
"""Registry: `model.name` -> the `[model]` keys besides `name` its constructor takes (absent: none);
any other model refuses a non-default value of those keys."""


def check_name(config: ModelConfig) -> None:
    """Raise `ConfigError` if `config.name` names no registered model, or sets an option
    (`MODEL_OPTIONS`) that model does not take."""
    if config.name not in MODELS:
        raise ConfigError(f"model.name: unknown model {config.name!r}; known: {', '.join(MODELS)}")
    default = ModelConfig()
    for key in ("rubbish_penalty",):
        if getattr(config, key) != getattr(default, key) and key not in MODEL_OPTIONS.get(config.name, ()):
            raise ConfigError(f"model.{key}: model {config.name!r} does not take it (only "
                              f"{', '.join(n for n, keys in MODEL_OPTIONS.items() if key in keys)})")


def build(config: ModelConfig, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Build the (uncompiled) model `config.name` for images of `input_shape` and `num_classes`.

    Raises:
        ConfigError: unknown model name.
    """
    check_name(config)
    options = {key: getattr(config, key) for key in MODEL_OPTIONS.get(config.name, ())}
    return MODELS[config.name](input_shape, num_classes, **options)
