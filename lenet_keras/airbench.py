"""The airbench94 ingredients Keras does not have, each small and tested on its own.

Source: Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU" (2024), code
`airbench94.py` of PyPI `airbench==0.1.8` (run on the CPU, next to ours, by the repository's
development tool `benchmarks/airbench_compare.py`).
The model that uses them is `lenet_keras.models.CifarFast`; the optimizer and schedule are
`lenet_keras.optim.AirbenchSGD` and the "triangular" schedule; everything else (GELU, BatchNorm
without scale, label smoothing, flips and translations) is Keras or `lenet_keras.augment`.

- `whitening_kernel`: the first conv's 2x2 filters from the eigenvectors of the training
  images' 2x2-patch covariance (ZCA-like patch whitening), +/- each, 24 filters for RGB.
- `DiracInit`: identity ("dirac") initialisation of a 3x3 conv's first `in` filters, the rest
  PyTorch's default uniform init.

Its two callbacks live with the others in `lenet_keras.callbacks`: `FreezeWhitenBias` (stops
computing the whitening bias's gradient after `whiten_bias_epochs`, as airbench's
`requires_grad = False`; supplied by `optim.callbacks_for` for `airbench_sgd`) and `Lookahead`
(every 5 optimizer steps the weights move to an exponential moving average with decay
0.95**5 * (step / total)**3; the run ends on the average; `train.lookahead`).
- `tta_probabilities`: test-time augmentation: the logits averaged over mirrored and 1-pixel
  translated views (airbench's `tta_level` 1 and 2), as probabilities.
- `uncertain_tta_probabilities`: the same views for only the least confident images of a plain
  pass (hiverge cifar10-speedrun, 2025), the others keep their plain logits.
"""

from __future__ import annotations

import numpy as np

TTA_LEVELS = {"none": 0, "mirror": 1, "mirror_translate": 2}
"""`train.test_time_augmentation` -> airbench's `tta_level`."""


def patches(images: np.ndarray, size: int = 2) -> np.ndarray:
    """All `size` x `size` patches of float images (N, H, W, C) -> (N * (H-size+1) * (W-size+1), size, size, C)."""
    from numpy.lib.stride_tricks import sliding_window_view

    windows = sliding_window_view(images, (size, size), axis=(1, 2))  # (N, H', W', C, size, size)
    return np.ascontiguousarray(windows.transpose(0, 1, 2, 4, 5, 3)).reshape(-1, size, size, images.shape[-1])


def whitening_kernel(images: np.ndarray, size: int = 2, eps: float = 5e-4) -> np.ndarray:
    """The patch-whitening conv kernel (size, size, C, 2*size*size*C) float32, from normalized images.

    As airbench's `init_whitening_conv`: the second-moment matrix S = P^T P / n of the flattened
    patches P (not mean-centred), its eigenvectors v_k scaled by 1/sqrt(lambda_k + eps), in
    decreasing order of eigenvalue, then the same filters negated (so that GELU keeps both
    signs). A patch x filtered by the k-th kernel gives v_k . x / sqrt(lambda_k + eps).

    Args:
        images: float (N, H, W, C), normalized as the network sees them (airbench: the first
            5,000 training images).
    """
    flat = patches(np.asarray(images, np.float64), size).reshape(-1, size * size * images.shape[-1])
    covariance = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(eigenvalues)[::-1]
    scaled = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)  # (size*size*C, K), columns = filters
    kernel = scaled.reshape(size, size, images.shape[-1], -1)
    return np.concatenate([kernel, -kernel], axis=-1).astype(np.float32)


