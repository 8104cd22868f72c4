"""Datasets: where the files are, downloading them, and loading them as `ImageData` arrays.

This module owns the look-up (the one data folder, `search_dirs`), the downloads (`download`,
`download_mnist`), the loaders that turn a dataset into uint8 arrays split into train /
validation / test (`load_mnist`, `load_cifar10`, `load_image_folder`, registered in `DATASETS`,
called by `load`) and their result, `ImageData`. The file formats and checksums (IDX, the
CIFAR-10 archive, image folders, SHA-256; `MNIST_FILES`, `CIFAR10_SHA256`, ...) are
`lenet_keras.dataformats`; the `tf.data` pipelines built from an `ImageData` are
`lenet_keras.pipeline`. Importing this module loads neither TensorFlow nor Keras (the NumPy
engine uses it): Keras is imported only to download, and to decode an image folder.

MNIST is read from the four official IDX files (gzip-compressed or raw), each verified by the
SHA-256 of its decompressed content (the checksums of `shared/datasets/README.md`, recorded in
`dataformats.MNIST_FILES`). The folders searched (`search_dirs`):

1. `--data-dir DIR` when given: only that folder;
2. else `$LENET_KERAS_DATA` when set and not empty: only that folder;
3. else, in order, `./data` (the working directory's), `data/` of the repository when the
   package runs from a checkout (MNIST ships there, so a fresh clone works offline), and
   Keras's dataset cache (`$KERAS_HOME/datasets`, default `~/.keras/datasets`: `keras_cache_dir`).

Each folder holds the files directly or in a sub-folder named after the dataset (`mnist/`,
`cifar10/`). A folder the user named (1 or 2) is used or refused: if it is not a folder, or
lacks a file, `DataNotFoundError` names it and the expected files it lacks; nothing is taken
from another place and nothing is downloaded. Only when nothing was named (3) and no folder has
the files, Keras's `mnist.npz` (or the official CIFAR-10 archive) is downloaded into the Keras
cache (`<cache>/mnist/`, `<cache>/cifar10/`), its own SHA-256 checked, and MNIST converted to
the official IDX files and checked against the same content checksums; offline this fails with
`DataNotFoundError`, which lists each folder searched and how to provide the files.

An image folder (`data.dataset = "image_folder"`) is an absolute `data.path` as given; a relative
one is looked for under the one data folder above, and, only when no folder was named (1 or 2),
first in the working directory. `ImageData.source` names the folder (or archive) actually read, and
`ImageData.validation` says in one line how the validation split was made.

This module knows nothing of models: it hands out arrays.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lenet_keras import dataformats
from lenet_keras.config import DataConfig
from lenet_keras.errors import ChecksumError, ConfigError, DataNotFoundError

REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
"""`data/` of the repository (searched when the package runs from a checkout and no folder is named)."""

DATA_ENV_VAR = "LENET_KERAS_DATA"

DATA_DIR_HELP = (f"the only folder searched for the dataset (default: ${DATA_ENV_VAR} if set, else ./data, data/ "
                 f"of the repository, the Keras cache ~/.keras/datasets, downloading into the cache if missing)")
"""The `--data-dir` help of every command that loads a dataset (`lenet_keras.cli`, `lenet_keras.bench`)."""

MNIST_NPZ_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
"""Keras's `mnist.npz` (see `keras/src/datasets/mnist.py`): the download for users online."""

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
"""Where the official CIFAR-10 archive is downloaded from (`dataformats.CIFAR10_ARCHIVE`, checked
against `dataformats.CIFAR10_SHA256`)."""


@dataclass(frozen=True)
class ImageData:
    """A classification dataset as arrays, split into train / validation / test.

    Images are uint8 arrays of shape (N, height, width, channels), values 0..255; labels are
    int64 arrays of shape (N,) holding class indices 0..num_classes-1.
    `checksums` maps each source file to the SHA-256 of its content; `source` is the folder or archive read;
    `description` says in words what the data are (reports quote it); `validation` says in one
    line how the validation split was made, e.g. "the last 12000 of all 60000 official training
    images, in file order" (reports and manifests quote it); `validation_is_test` is True when
    the validation set is the test set (`data.validation_split = 0`), recorded in the manifest.
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
    validation_is_test: bool = False

    @property
    def num_classes(self) -> int:
        """Number of classes (10 for MNIST)."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image, e.g. (28, 28, 1) for MNIST."""
        return tuple(self.train_images.shape[1:])


