"""AutoAugment with the CIFAR-10 policy, built from Keras's own image augmentation layers.

Source: Cubuk et al., "AutoAugment: Learning Augmentation Policies from Data" (CVPR 2019,
arXiv:1805.09501), as torchvision implements it in `transforms.AutoAugment(AutoAugmentPolicy.CIFAR10)`,
which the CIFAR notebook seed (004) uses after its flip and crop. The 25 sub-policies, the
magnitude bins (10 per operation) and the sampling follow torchvision:

- for each image, one sub-policy is drawn uniformly from the 25;
- each of its two operations is applied, in order, with its own probability;
- signed operations (shear, translate, rotate, brightness, color, contrast, sharpness) get a
  random sign, + or - with probability 0.5 each;
- geometric operations use nearest-neighbour interpolation and fill with 0 (black).

Operation -> what computes it (all on float32 pixel values in [0, 255], per image):

| AutoAugment op | magnitude bins (index 0..9)          | computed by                                    |
|----------------|--------------------------------------|------------------------------------------------|
| ShearX, ShearY | 0 .. 0.3 (shear factor)              | `keras.layers.RandomShear`                     |
| TranslateX/Y   | 0 .. 150/331 x 32 px, truncated to int | `keras.layers.RandomTranslation`             |
| Rotate         | 0 .. 30 degrees                      | `keras.layers.RandomRotation`                  |
| Color          | factor 1 +- (0 .. 0.9)               | `keras.layers.RandomColorDegeneration`         |
| Contrast       | factor 1 +- (0 .. 0.9)               | `keras.layers.RandomContrast`                  |
| Sharpness      | factor 1 +- (0 .. 0.9)               | `keras.layers.RandomSharpness`                 |
| Brightness     | factor 1 +- (0 .. 0.9)               | x * factor (see below)                         |
| Posterize      | 8,8,7,7,6,6,5,5,4,4 bits kept        | `keras.layers.RandomPosterization`             |
| Solarize       | threshold 255 .. 0                   | `keras.layers.Solarization`                    |
| AutoContrast   | -                                    | `keras.layers.AutoContrast`                    |
| Equalize       | -                                    | `keras.layers.Equalization`                    |
| Invert         | -                                    | `keras.layers.RandomInvert`                    |

Each layer's random parameters are replaced by ours: we call its `transform_images` with a
transformation we draw from TensorFlow's stateless random ops, so the whole policy is seeded
and the same seed gives the same images (Keras layers draw from their own stateful generator).

Known differences from torchvision/PIL, kept on purpose because they are Keras's behaviour:
Keras's contrast blends with each channel's mean (PIL: the grayscale mean); Keras's sharpness
also filters the border pixels (PIL keeps them); shear is about the top-left corner with
factor m (torchvision: angle atan(m), same matrix). Keras's `RandomBrightness` *adds* a delta
while AutoAugment's Brightness *multiplies* (PIL `ImageEnhance.Brightness`), so Brightness is
the one op written here, as `clip(x * factor, 0, 255)`.
"""

from __future__ import annotations

import math

import numpy as np

#: The CIFAR-10 policy: 25 sub-policies of two (operation, probability, magnitude bin) each.
#: Source: torchvision `transforms.autoaugment._get_policies(AutoAugmentPolicy.CIFAR10)`,
#: the policy of Cubuk et al. 2019, Table 7 of arXiv:1805.09501 (ops renamed as torchvision's).
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int | None], tuple[str, float, int | None]], ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)

POLICIES = {"cifar10": CIFAR10_POLICY}

_BINS = 10
#: The operations, in the order of their integer ids.
OPERATIONS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
              "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
_SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}


