"""Training-time augmentation, seeded by (seed, epoch, position): the same key gives the same images.

Every random decision is a TensorFlow stateless random op keyed by `key(seed, stream, epoch,
batch number)`, drawn as one vector per batch: no random state is carried from one epoch to the next, so epoch k of a run resumed
after a crash sees exactly the images it would have seen without the crash.

- `horizontal_flip`: flip left-right with probability 0.5 (torchvision `RandomHorizontalFlip`).
- `crop_padding = p`: zero-pad p pixels per side, then a random crop back to the input size
  (torchvision `RandomCrop(32, padding=4)` in the CIFAR notebook, seed 004).
- `rotation_degrees = r`, `zoom = z`: a random rotation (uniform in [-r, r] degrees) and scale
  (uniform in [1 - z, 1 + z]) of each image about its centre, bilinear with zero fill (the
  affine distortions LeCun et al. 1998 trained LeNet-5 on; torchvision `RandomAffine`).
- `autoaugment = "cifar10"`: AutoAugment's CIFAR-10 policy on each image of a batch, after
  flip and crop (torchvision `AutoAugment(AutoAugmentPolicy.CIFAR10)` in the notebook; built
  from Keras's augmentation layers in `lenet_keras.autoaugment`).
- `distorted_copies = n` with `translate_pixels`, `scale`, `squeeze`, `shear`: LeCun et al.
  1998's distorted training set (section III.C: 540,000 = 9 x 60,000 copies): each training image
  has n fixed distorted copies; each epoch shows it once, as itself or one of its copies
  (`distort`).
- `mixup_alpha = a`: MixUp (Zhang et al. 2018) as the notebook's `mixup_data`: one
  lambda ~ Beta(a, a) per batch, images and one-hot targets mixed with a permutation of the
  batch (mixing the targets equals the notebook's mixed loss, cross-entropy being linear in them).
"""

from __future__ import annotations

from lenet_keras.config import AugmentConfig

SHUFFLE, CROP_FLIP, AUTOAUGMENT, MIXUP, FLIP, AFFINE, DISTORTED_COPY, DISTORTION = 0, 1, 2, 3, 4, 5, 7, 8
"""Random streams: each gets its own keys, so switching one augmentation on changes no other draw."""


def key(seed: int, stream: int, epoch, index=0):
    """The stateless-random key (int64 tensor (2,)) of draw `index` of `stream` in `epoch`.

    `epoch` and `index` may be int64 scalar tensors; built with
    `tf.random.experimental.stateless_fold_in`, so keys of different (stream, epoch, index)
    are independent.
    """
    import tensorflow as tf

    fold = tf.random.experimental.stateless_fold_in
    base = tf.constant([seed, stream], tf.int64)
    return fold(fold(base, tf.cast(epoch, tf.int64)), tf.cast(index, tf.int64))


def check_channels(policy: str, channels: int) -> None:
    """Raise ConfigError when AutoAugment `policy` is on and images are not RGB (`channels` != 3)."""
    from lenet_keras.errors import ConfigError

    if policy != "none" and channels != 3:
        raise ConfigError(f"augment.autoaugment = {policy!r} needs RGB images (3 channels), got {channels} channel(s)")


def alternating_flips(seed: int, count: int, indices, epoch):
    """airbench's derandomized flips: bool (B,) for training-set `indices` (int64 (B,)) in `epoch`.

    Image i of the `count` training images is flipped in epoch 0 by its own coin (one draw per
    image keyed by `seed`, not by the batch), and in epoch e by that coin XOR (e odd): every
    image is seen both ways in any two consecutive epochs (airbench94's CifarLoader).
    """
    import tensorflow as tf

    coins = tf.random.stateless_uniform([count], key(seed, FLIP, 0)) < 0.5
    odd = tf.equal(tf.math.floormod(tf.cast(epoch, tf.int64), 2), 1)
    return tf.not_equal(tf.gather(coins, indices), odd)


