"""AutoAugment (CIFAR-10 policy) from Keras layers: the policy table, each operation against
PIL (what torchvision's AutoAugment runs on PIL images) on real images of the JPEG copy of
CIFAR-10, seeding, and the pipeline switch."""

import numpy as np
import pytest

from lenet_keras import augment, autoaugment, config
from lenet_keras.errors import ConfigError

tf = pytest.importorskip("tensorflow")
Image = pytest.importorskip("PIL.Image")
from PIL import ImageEnhance, ImageOps  # noqa: E402


@pytest.fixture(scope="module")
def images(cifar_root):
    """20 real 32x32 RGB images, two of each class, from the JPEG copy (uint8 (20, 32, 32, 3))."""
    root = cifar_root / "cifar10-jpeg"
    files = [f for d in sorted((root / "train").iterdir()) for f in sorted(d.iterdir())[:2]]
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def _keras(images, name, value):
    out = autoaugment._Operations()(name, tf.constant(images, tf.float32), tf.fill([len(images)], float(value)))
    return np.round(np.clip(np.asarray(out), 0, 255)).astype(int)


def _pil(images, transform):
    return np.stack([np.asarray(transform(Image.fromarray(x))) for x in images]).astype(int)


def test_policy_table_is_torchvisions_cifar10_policy():
    table = autoaugment.policy_table("cifar10")
    assert table["operation"].shape == (25, 2)
    assert autoaugment.CIFAR10_POLICY[1] == (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9))
    assert autoaugment.magnitude("Rotate", 2) == pytest.approx(30 * 2 / 9)
    assert autoaugment.magnitude("TranslateX", 9) == 14.0  # int(150/331 * 32) pixels
    assert [autoaugment.magnitude("Posterize", i) for i in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert autoaugment.magnitude("Solarize", 2) == pytest.approx(255 - 2 * 255 / 9)
    assert autoaugment.magnitude("Equalize", None) == 0.0
    with pytest.raises(ValueError, match="unknown AutoAugment policy 'imagenet'"):
        autoaugment.policy_table("imagenet")
    with pytest.raises(ValueError, match="bin must be in 0..9"):
        autoaugment.magnitude("Rotate", 10)


@pytest.mark.parametrize("name, value, transform", [
    ("Invert", 0, ImageOps.invert),
    ("Posterize", 5, lambda im: ImageOps.posterize(im, 5)),
    ("Solarize", 170, lambda im: ImageOps.solarize(im, 170)),
    ("TranslateX", 5, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, -5, 0, 1, 0), Image.NEAREST, fillcolor=0)),
    ("TranslateY", -7, lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, 7), Image.NEAREST, fillcolor=0)),
])
def test_exact_operations_equal_pil(images, name, value, transform):
    np.testing.assert_array_equal(_keras(images, name, value), _pil(images, transform))


@pytest.mark.parametrize("name, value, transform", [
    ("AutoContrast", 0, ImageOps.autocontrast),
    ("Brightness", 0.5, lambda im: ImageEnhance.Brightness(im).enhance(1.5)),
    ("Brightness", -0.6, lambda im: ImageEnhance.Brightness(im).enhance(0.4)),
    ("Color", -0.6, lambda im: ImageEnhance.Color(im).enhance(0.4)),
    ("Color", 0.8, lambda im: ImageEnhance.Color(im).enhance(1.8)),
])
def test_enhancements_equal_pil_within_one_level(images, name, value, transform):
    difference = np.abs(_keras(images, name, value) - _pil(images, transform))
    assert difference.max() <= 1, (name, value, difference.max())


def test_sharpness_equals_pil_inside_the_border(images):
    difference = np.abs(_keras(images, "Sharpness", 0.8) - _pil(images, lambda im: ImageEnhance.Sharpness(im).enhance(1.8)))
    assert difference[:, 1:-1, 1:-1].max() <= 1  # PIL leaves the 1-pixel border unfiltered, Keras does not


def test_rotation_and_shear_match_pil_up_to_half_pixel_rounding(images):
    rotated = _keras(images, "Rotate", 20) == _pil(images, lambda im: im.rotate(20, Image.NEAREST, fillcolor=0))
    assert rotated.mean() > 0.999  # +20 degrees = counter-clockwise, like PIL and torchvision
    sheared = _keras(images, "ShearX", 0.2) == _pil(
        images, lambda im: im.transform(im.size, Image.AFFINE, (1, 0.2, 0, 0, 1, 0), Image.NEAREST, fillcolor=0))
    assert sheared.mean() > 0.95


def test_equalize_is_textbook_histogram_equalization_per_image_and_channel(images):
    def equalize(channel):
        cdf = np.cumsum(np.bincount(channel.ravel(), minlength=256))
        low = cdf[np.nonzero(cdf)[0][0]]
        return np.clip(np.round((cdf - low) * 255 / max(cdf[-1] - low, 1)), 0, 255)[channel]

    expected = np.stack([np.stack([equalize(x[..., c]) for c in range(3)], -1) for x in images])
    np.testing.assert_array_equal(_keras(images, "Equalize", 0), expected)


def test_policy_is_seeded_keeps_shape_and_dtype_and_changes_most_images(images):
    augmenter = autoaugment.AutoAugment("cifar10")
    batch = tf.constant(np.concatenate([images] * 5))  # 100 images
    first = augmenter(batch, tf.constant([3, 4], tf.int64)).numpy()
    again = augmenter(batch, tf.constant([3, 4], tf.int64)).numpy()
    other = augmenter(batch, tf.constant([3, 5], tf.int64)).numpy()
    assert first.dtype == np.uint8 and first.shape == batch.shape
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    changed = (first != batch.numpy()).any(axis=(1, 2, 3)).mean()
    assert 0.5 < changed < 1.0, changed  # each sub-policy's ops fire with probability 0-0.9


def test_pipeline_switch_and_preview(images):
    cfg = config.AugmentConfig(autoaugment="cifar10")
    preview = augment.preview(images[0], cfg, seed=0, draws=12)
    assert preview.shape == (12, 32, 32, 3) and preview.dtype == np.uint8
    assert len({p.tobytes() for p in preview}) > 4
    np.testing.assert_array_equal(preview, augment.preview(images[0], cfg, seed=0, draws=12))
    with pytest.raises(ConfigError, match="augment.autoaugment"):
        config.from_dict({"augment": {"autoaugment": "imagenet"}})
    with pytest.raises(ConfigError, match="needs RGB images"):
        augment.preview(np.zeros([28, 28, 1], np.uint8), cfg, seed=0)