def keras_cache_dir() -> Path:
    """Keras's dataset cache, where `keras.utils.get_file` keeps downloads: `$KERAS_HOME/datasets`,
    default `~/.keras/datasets`."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets"


def default_dirs() -> list[Path]:
    """The folders searched when none is named, in order: `./data`, the repository's `data/` (when
    running from a checkout, i.e. beside pyproject.toml), the Keras cache; a folder met twice
    (`./data` in the repository) once."""
    checkout = (REPO_DATA_DIR.parent / "pyproject.toml").is_file()
    candidates = [Path.cwd() / "data", *([REPO_DATA_DIR] if checkout else []), keras_cache_dir()]
    unique: list[Path] = []
    for folder in candidates:
        if all(folder.resolve() != seen.resolve() for seen in unique):
            unique.append(folder)
    return unique


def search_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """The data folders searched: `[data_dir]`, else `[$LENET_KERAS_DATA]`, else `default_dirs()`.

    Raises:
        DataNotFoundError: the folder named by `data_dir` or `$LENET_KERAS_DATA` is not a
            folder (a typo must not silently fall through to other data).
    """
    named = named_data_dir(data_dir)
    if named is None:
        return default_dirs()
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
    actual = dataformats.sha256_of_file(path)
    if actual != expected_sha256:
        path.unlink()
        raise ChecksumError(
            f"{path} (downloaded from {url}): SHA-256 mismatch, file deleted\n"
            f"  expected {expected_sha256}\n  actual   {actual}"
        )
    return path


def idx_path(folder: Path, name: str) -> Path | None:
    """The IDX file `name` in `folder`, raw (`folder/name`) or gzip (`folder/name.gz`), raw first; None if neither.

    `name` is an official MNIST file name (`dataformats.MNIST_FILES`), e.g. `train-images-idx3-ubyte`.
    """
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_mnist(folder: Path) -> list[str]:
    """The official MNIST file names (`name[.gz]`) not in `folder`, in `dataformats.MNIST_FILES` order."""
    return [f"{name}[.gz]" for name, _ in dataformats.MNIST_FILES.values() if idx_path(folder, name) is None]


def find_mnist(roots: Sequence[Path]) -> Path | None:
    """`root/mnist`, else `root`, whichever first holds all four files; None if neither (`roots`: the
    one data folder, as `search_dirs` lists it)."""
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
            checked against `dataformats.MNIST_FILES` when read).
    """
    npz_path = download(url or MNIST_NPZ_URL, target / "mnist.npz", MNIST_NPZ_SHA256)
    with np.load(npz_path) as npz:
        arrays = {
            "train_images": npz["x_train"],
            "train_labels": npz["y_train"],
            "test_images": npz["x_test"],
            "test_labels": npz["y_test"],
        }
    for role, (name, _) in dataformats.MNIST_FILES.items():
        dataformats.write_idx(target / name, arrays[role])
    npz_path.unlink()
    return target


def load_mnist(
    config: DataConfig,
    roots: Sequence[Path],
    download_to: Path | None = None,
    url: str | None = None,
) -> ImageData:
    """Load MNIST from the data folder `roots` lists (else download), verified, then split.

    The validation set is the LAST `config.validation_split` of the (subset of the) 60,000
    official training images, in file order, as Keras's `validation_split` in the deck.

    Returns:
        `ImageData`: uint8 images (N, 28, 28, 1), int64 labels (N,), classes "0".."9".

    Raises:
        DataNotFoundError: not in the data folder, and the download into `download_to` failed or
            `download_to` is None; the message lists each folder searched with the files it
            lacks, the four expected file names and what to do.
        ChecksumError: a file's content differs from the official checksums.
    """
    folder, problem = _find_or_download(find_mnist(roots), download_to, lambda target: download_mnist(target, url))
    if folder is None:
        names = ", ".join(f"{name}[.gz]" for name, _ in dataformats.MNIST_FILES.values())
        raise _not_found("MNIST", "mnist", roots, problem, f"the four official IDX files ({names})", download_to,
                         _missing_mnist)
    arrays, checksums = {}, {}
    for role, (name, sha256) in dataformats.MNIST_FILES.items():
        path = idx_path(folder, name)
        arrays[role], checksums[name] = dataformats.read_idx(path, expected_sha256=sha256)
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
    """The error for `title` not in the data folder (`roots`): each folder searched and the files it lacks (`missing`)."""
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
        description=description or name, validation=validation, validation_is_test=config.validation_split == 0,
    )


