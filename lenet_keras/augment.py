"""Training-time augmentation in `tf.data`, seeded: the same seed gives the same augmented batches.

Each random decision uses TensorFlow's stateless random ops, keyed by numbers drawn from
`tf.data.Dataset.random(seed, rerandomize_each_iteration=True)` zipped with the data: a
deterministic stream that differs from epoch to epoch, independent of thread scheduling.

- `horizontal_flip`: flip left-right with probability 0.5 (torchvision `RandomHorizontalFlip`).
- `crop_padding = p`: zero-pad p pixels per side, then a random crop back to the input size
  (torchvision `RandomCrop(32, padding=4)` in the CIFAR notebook, seed 004).
- `mixup_alpha = a`: MixUp (Zhang et al. 2018) as the notebook's `mixup_data`: one
  lambda ~ Beta(a, a) per batch, images and one-hot targets mixed with a permutation of the
  batch (mixing the targets equals the notebook's mixed loss, cross-entropy being linear in them).
"""

from __future__ import annotations

from lenet_keras.config import AugmentConfig


def _seed_pairs(seed: int):
    import tensorflow as tf

    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def augment_images(dataset, config: AugmentConfig, seed: int):
    """Per-image flip and pad-and-crop of a dataset of (uint8 image (H, W, C), label).

    Returns the dataset unchanged when neither is switched on; images stay uint8 (H, W, C).
    """
    import tensorflow as tf

    if not (config.horizontal_flip or config.crop_padding):
        return dataset
    pad = config.crop_padding

    def _apply(element, seeds):
        image, label = element
        if config.horizontal_flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seeds)
        if pad:
            shape = tf.shape(image)
            padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
            image = tf.image.stateless_random_crop(padded, shape, seed=seeds[::-1])
        return image, label

    return tf.data.Dataset.zip((dataset, _seed_pairs(seed))).map(
        _apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


def mixup(dataset, alpha: float, seed: int):
    """MixUp on a dataset of (float32 images (B, H, W, C), one-hot float32 labels (B, classes)).

    Returns the dataset unchanged when `alpha` is 0.
    """
    import tensorflow as tf

    if not alpha:
        return dataset

    def _apply(batch, seeds):
        images, labels = batch
        seeds = tf.reshape(seeds, [2])
        draw = tf.random.stateless_gamma([2], seed=seeds, alpha=alpha)
        lam = draw[0] / (draw[0] + draw[1])  # Beta(alpha, alpha) from two Gamma(alpha) draws
        order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(images)[0]), seed=seeds[::-1])
        mixed_images = lam * images + (1.0 - lam) * tf.gather(images, order)
        mixed_labels = lam * labels + (1.0 - lam) * tf.gather(labels, order)
        return mixed_images, mixed_labels

    return tf.data.Dataset.zip((dataset, _seed_pairs(seed + 1))).map(
        _apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


def preview(image, config: AugmentConfig, seed: int, draws: int = 8):
    """`draws` augmented versions of one uint8 image (H, W, C) -> uint8 (draws, H, W, C).

    Only the per-image augmentations (flip, crop) are shown; MixUp mixes whole batches.
    """
    import numpy as np
    import tensorflow as tf

    repeated = tf.data.Dataset.from_tensors((image, 0)).repeat(draws)
    return np.stack([np.asarray(x) for x, _ in augment_images(repeated, config, seed)])