def crop_flip(images, config: AugmentConfig, seed_pair, flips=None):
    """Flip and pad-and-crop each image of a uint8 batch (B, H, W, C) on its own; uint8 (B, H, W, C) out.

    One stateless key `seed_pair` (int64 (2,)) per batch; each image still gets its own coin
    (flip with probability 0.5, or the given bool (B,) `flips`, see `alternating_flips`) and
    its own crop offset (uniform in 0..2p per axis), drawn as vectors and applied with a reverse
    and two batched gathers (no per-image work in `tf.data`). The padding is zeros, or the
    mirrored border with `crop_mode = "reflect"`.
    """
    import tensorflow as tf

    flip_key, crop_key = tf.unstack(tf.random.experimental.stateless_split(seed_pair, 2))
    batch = tf.shape(images)[0]
    if config.horizontal_flip:
        flip = tf.random.stateless_uniform([batch], flip_key) < 0.5 if flips is None else flips
        images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    if config.crop_padding:
        pad = config.crop_padding
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]],
                        mode="REFLECT" if config.crop_mode == "reflect" else "CONSTANT")
        offsets = tf.random.stateless_uniform([batch, 2], crop_key, 0, 2 * pad + 1, dtype=tf.int32)
        rows = offsets[:, :1] + tf.range(height)[None]  # (B, H)
        columns = offsets[:, 1:] + tf.range(width)[None]  # (B, W)
        images = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), columns, axis=2, batch_dims=1)
    return images


def affine_transforms(angle, scale, height, width):
    """`ImageProjectiveTransformV3` rows float32 (B, 8) that rotate images by `angle` (float32
    (B,), radians, counter-clockwise as displayed with row 0 at the top) and scale them by `scale`
    (float32 (B,), > 1 enlarges) about the centre of a `height` x `width` image.

    Output pixel (x, y) (column, row) samples the input at A (x - c, y - c) + c with
    A = rotation(angle) / scale and c the image centre ((width - 1) / 2, (height - 1) / 2).
    """
    import tensorflow as tf

    center_x, center_y = (float(width) - 1.0) / 2.0, (float(height) - 1.0) / 2.0
    a0, a1 = tf.cos(angle) / scale, -tf.sin(angle) / scale
    b0, b1 = tf.sin(angle) / scale, tf.cos(angle) / scale
    zeros = tf.zeros_like(angle)
    return tf.stack([a0, a1, center_x - a0 * center_x - a1 * center_y,
                     b0, b1, center_y - b0 * center_x - b1 * center_y, zeros, zeros], axis=1)


def rotate_zoom(images, config: AugmentConfig, seed_pair):
    """Rotate and scale each image of a uint8 batch (B, H, W, C) about its centre; uint8 out.

    Angle uniform in [-`rotation_degrees`, `rotation_degrees`] degrees, scale factor uniform
    in [1 - `zoom`, 1 + `zoom`], both drawn per image from the key `seed_pair` (int64 (2,));
    one `ImageProjectiveTransformV3` for the batch (bilinear, zeros outside the image),
    rounded back to uint8.
    """
    import math

    import tensorflow as tf

    angle_key, zoom_key = tf.unstack(tf.random.experimental.stateless_split(seed_pair, 2))
    batch = tf.shape(images)[0]
    limit = config.rotation_degrees * math.pi / 180.0
    angle = tf.random.stateless_uniform([batch], angle_key, -limit, limit)
    scale = tf.random.stateless_uniform([batch], zoom_key, 1.0 - config.zoom, 1.0 + config.zoom)
    transforms = affine_transforms(angle, scale, images.shape[1], images.shape[2])
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    return tf.cast(tf.clip_by_value(tf.round(warped), 0.0, 255.0), tf.uint8)


DISTORTION_PARAMETERS = ("translate_x", "translate_y", "scale", "squeeze", "shear")


def distortion_table(seed: int, count: int, copies: int):
    """Uniform draws in [-1, 1], float32 (copies, count, 5): the `DISTORTION_PARAMETERS` of copy c + 1
    of training image i are row [c, i] times their ranges (`distort`); keyed by (seed, stream
    `DISTORTION`) alone, so a copy is the same image in every epoch."""
    import tensorflow as tf

    return tf.random.stateless_uniform([copies, count, len(DISTORTION_PARAMETERS)], key(seed, DISTORTION, 0),
                                       -1.0, 1.0)