def dirac_initializer():
    """A Keras initializer: PyTorch's default conv init, with the first `in` filters set to identity.

    For a kernel (kh, kw, in, out), filters 0..min(in, out)-1 are zero except 1 at the centre tap
    of their own input channel (torch.nn.init.dirac_ on w[:in] in airbench's `Conv`); the other
    filters are uniform in +/- 1/sqrt(fan_in) (PyTorch's kaiming_uniform_(a=sqrt(5))).
    """
    import keras

    @keras.saving.register_keras_serializable(package="lenet_keras")
    class DiracInit(keras.initializers.Initializer):
        """Identity on the first `in` filters, PyTorch's default uniform init on the rest."""

        def __init__(self, seed=None):
            self.seed = seed
            self.base = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform", seed=seed)

        def __call__(self, shape, dtype=None):
            kh, kw, channels_in, channels_out = shape
            values = keras.ops.convert_to_numpy(self.base(shape, dtype="float32"))
            keep = min(channels_in, channels_out)
            values[..., :keep] = 0.0
            values[kh // 2, kw // 2, np.arange(keep), np.arange(keep)] = 1.0
            return keras.ops.convert_to_tensor(values, dtype=dtype or "float32")

        def get_config(self):
            """Constructor arguments, for saving."""
            return {"seed": self.seed}

    return DiracInit()


def tta_views(images, level: int):
    """The views of a float batch (B, H, W, C) that test-time augmentation averages, with weights.

    Level 0: the images (weight 1). Level 1: images and their mirror (1/2 each). Level 2 (airbench
    `infer_mirror_translate`): half on level 1, half on level 1 of two translated copies (reflect
    padding of 1 pixel, crops at offsets (0, 0) and (2, 2)), so 6 views: 1/4, 1/4, 1/8 x 4.
    Returns a list of (view, weight).
    """
    import tensorflow as tf

    mirrored = [(images, 0.5), (tf.reverse(images, axis=[2]), 0.5)]
    if level == 0:
        return [(images, 1.0)]
    if level == 1:
        return mirrored
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    shifted = [padded[:, 0:height, 0:width], padded[:, 2:height + 2, 2:width + 2]]
    views = [(view, weight * 0.5) for view, weight in mirrored]
    for crop in shifted:
        views += [(crop, 0.125), (tf.reverse(crop, axis=[2]), 0.125)]
    return views


def _view_logits(model, level: int):
    """A function: float batch (B, H, W, C) -> float32 logits (B, classes) averaged over
    `tta_views(batch, level)` with their weights, through `model` less its final softmax layer."""
    import keras
    import tensorflow as tf

    logits_model = keras.Sequential(model.layers[:-1])

    @tf.function(reduce_retracing=True)
    def batch_logits(images):
        """Weighted sum of float32 logits (B, classes) over the TTA views of images (B, H, W, C)."""
        return tf.add_n([weight * tf.cast(logits_model(view, training=False), tf.float32)
                         for view, weight in tta_views(images, level)])

    return batch_logits


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float logits (N, classes) as float32 probabilities (N, classes)."""
    import keras

    return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1)).astype(np.float32)


def tta_probabilities(model, dataset, level: int) -> np.ndarray:
    """Class probabilities float32 (N, classes) of `dataset`'s images with test-time augmentation.

    The logits (the model's input to its final softmax) are averaged over `tta_views`, then
    softmaxed, as airbench averages logits. `dataset` yields (images, labels) batches; the model
    must end in a softmax `Activation` layer.
    """
    batch_logits = _view_logits(model, level)
    return _softmax(np.concatenate([batch_logits(images).numpy() for images, _ in dataset]))


UNCERTAIN_FRACTION = 0.2
"""The share of images that `uncertain_tta_probabilities` augments: hiverge cifar10-speedrun's
`UNCERTAIN_QUANTILE` (2025; its record run, 94.01% on CIFAR-10 in about 2.1 s on an A100)."""


def uncertain_tta_probabilities(model, dataset, level: int, fraction: float = UNCERTAIN_FRACTION) -> np.ndarray:
    """Class probabilities float32 (N, classes): test-time augmentation on the unsure images only.

    One plain pass gives every image's logits; the `int(N * fraction)` images with the lowest
    top-1 softmax probability (ties: the earlier image first) get the logits averaged over
    `tta_views(images, level)` instead, as `tta_probabilities` computes them; the others keep
    their plain logits. Source: hiverge cifar10-speedrun (2025), which averages airbench's six
    views for its 20% least confident test images. The cost is 1 + 6 * fraction passes instead
    of 6 at level 2. `dataset` yields (images, labels) batches, held in memory here.

    Raises:
        ValueError: `fraction` outside [0, 1].
    """
    import tensorflow as tf

    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction of images to augment must be in [0, 1], got {fraction}")
    plain, augmented = _view_logits(model, 0), _view_logits(model, level)
    batches, logits = [], []
    for images, _ in dataset:
        batches.append(images.numpy())
        logits.append(plain(images).numpy())
    images, logits = np.concatenate(batches), np.concatenate(logits)
    confidence = _softmax(logits).max(axis=1)
    unsure = np.sort(np.argsort(confidence, kind="stable")[:int(len(logits) * fraction)])
    batch_size = len(batches[0])
    for start in range(0, len(unsure), batch_size):
        chosen = unsure[start:start + batch_size]
        logits[chosen] = augmented(tf.constant(images[chosen])).numpy()
    return _softmax(logits)


TEST_TIME_AUGMENTATIONS = {
    "mirror": lambda model, dataset: tta_probabilities(model, dataset, TTA_LEVELS["mirror"]),
    "mirror_translate": lambda model, dataset: tta_probabilities(model, dataset, TTA_LEVELS["mirror_translate"]),
    "mirror_translate_uncertain": lambda model, dataset: uncertain_tta_probabilities(
        model, dataset, TTA_LEVELS["mirror_translate"]),
}
"""The named evaluations of `train.test_time_augmentation` (other than "none"): name ->
function(model, test dataset of (images, labels) batches) -> probabilities float32 (N, classes)."""