def _find_file(roots: Sequence[Path], subdir: str, name: str) -> Path | None:
    """`root/subdir/name`, else `root/name`, whichever is a file; None if neither (`roots`: the one
    data folder, as `search_dirs` lists it)."""
    for root in roots:
        for folder in (root / subdir, root):
            if (folder / name).is_file():
                return folder / name
    return None


def load_cifar10(config: DataConfig, roots: Sequence[Path], download_to: Path | None = None, url: str | None = None) -> ImageData:
    """Load CIFAR-10 from the official archive in the data folder `roots` lists (else download).

    The archive (in `root/cifar10/` or `root/`) is verified by its SHA-256 before it is read.
    The validation set is the last `config.validation_split` of the 50,000 training images in
    the official order (0.1 -> the last 5,000 images of `data_batch_5`).

    Returns:
        `ImageData`: uint8 images (N, 32, 32, 3), int64 labels (N,).

    Raises:
        DataNotFoundError: no archive and no download; the message names each folder searched,
            the archive expected there, and how to provide one or use an image folder instead.
        ChecksumError: the archive's SHA-256 differs or its content is not the official layout.
    """
    archive, expected = dataformats.CIFAR10_ARCHIVE, dataformats.CIFAR10_SHA256
    path, problem = _find_or_download(
        _find_file(roots, "cifar10", archive), download_to,
        lambda target: download(url or CIFAR10_URL, target / archive, expected),
    )
    if path is None:
        error = _not_found("CIFAR-10", "cifar10", roots, problem, f"the official archive {archive}", download_to,
                           lambda folder: [] if (folder / archive).is_file() else [archive])
        raise DataNotFoundError(
            f"{error}\nOr train on a folder of images laid out as train/<class>/* and test/<class>/*:\n"
            f"  make cifar DATA=/path/to/folder\n"
            f"  python -m lenet_keras train experiments/cifar_cnn.toml data.dataset=image_folder data.path=/path/to/folder"
        )
    actual = dataformats.sha256_of_file(path)
    if actual != expected:
        raise ChecksumError(f"{path}: SHA-256 mismatch\n  expected {expected}\n  actual   {actual}")
    train_x, train_y, test_x, test_y, names = dataformats.read_cifar10_archive(path)
    return _split("cifar10", str(path), config.class_names or names, config, {archive: actual},
                  train_x, train_y, test_x, test_y, description="CIFAR-10 (the official python archive)",
                  order="official training images, in file order (data_batch_1 .. data_batch_5)")


def image_folder_candidates(path: str | Path, roots: Sequence[Path]) -> list[Path]:
    """Where `data.path = path` is looked for: an absolute path as given, a relative one under each data folder of `roots`."""
    return [Path(path)] if Path(path).is_absolute() else [root / path for root in roots]


def find_image_folder(path: str | Path, roots: Sequence[Path]) -> Path | None:
    """The first of `image_folder_candidates` with train/ and test/ sub-folders, None if none has both."""
    return next((c for c in image_folder_candidates(path, roots) if (c / "train").is_dir() and (c / "test").is_dir()),
                None)


def _resolve_folder(config: DataConfig, roots: Sequence[Path]) -> Path:
    """An absolute `data.path` as given, a relative one under each data folder of `roots` (the first with train/ and test/).

    Raises:
        ConfigError: no `data.path`.
        DataNotFoundError: no candidate has both train/ and test/ (each candidate is named).
    """
    if not config.path:
        raise ConfigError("data.path: image_folder needs the folder holding train/<class>/ and test/<class>/")
    folder = find_image_folder(config.path, roots)
    if folder is not None:
        return folder
    raise DataNotFoundError(
        f"data.path={config.path!r}: no folder with train/ and test/ sub-folders at "
        + ", ".join(str(c) for c in image_folder_candidates(config.path, roots))
    )