def magnitude(operation: str, bin_index: int | None, image_size: tuple[int, int] = (32, 32)) -> float:
    """The magnitude of `operation` at `bin_index` (0-9), unsigned, as torchvision's `_augmentation_space`.

    Units: shear factor; translation in whole pixels (height for Y, width for X); rotation in
    degrees; enhancement offset from factor 1; bits kept for Posterize; 0-255 threshold for Solarize.
    Operations without a magnitude (AutoContrast, Equalize, Invert) give 0.

    Raises:
        ValueError: unknown operation or bin outside 0..9.
    """
    if operation not in OPERATIONS:
        raise ValueError(f"unknown AutoAugment operation {operation!r}; expected one of {', '.join(OPERATIONS)}")
    if bin_index is None:
        return 0.0
    if not 0 <= bin_index < _BINS:
        raise ValueError(f"AutoAugment magnitude bin must be in 0..{_BINS - 1}, got {bin_index}")
    height, width = image_size
    linear = {
        "ShearX": (0.0, 0.3), "ShearY": (0.0, 0.3),
        "TranslateX": (0.0, 150.0 / 331.0 * width), "TranslateY": (0.0, 150.0 / 331.0 * height),
        "Rotate": (0.0, 30.0),
        "Brightness": (0.0, 0.9), "Color": (0.0, 0.9), "Contrast": (0.0, 0.9), "Sharpness": (0.0, 0.9),
        "Solarize": (255.0, 0.0),
    }
    if operation == "Posterize":
        return float(8 - round(bin_index / ((_BINS - 1) / 4)))
    low, high = linear[operation]
    value = float(np.linspace(low, high, _BINS)[bin_index])
    return float(int(value)) if operation.startswith("Translate") else value


def policy_table(policy: str, image_size: tuple[int, int] = (32, 32)) -> dict[str, np.ndarray]:
    """The policy as arrays (sub-policies, 2): operation id (int32), probability, magnitude, signed.

    Raises:
        ValueError: unknown policy name.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown AutoAugment policy {policy!r}; expected one of {', '.join(POLICIES)}")
    rows = POLICIES[policy]
    return {
        "operation": np.array([[OPERATIONS.index(op) for op, _, _ in row] for row in rows], np.int32),
        "probability": np.array([[p for _, p, _ in row] for row in rows], np.float32),
        "magnitude": np.array([[magnitude(op, m, image_size) for op, _, m in row] for row in rows], np.float32),
        "signed": np.array([[op in _SIGNED for op, _, _ in row] for row in rows], bool),
    }


class _Operations:
    """The 14 operations on a batch of float32 images (B, H, W, 3) in [0, 255] with a per-image
    signed magnitude (B,); Keras layers do the work where Keras has the operation."""

    def __init__(self):
        from keras import layers

        float32 = dict(dtype="float32")  # augmentation stays float32 under a mixed-precision policy
        geometric = dict(interpolation="nearest", fill_mode="constant", fill_value=0.0, **float32)
        self.shear = layers.RandomShear(x_factor=0.0, y_factor=0.0, **geometric)
        self.translation = layers.RandomTranslation(0.0, 0.0, **geometric)
        self.rotation = layers.RandomRotation(0.0, **geometric)
        self.color = layers.RandomColorDegeneration(0.0, **float32)
        self.contrast = layers.RandomContrast(0.0, **float32)
        self.sharpness = layers.RandomSharpness(0.0, **float32)
        self.posterization = layers.RandomPosterization(factor=(1, 8), **float32)
        self.solarization = layers.Solarization(**float32)
        self.auto_contrast = layers.AutoContrast(**float32)
        self.equalization = layers.Equalization(**float32)
        self.invert = layers.RandomInvert(**float32)

    def __call__(self, name, images, m):
        import tensorflow as tf

        zeros = tf.zeros_like(m)
        column = m[:, None, None, None]
        if name in ("ShearX", "ShearY"):
            factor = tf.stack([m, zeros] if name == "ShearX" else [zeros, m], axis=1)
            return self.shear.transform_images(images, {"shear_factor": factor, "input_shape": tf.shape(images)})
        if name in ("TranslateX", "TranslateY"):
            shift = tf.stack([m, zeros] if name == "TranslateX" else [zeros, m], axis=1)
            return self.translation.transform_images(images, {"translations": shift, "input_shape": tf.shape(images)})
        if name == "Rotate":
            return self.rotation.transform_images(images, {"rotation_matrix": _rotation_matrix(m, tf.shape(images))})
        if name == "Brightness":
            return tf.clip_by_value(images * (1.0 + column), 0.0, 255.0)
        if name == "Color":  # PIL blends towards gray with factor f: x + (1 - f)(gray - x); here f = 1 + m
            return self.color.transform_images(images, {"factor": -column})
        if name == "Contrast":
            return self.contrast.transform_images(images, {"contrast_factor": 1.0 + column})
        if name == "Sharpness":  # Keras doubles its factor: factor / 2 gives PIL's blend
            return self.sharpness.transform_images(images, {"factor": (1.0 + m) / 2.0})
        if name == "Posterize":
            return self.posterization.transform_images(images, {"shift_factor": tf.cast(8.0 - m, tf.uint8)})
        if name == "Solarize":
            return self.solarization.transform_images(images, {"additions": tf.zeros_like(column), "thresholds": column})
        if name == "AutoContrast":
            return self.auto_contrast.transform_images(images, None)
        if name == "Equalize":  # Keras's histogram spans the whole input: one image at a time
            return tf.map_fn(lambda image: self.equalization.transform_images(image[None], None)[0], images)
        if name == "Invert":
            return self.invert.transform_images(images, {"apply_inversion": tf.ones_like(m, tf.bool)})
        raise ValueError(f"unknown AutoAugment operation {name!r}")


def _rotation_matrix(degrees, shape):
    """Keras's 8-parameter projective transforms (B, 8) rotating about the image centre."""
    import tensorflow as tf

    angle = degrees * (math.pi / 180.0)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    zeros = tf.zeros_like(angle)
    return tf.stack(
        [cos, -sin, cx - cx * cos + cy * sin, sin, cos, cy - cx * sin - cy * cos, zeros, zeros], axis=1
    )


