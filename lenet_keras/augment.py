"""Training-time augmentation in `tf.data`, seeded: the same seed gives the same augmented batches.

Each random decision uses TensorFlow's stateless random ops, keyed by numbers drawn from
`tf.data.Dataset.random(seed, rerandomize_each_iteration=True)` zipped with the data: a
deterministic stream that differs from epoch to epoch, independent of thread scheduling.

- `horizontal_flip`: flip left-right with probability 0.5 (torchvision `RandomHorizontalFlip`).
- `crop_padding = p`: zero-pad p pixels per side, then a random crop back to the input size
  (torchvision `RandomCrop(32, padding=4)` in the CIFAR notebook, seed 004).
- `autoaugment = "cifar10"`: AutoAugment's CIFAR-10 policy on each image of a batch, after
  flip and crop (torchvision `AutoAugment(AutoAugmentPolicy.CIFAR10)` in the notebook; built
  from Keras's augmentation layers in `lenet_keras.autoaugment`).
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


def autoaugment(dataset, policy: str, seed: int):
    """AutoAugment on a dataset of (uint8 images (B, H, W, 3), labels); "none" returns it unchanged.

    Each batch gets its own stateless key from `seed` (a stream separate from flip/crop and MixUp).

    Raises:
        ConfigError: the images do not have 3 channels (the policy's colour operations need RGB).
    """
    import tensorflow as tf

    from lenet_keras.autoaugment import AutoAugment
    from lenet_keras.errors import ConfigError

    if policy == "none":
        return dataset
    shape = dataset.element_spec[0].shape
    if shape[-1] != 3:
        raise ConfigError(f"augment.autoaugment = {policy!r} needs RGB images (3 channels), got image shape {shape[1:]}")
    augmenter = AutoAugment(policy, (shape[1], shape[2]))

    def _apply(batch, seeds):
        images, labels = batch
        return augmenter(images, tf.reshape(seeds, [2])), labels

    return tf.data.Dataset.zip((dataset, _seed_pairs(seed + 2))).map(
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

    The per-image augmentations (flip, crop, AutoAugment) are shown; MixUp mixes whole batches.
    """
    import numpy as np
    import tensorflow as tf

    repeated = tf.data.Dataset.from_tensors((image, 0)).repeat(draws)
    augmented = autoaugment(augment_images(repeated, config, seed).batch(draws), config.autoaugment, seed)
    return np.concatenate([np.asarray(x) for x, _ in augmented])