def distortion_transforms(draws, config: AugmentConfig, height: int, width: int):
    """`ImageProjectiveTransformV3` rows float32 (B, 8) for `distortion_table` rows `draws` (B, 5).

    About the image centre c, the distortion moves input point p to H S (p - c) + c + t: t a
    translation of up to `translate_pixels` each way, S = diag(s q, s / q) with s = 1 + `scale` u
    (scaling) and q = 1 + `squeeze` u' (horizontal compression with vertical elongation, or the
    reverse), H = [[1, h], [0, 1]] a horizontal shear, h = `shear` u''. Output pixel o samples the
    input at S^-1 H^-1 (o - c - t) + c. All-zero draws give the identity.
    """
    import tensorflow as tf

    tx, ty = draws[:, 0] * config.translate_pixels, draws[:, 1] * config.translate_pixels
    s, q, h = 1.0 + draws[:, 2] * config.scale, 1.0 + draws[:, 3] * config.squeeze, draws[:, 4] * config.shear
    a0, a1, b1 = 1.0 / (s * q), -h / (s * q), q / s
    center_x, center_y = (float(width) - 1.0) / 2.0, (float(height) - 1.0) / 2.0
    zeros = tf.zeros_like(tx)
    a2 = center_x - a0 * (center_x + tx) - a1 * (center_y + ty)
    b2 = center_y - b1 * (center_y + ty)
    return tf.stack([a0, a1, a2, zeros, b1, b2, zeros, zeros], axis=1)


def distort(images, indices, table, config: AugmentConfig, seed_pair):
    """Each uint8 image (B, H, W, C) of training-set `indices` (int64 (B,)) as itself or one of its
    `distorted_copies` fixed copies, chosen uniformly per image from the key `seed_pair`; uint8 out.

    `table` is `distortion_table(seed, training images, distorted_copies)`. One bilinear
    `ImageProjectiveTransformV3` for the batch (zeros outside the image), rounded back to uint8.
    """
    import tensorflow as tf

    copy = tf.random.stateless_uniform([tf.shape(images)[0]], seed_pair, 0, config.distorted_copies + 1, tf.int64)
    draws = tf.gather_nd(table, tf.stack([tf.maximum(copy - 1, 0), tf.cast(indices, tf.int64)], axis=1))
    draws = draws * tf.cast(copy > 0, tf.float32)[:, None]
    return _warp(images, distortion_transforms(draws, config, images.shape[1], images.shape[2]))


def _warp(images, transforms):
    """uint8 images (B, H, W, C) through `ImageProjectiveTransformV3` rows (B, 8), bilinear, zero
    fill, rounded back to uint8."""
    import tensorflow as tf

    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    return tf.cast(tf.clip_by_value(tf.round(warped), 0.0, 255.0), tf.uint8)


def mixup_batch(images, labels, alpha: float, seed_pair):
    """MixUp of float32 images (B, H, W, C) and one-hot float32 labels (B, classes) with key `seed_pair`."""
    import tensorflow as tf

    draw = tf.random.stateless_gamma([2], seed=seed_pair, alpha=alpha)
    lam = draw[0] / (draw[0] + draw[1])  # Beta(alpha, alpha) from two Gamma(alpha) draws
    order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(images)[0]), seed=seed_pair[::-1])
    return lam * images + (1.0 - lam) * tf.gather(images, order), lam * labels + (1.0 - lam) * tf.gather(labels, order)


def preview(image, config: AugmentConfig, seed: int, draws: int = 8):
    """`draws` augmented versions of one uint8 image (H, W, C) -> uint8 (draws, H, W, C).

    The per-image augmentations (flip, crop, distorted copies, rotation and zoom, AutoAugment) are shown as in
    epoch 0 of training (distorted copies: the image and its copies in turn, drawn as for a one-image set);
    MixUp mixes whole batches and is not shown.

    Raises:
        ConfigError: AutoAugment is on and the image is not RGB.
    """
    import numpy as np
    import tensorflow as tf

    check_channels(config.autoaugment, image.shape[-1])
    images = crop_flip(tf.repeat(tf.constant(image)[None], draws, axis=0), config, key(seed, CROP_FLIP, 0, 0))
    if config.distort:  # the image's own fixed copies (copy 0: the image itself), in order
        table = distortion_table(seed, 1, config.distorted_copies)
        copies = tf.range(draws, dtype=tf.int64) % (config.distorted_copies + 1)
        rows = tf.gather(table[:, 0], tf.maximum(copies - 1, 0)) * tf.cast(copies > 0, tf.float32)[:, None]
        images = _warp(images, distortion_transforms(rows, config, image.shape[0], image.shape[1]))
    if config.rotate_or_zoom:
        images = rotate_zoom(images, config, key(seed, AFFINE, 0, 0))
    if config.autoaugment != "none":
        from lenet_keras.autoaugment import AutoAugment

        images = AutoAugment(config.autoaugment, tuple(image.shape[:2]))(images, key(seed, AUTOAUGMENT, 0, 0))
    return np.asarray(images)