class AutoAugment:
    """AutoAugment a batch: uint8 images (B, H, W, 3) -> uint8 images (B, H, W, 3).

    `AutoAugment("cifar10")(images, seeds)`: `seeds` is an int64 tensor of shape (2,) (a
    stateless-random key); the same images and key give the same output. Like PIL, each
    operation's result is rounded back to uint8 values. Build the object outside `tf.function`
    and `tf.data` maps (the Keras layers it holds own variables); calling it inside them is fine.

    Raises:
        ValueError: unknown policy (at construction).
    """

    def __init__(self, policy: str = "cifar10", image_size: tuple[int, int] = (32, 32)):
        self.policy = policy
        self.table = policy_table(policy, image_size)
        self.operations = _Operations()

    def __call__(self, images, seeds):
        import tensorflow as tf

        table = {k: tf.constant(v) for k, v in self.table.items()}
        batch = tf.shape(images)[0]
        keys = tf.random.experimental.stateless_split(tf.cast(seeds, tf.int64), 3)
        chosen = tf.random.stateless_uniform([batch], keys[0], 0, len(self.table["operation"]), dtype=tf.int32)
        applied = tf.random.stateless_uniform([batch, 2], keys[1]) <= tf.gather(table["probability"], chosen)
        negative = tf.random.stateless_uniform([batch, 2], keys[2]) < 0.5
        operation = tf.gather(table["operation"], chosen)
        sign = tf.where(negative & tf.gather(table["signed"], chosen), -1.0, 1.0)
        signed_magnitude = tf.gather(table["magnitude"], chosen) * sign

        result = tf.cast(images, tf.float32)
        for slot in range(2):
            slot_input = result
            for op_id, name in enumerate(OPERATIONS):
                mask = (operation[:, slot] == op_id) & applied[:, slot]
                transformed = self.operations(name, slot_input, signed_magnitude[:, slot])
                transformed = tf.round(tf.clip_by_value(tf.cast(transformed, tf.float32), 0.0, 255.0))
                result = tf.where(mask[:, None, None, None], transformed, result)
        return tf.cast(result, tf.uint8)
