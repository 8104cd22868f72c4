"""Input pipelines: an `ImageData` -> seeded `tf.data` pipelines of scaled, augmented batches.

This module owns what happens to the arrays after loading: the training pipeline (a stateless
shuffle per epoch, then per batch the augmentations of `lenet_keras.augment`, scaling and
one-hot labels), the validation and test pipelines (`pipelines`), the number of training batches
per epoch (`steps_per_epoch`), and the same scaling in NumPy (`normalize`, for what is computed
from the training images outside a pipeline, e.g. airbench's whitening initialisation).

The arrays come from `lenet_keras.data` (`load` -> `ImageData`: look-up, download, splits); the
file formats and checksums behind them are `lenet_keras.dataformats`. TensorFlow is imported
inside the functions that build pipelines, so importing this module is cheap.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from lenet_keras import augment as augment_lib
from lenet_keras.config import AugmentConfig
from lenet_keras.data import ImageData
from lenet_keras.errors import ConfigError


def steps_per_epoch(data: ImageData, batch_size: int) -> int:
    """Training batches per epoch: ceil(training images / `batch_size`) (the last may be smaller)."""
    return -(-len(data.train_images) // batch_size)


def normalize(images: np.ndarray, mean: Sequence[float] = (), std: Sequence[float] = ()) -> np.ndarray:
    """Scale uint8 images (N, H, W, C) as the pipelines do, in NumPy: float32 (N, H, W, C).

    `images.astype(np.float32) / 255.0`, in [0, 1]; then, when `mean` is not empty,
    `(x - np.float32(mean)) / np.float32(std)` per channel (`mean` and `std`: one value per
    channel, or one for all). The float32 operations are those of the pipelines' scaling, in the
    same order.

    Raises:
        ValueError: `mean` or `std` does not broadcast against the channel axis (NumPy's error).
    """
    scaled = images.astype(np.float32) / 255.0
    if len(mean):
        scaled = (scaled - np.float32(mean)) / np.float32(std)
    return scaled


def _check(data: ImageData, mean, std, augment: AugmentConfig, first_epoch: int, epochs: int) -> None:
    """Raise `ConfigError` for the arguments of `pipelines` that cannot work (see there)."""
    channels = data.image_shape[-1]
    if (mean or std) and not len(mean) == len(std) == channels:
        raise ConfigError(
            f"data.mean and data.std need one value per channel ({channels}), got {len(mean)} and {len(std)}"
        )
    if not 0 <= first_epoch <= epochs:
        raise ConfigError(f"first epoch {first_epoch} is not in 0..{epochs} (train.epochs)")
    augment_lib.check_channels(augment.autoaugment, channels)


def _scaler(num_classes: int, mean, std) -> Callable:
    """The map (uint8 images, int labels) -> (float32 images in [0, 1] or (x - mean) / std,
    one-hot float32 labels (B, `num_classes`)) of every pipeline."""
    import tensorflow as tf

    def scale(images, labels):
        """uint8 images (B, H, W, C), int labels (B,) -> float32 images, one-hot float32 labels."""
        images = tf.cast(images, tf.float32) / 255.0
        if mean:
            images = (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
        return images, tf.one_hot(labels, num_classes, dtype=tf.float32)

    return scale


def _batch_maker(data: ImageData, seed: int, augment: AugmentConfig, scale: Callable) -> Callable:
    """The map (epoch, batch number, indices into the training set) -> one scaled training batch.

    Gathers the images and labels at the indices, then flip and crop, distorted copies, rotation and zoom, AutoAugment, scaling and
    MixUp, each keyed by (seed, epoch, batch number) (`lenet_keras.augment`).
    """
    import tensorflow as tf

    train_images, train_labels = tf.constant(data.train_images), tf.constant(data.train_labels)
    count = len(data.train_images)
    crop_or_flip = bool(augment.horizontal_flip or augment.crop_padding)
    table = augment_lib.distortion_table(seed, count, augment.distorted_copies) if augment.distort else None
    autoaugmenter = None
    if augment.autoaugment != "none":
        from lenet_keras.autoaugment import AutoAugment

        autoaugmenter = AutoAugment(augment.autoaugment, data.image_shape[:2])

    def make(epoch, number, index):
        """Epoch and batch number (int scalars), indices (B,) int -> (float32 images, float32 labels)."""
        images, labels = tf.gather(train_images, index), tf.gather(train_labels, index)
        if crop_or_flip:
            flips = (augment_lib.alternating_flips(seed, count, index, epoch)
                     if augment.horizontal_flip and augment.alternating_flip else None)
            images = augment_lib.crop_flip(images, augment, augment_lib.key(seed, augment_lib.CROP_FLIP, epoch, number),
                                           flips)
        if augment.distort:
            images = augment_lib.distort(images, index, table, augment,
                                         augment_lib.key(seed, augment_lib.DISTORTED_COPY, epoch, number))
        if augment.rotate_or_zoom:
            images = augment_lib.rotate_zoom(images, augment, augment_lib.key(seed, augment_lib.AFFINE, epoch, number))
        if autoaugmenter is not None:
            images = autoaugmenter(images, augment_lib.key(seed, augment_lib.AUTOAUGMENT, epoch, number))
        images, labels = scale(images, labels)
        if augment.mixup_alpha:
            images, labels = augment_lib.mixup_batch(
                images, labels, augment.mixup_alpha, augment_lib.key(seed, augment_lib.MIXUP, epoch, number)
            )
        return images, labels

    return make


def _training(data: ImageData, batch_size: int, seed: int, make_batch: Callable, first_epoch: int, epochs: int,
              reshuffle: bool = True):
    """The training `tf.data.Dataset`: epochs `first_epoch` .. `epochs - 1`, each a stateless
    shuffle keyed by (seed, epoch) (by (seed, 0) for every epoch when not `reshuffle`) cut into
    batches of `batch_size`, mapped by `make_batch`."""
    import tensorflow as tf

    count = len(data.train_images)

    def _epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=augment_lib.key(seed, augment_lib.SHUFFLE, epoch if reshuffle else 0)
        )

        def _batch(number, index):
            return make_batch(epoch, number, index)

        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        return batches.enumerate().map(_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return tf.data.Dataset.range(first_epoch, epochs).flat_map(_epoch).prefetch(tf.data.AUTOTUNE)


def _evaluation(images: np.ndarray, labels: np.ndarray, batch_size: int, scale: Callable):
    """A validation or test `tf.data.Dataset`: batched -> scaled -> cached -> prefetched, in order."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(batch_size)
        .map(scale, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .cache()
        .prefetch(tf.data.AUTOTUNE)
    )


def pipelines(data: ImageData, batch_size: int, seed: int, mean=(), std=(), augment: AugmentConfig | None = None,
              first_epoch: int = 0, epochs: int = 1, reshuffle: bool = True):
    """The `tf.data` input pipelines for training, validation and test.

    Training yields the batches of epochs `first_epoch` .. `epochs - 1` one after another,
    `steps_per_epoch(data, batch_size)` batches each (pass that to `fit` with
    `initial_epoch=first_epoch`). Each epoch is a pure function of (`seed`, epoch): the order is
    a stateless shuffle of the training set keyed by them (by (`seed`, 0) in every epoch when not
    `reshuffle`), then per batch: gather the images,
    flip and crop, rotation and zoom (each image its own draw), AutoAugment, scaling and MixUp, each keyed by
    (seed, epoch, batch number) (`lenet_keras.augment`).
    So a run resumed at epoch k sees exactly the batches of an uninterrupted run.
    Validation and test: batched -> scaled -> cached -> prefetched, in file order.
    Each element is (images float32 (B, H, W, C), one-hot labels float32 (B, classes)); images
    are in [0, 1], or (x - mean) / std per channel when `mean` and `std` are given (as
    `normalize`); the last batch of each epoch may be smaller than `batch_size`.

    Raises:
        ConfigError: `mean`/`std` lengths differ from each other or from the channel count;
            AutoAugment on images that are not RGB; `first_epoch` not in 0..`epochs`.

    Returns:
        (train, validation, test) `tf.data.Dataset`s.
    """
    augment = augment or AugmentConfig()
    _check(data, mean, std, augment, first_epoch, epochs)
    scale = _scaler(data.num_classes, mean, std)
    train = _training(data, batch_size, seed, _batch_maker(data, seed, augment, scale), first_epoch, epochs,
                      reshuffle)
    return (train, _evaluation(data.val_images, data.val_labels, batch_size, scale),
            _evaluation(data.test_images, data.test_labels, batch_size, scale))