def load_image_folder(config: DataConfig, roots: Sequence[Path], download_to: Path | None = None, url: str | None = None) -> ImageData:
    """Load `config.path/train/<class>/*` and `config.path/test/<class>/*` as RGB uint8 arrays.

    An absolute `config.path` is used as given, a relative one is looked for under the data
    folders `roots` (so `data.path = "cifar10-jpeg"` finds `$LENET_KERAS_DATA/cifar10-jpeg`; `load`
    resolves it in the working directory first when no data folder was named). Class order: `config.class_names`, else the sorted
    sub-folder names of `train/`. The folder's `dataformats.folder_digest` is recorded as its
    checksum, and a known digest (`dataformats.KNOWN_IMAGE_FOLDERS`) names the dataset in the
    description. Each split's files are shuffled with seed `dataformats.IMAGE_FOLDER_SEED`
    (`dataformats.read_image_split`); subsets are the first images of that order, and the
    validation split is the last `config.validation_split` of the training images taken
    (`ImageData.validation` says so, with the seed and the counts).

    Returns:
        `ImageData`: uint8 images (N, H, W, 3) (H, W of the first training image), int64 labels.

    Raises:
        ConfigError: no `data.path`, or a listed class with no folder.
        DataNotFoundError: no such folder with train/ and test/, or a split whose class folders
            hold no file.
    """
    folder = _resolve_folder(config, roots)
    class_names = config.class_names or tuple(sorted(p.name for p in (folder / "train").iterdir() if p.is_dir()))
    for split in ("train", "test"):
        missing = [name for name in class_names if not (folder / split / name).is_dir()]
        if missing:
            raise ConfigError(f"data.class_names: {folder / split} has no folder for {', '.join(missing)}")
        if not any(p.is_file() for name in class_names for p in (folder / split / name).iterdir()):
            empty = ", ".join(str(folder / split / name) for name in class_names) or "no class folders"
            raise DataNotFoundError(f"data.path: {folder / split} holds no image files (empty: {empty}); "
                                    f"each class folder holds that class's images")
    digest = dataformats.folder_digest(folder)
    train_x, train_y, available = dataformats.read_image_split(folder / "train", class_names, config.train_subset)
    test_x, test_y, _ = dataformats.read_image_split(folder / "test", class_names, config.test_subset)
    known = dataformats.KNOWN_IMAGE_FOLDERS.get(digest)
    description = f"the image folder {folder}" + (f", {known}" if known else "")
    order = (f"training images of the folder, in the order of a seeded shuffle of its files "
             f"(seed {dataformats.IMAGE_FOLDER_SEED}, keras.utils.image_dataset_from_directory)")
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
    nothing is downloaded; with neither, `default_dirs()` are searched and, if `download`, a
    missing dataset is downloaded into the Keras cache (`keras_cache_dir() / <dataset>`).

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
    if named is None and config.path and not Path(config.path).is_absolute() and Path(config.path).is_dir():
        config = dataclasses.replace(config, path=str(Path(config.path).resolve()))  # relative to the working directory
    download_to = keras_cache_dir() / config.dataset if download and named is None else None
    try:
        return DATASETS[config.dataset](config, roots, download_to=download_to)
    except DataNotFoundError as error:
        if named is None:
            raise
        origin, folder = named
        not_searched = (f"not ${DATA_ENV_VAR}, not ./data, data/ or the Keras cache" if origin == "--data-dir"
                        else f"not ./data, data/ or the Keras cache; unset {DATA_ENV_VAR} to use them and the download")
        raise DataNotFoundError(
            f"{_named_text(origin, folder)} {'was given' if origin == '--data-dir' else 'is set'}, so only that folder "
            f"is searched ({not_searched}) "
            f"and nothing is downloaded.\n{error}"
        ) from None
