"""Augmentation: seeded (same seed, same batches), shape/dtype/range kept, and doing what it says."""

import numpy as np
import pytest

from lenet_keras import augment, data, pipeline
from lenet_keras.config import AugmentConfig, DataConfig

tf = pytest.importorskip("tensorflow")

FULL = AugmentConfig(horizontal_flip=True, crop_padding=4, rotation_degrees=10, zoom=0.1, mixup_alpha=0.4)


@pytest.fixture(scope="module")
def small(mnist_dir):
    return data.load_mnist(DataConfig(train_subset=320, test_subset=10), [mnist_dir])


def _epoch(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_same_seed_same_augmented_batches_other_seed_differs(small):
    first = _epoch(pipeline.pipelines(small, 64, seed=5, augment=FULL)[0])
    again = _epoch(pipeline.pipelines(small, 64, seed=5, augment=FULL)[0])
    other = _epoch(pipeline.pipelines(small, 64, seed=6, augment=FULL)[0])
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(first[0][0], other[0][0])


def test_each_epoch_draws_new_augmentations_and_is_a_function_of_seed_and_epoch(small):
    steps = pipeline.steps_per_epoch(small, 64)
    both = _epoch(pipeline.pipelines(small, 64, seed=3, augment=FULL, epochs=2)[0])
    second_only = _epoch(pipeline.pipelines(small, 64, seed=3, augment=FULL, first_epoch=1, epochs=2)[0])
    assert len(both) == 2 * steps and len(second_only) == steps
    assert not np.array_equal(both[0][0], both[steps][0])  # epoch 1 differs from epoch 0
    for (x1, y1), (x2, y2) in zip(both[steps:], second_only):  # epoch 1 alone = epoch 1 after epoch 0
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_shapes_dtypes_and_ranges_are_kept(small):
    x, y = next(iter(pipeline.pipelines(small, 64, seed=1, augment=FULL)[0]))
    assert x.shape == (64, 28, 28, 1) and x.dtype == tf.float32 and y.shape == (64, 10)
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    np.testing.assert_allclose(tf.reduce_sum(y, axis=1), np.ones(64), rtol=1e-6)  # mixed targets sum to 1
    assert float(tf.reduce_min(tf.reduce_max(y, axis=1))) < 1.0  # MixUp mixed some targets


def test_crop_shifts_the_image_by_at_most_the_padding(small):
    image = small.train_images[0]
    draws = augment.preview(image, AugmentConfig(crop_padding=4), seed=0, draws=16)
    assert draws.shape == (16, 28, 28, 1) and draws.dtype == np.uint8
    for draw in draws:
        shifts = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                  if np.array_equal(draw, np.roll(np.pad(image, ((4, 4), (4, 4), (0, 0))), (dy, dx), (0, 1))[4:-4, 4:-4])]
        assert shifts, "every draw is the padded image shifted by at most 4 pixels"
    assert len({draw.tobytes() for draw in draws}) > 1


def test_flip_is_left_right_mirror_or_identity(small):
    image = small.train_images[1]
    draws = augment.preview(image, AugmentConfig(horizontal_flip=True), seed=0, draws=16)
    kinds = {("same" if np.array_equal(d, image) else "mirror" if np.array_equal(d, image[:, ::-1]) else "other") for d in draws}
    assert kinds == {"same", "mirror"}


def test_nothing_switched_on_is_the_plain_pipeline(small):
    plain = _epoch(pipeline.pipelines(small, 64, seed=2)[0])
    off = _epoch(pipeline.pipelines(small, 64, seed=2, augment=AugmentConfig())[0])
    np.testing.assert_array_equal(plain[0][0], off[0][0])
    # and every image of the epoch is a training image itself, only scaled to [0, 1] (no mean/std
    # given): the seeded shuffle reorders them, nothing changes a pixel
    originals = {(image.tobytes(), int(label)) for image, label in zip(small.train_images, small.train_labels)}
    seen = [(np.rint(x * 255).astype(np.uint8).tobytes(), int(np.argmax(y)) if np.ndim(y) else int(y))
            for images, labels in off for x, y in zip(images, labels)]
    assert len(seen) == len(small.train_images) and set(seen) == originals


def _warp(image, angle_degrees, scale):
    """One float32 image (H, W) warped by `augment.affine_transforms` (bilinear, zero fill)."""
    height, width = image.shape
    transforms = augment.affine_transforms(tf.constant([np.radians(angle_degrees)], tf.float32),
                                           tf.constant([scale], tf.float32), height, width)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.constant(image[None, :, :, None], tf.float32), transforms=transforms, output_shape=[height, width],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT").numpy()[0, :, :, 0]


def test_affine_transforms_rotate_counter_clockwise_and_scale_about_the_centre():
    dot = np.zeros((9, 9), np.float32)
    dot[0, 6] = 1.0  # top row, 2 pixels right of the middle
    expected = np.zeros_like(dot)
    expected[2, 0] = 1.0  # a quarter turn counter-clockwise: top -> left, right -> top (not a transpose)
    np.testing.assert_allclose(_warp(dot, 90, 1.0), expected, atol=1e-5)
    expected = np.zeros_like(dot)
    expected[2, 5] = 1.0  # half size: (-4, +2) from the centre becomes (-2, +1)
    np.testing.assert_allclose(_warp(dot, 0, 0.5), expected, atol=1e-5)
    np.testing.assert_allclose(_warp(dot, 0, 1.0), dot, atol=1e-5)  # no rotation, scale 1: identity


def test_rotation_and_zoom_are_per_image_seeded_and_bounded(small):
    image = small.train_images[2]
    config = AugmentConfig(rotation_degrees=20, zoom=0.1)
    draws = augment.preview(image, config, seed=0, draws=16)
    assert draws.shape == (16, 28, 28, 1) and draws.dtype == np.uint8
    np.testing.assert_array_equal(draws, augment.preview(image, config, seed=0, draws=16))
    assert len({draw.tobytes() for draw in draws}) == 16  # every image its own angle and scale
    ink = image.astype(np.float64).sum()
    for draw in draws:  # a rotation keeps the ink, a scale in [0.9, 1.1] changes it by its square
        assert 0.9**2 * 0.95 < draw.astype(np.float64).sum() / ink < 1.1**2 * 1.05
    plain = _epoch(pipeline.pipelines(small, 64, seed=4)[0])
    rotated = _epoch(pipeline.pipelines(small, 64, seed=4, augment=config)[0])
    again = _epoch(pipeline.pipelines(small, 64, seed=4, augment=config)[0])
    np.testing.assert_array_equal(rotated[0][0], again[0][0])
    np.testing.assert_array_equal(rotated[0][1], plain[0][1])  # same images in the same order, labels kept
    assert not np.array_equal(rotated[0][0], plain[0][0])
