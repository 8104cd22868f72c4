"""Use what was trained: classify image files with a run's weights, or export them for serving.

Which weights: by default the final ones (`RUN_DIR/final.weights.h5`), the weights whose test
accuracy the manifest reports (`test.weights = "final epoch"`) and whose test probabilities are in
`predictions.npz`. `weights="best"` serves `best.keras`, the epoch of best validation accuracy;
for a recipe with `data.validation_split = 0` the "validation" set is the test set, so that
checkpoint was selected on the test set.

`predict_files(run_dir, paths, top, weights)` loads those weights, reads PNG/JPEG files (a folder:
its image files, sorted by name), scales them exactly as the run's pipelines did
(`lenet_keras.pipeline.normalize` with the run's `config.data.mean`/`std` from manifest.json) and
returns each image's class probabilities and top-K classes (names from the manifest).
`write_csv` writes them as one row per image and rank: `path,rank,class,probability`.

Images are never resized or converted between grayscale and colour: an image whose height, width
or channels differ from the model's input is a `LenetKerasError` naming the file, what it is and
what the run expects.

`export(run_dir, out, weights)` writes a TensorFlow SavedModel of the same weights
(`model.export(out, format="tf_saved_model")`, serving endpoint `serve`), default
`RUN_DIR/export/savedmodel`, and refuses to overwrite an existing folder.

TensorFlow/Keras are imported inside the functions that need them.
"""

from __future__ import annotations

import csv
import io
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lenet_keras.errors import LenetKerasError
from lenet_keras.manifest import read_run_manifest, write_text_atomic
from lenet_keras.pipeline import normalize

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""File name endings (any case) read from a folder given to `predict`."""

CSV_COLUMNS = ("path", "rank", "class", "probability")
"""Columns of `write_csv`: one row per image and rank (1 = most probable)."""

WEIGHTS = ("final", "best")
"""What `predict`/`export` serve: "final" (final.weights.h5, the manifest's test accuracy; the
default) or "best" (best.keras, the epoch of best validation accuracy)."""

CHANNELS_OF_MODE = {"L": 1, "RGB": 3}
"""Pillow image modes read as they are (after "1" -> "L" and palette "P" -> "RGB"/"RGBA")."""


@dataclass(frozen=True)
class Prediction:
    """One image's result: its path, float32 probabilities (num_classes,) and top classes.

    `top`: ((class name, probability), ...), most probable first, `len(top)` = min(K, num_classes).
    """

    path: Path
    probabilities: np.ndarray
    top: tuple[tuple[str, float], ...]


def load_run(run_dir: Path, weights: str = "final"):
    """The model of `run_dir` with the chosen weights, and its manifest: (keras.Model, manifest dict).

    The architecture (and compile settings) come from best.keras; with `weights="final"` its
    variables are then replaced by final.weights.h5 (`model.save_weights` after the last epoch).

    Raises:
        LenetKerasError: `weights` is not one of `WEIGHTS`; `run_dir` is not a folder; its
            best.keras, final.weights.h5 (a run that has not completed) or manifest.json is
            missing or unreadable (the message names the file; `manifest.read_run_manifest`).
    """
    if weights not in WEIGHTS:
        raise LenetKerasError(f"--weights {weights!r}: expected one of {', '.join(WEIGHTS)}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LenetKerasError(f"{run_dir}: not a run directory (no such folder)")
    manifest = read_run_manifest(run_dir)
    checkpoint, final = run_dir / "best.keras", run_dir / "final.weights.h5"
    if not checkpoint.is_file():
        raise LenetKerasError(f"{checkpoint}: missing; is {run_dir} a run directory of a run that completed an epoch?")
    if weights == "final" and not final.is_file():
        raise LenetKerasError(f"{final}: missing; the run's status is {manifest.get('status', 'unknown')!r} "
                              f"(final weights are written when a run completes; --weights best serves {checkpoint.name})")
    import keras

    import lenet_keras.models  # noqa: F401  (registers the custom model classes for load_model)

    try:
        model = keras.models.load_model(checkpoint)
        if weights == "final":
            model.load_weights(final)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise LenetKerasError(f"{final if weights == 'final' else checkpoint}: cannot load the weights ({error})") from error
    return model, manifest


def expected_shape(model) -> tuple[int, int, int]:
    """(height, width, channels) of the images `model` takes, from its input shape (None, H, W, C).

    Raises:
        LenetKerasError: the model's input is not a fixed-size (H, W, C) image.
    """
    shape = tuple(model.input_shape)
    if len(shape) != 4 or any(not isinstance(n, int) for n in shape[1:]):
        raise LenetKerasError(f"the model's input shape {shape} is not (batch, height, width, channels)")
    return shape[1], shape[2], shape[3]


def class_names(manifest: dict, num_classes: int) -> list[str]:
    """The run's class names (manifest["data"]["class_names"]), or "0".."N-1" when not recorded."""
    names = list((manifest.get("data") or {}).get("class_names") or [])
    return [str(n) for n in names] if len(names) == num_classes else [str(i) for i in range(num_classes)]


def scaling(manifest: dict) -> tuple[list[float], list[float]]:
    """The run's (mean, std) from manifest["config"]["data"] (empty lists: pixels / 255 only)."""
    data = (manifest.get("config") or {}).get("data") or {}
    return list(data.get("mean") or []), list(data.get("std") or [])


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The image files named by `paths`, in order: a file as given, a folder's PNG/JPEG files sorted by name.

    Raises:
        LenetKerasError: a path does not exist, or a folder holds no PNG/JPEG file.
    """
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                           key=lambda p: p.name)
            if not found:
                raise LenetKerasError(f"{path}: folder holds no image file ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise LenetKerasError(f"{path}: no such file or folder")
    return files


def read_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """The pixels of the PNG/JPEG file `path` as uint8 (H, W, C), checked against `shape` = (H, W, C).

    Grayscale ("L", or 1-bit) is 1 channel, RGB (or a palette without transparency) 3; nothing
    is resized or converted between grayscale and colour.

    Raises:
        LenetKerasError: not a readable image, another mode (e.g. RGBA, 16-bit), or its size or
            channels differ from `shape` (the message names the file, what it is, what is expected).
    """
    from PIL import Image, UnidentifiedImageError

    height, width, channels = shape
    want = f"the run expects {width}x{height} images with {channels} channel{'s' if channels > 1 else ''} " \
           f"({'grayscale' if channels == 1 else 'RGB'}); images are not resized or converted"
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError) as error:
        raise LenetKerasError(f"{path}: not a readable PNG/JPEG image ({error})") from error
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    got = CHANNELS_OF_MODE.get(image.mode)
    if got is None:
        raise LenetKerasError(f"{path}: {image.width}x{image.height} image in mode {image.mode} "
                              f"({len(image.getbands())} channels); {want}")
    if (image.height, image.width, got) != (height, width, channels):
        raise LenetKerasError(f"{path}: {image.width}x{image.height} image with {got} channel{'s' if got > 1 else ''}; "
                              f"{want}")
    return np.asarray(image, dtype=np.uint8).reshape(height, width, channels)


def top_classes(probabilities: np.ndarray, names: Sequence[str], k: int) -> tuple[tuple[str, float], ...]:
    """The `k` most probable (class name, probability) of one image's (num_classes,) probabilities,
    most probable first (ties: the lower class index first)."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return tuple((names[i], float(probabilities[i])) for i in order)


def predict_files(run_dir: Path, paths: Sequence[Path], top: int = 3, weights: str = "final") -> list[Prediction]:
    """Classify the image files named by `paths` (files and folders) with `run_dir`'s `weights`
    ("final": the weights of the manifest's test accuracy; "best": best.keras).

    Each image is read as uint8 (H, W, C), scaled with `pipeline.normalize(images, mean, std)`
    (the run's manifest config.data.mean/std) into float32 (N, H, W, C), and put through the
    model: float32 (N, num_classes) probabilities.

    Raises:
        LenetKerasError: `top` < 1, a missing run file (see `load_run`), path or folder, or an
            image that does not fit the model (see `read_image`).
    """
    if top < 1:
        raise LenetKerasError(f"--top must be at least 1, not {top}")
    files = image_files(paths)
    model, manifest = load_run(run_dir, weights)
    shape = expected_shape(model)
    images = np.stack([read_image(path, shape) for path in files])
    mean, std = scaling(manifest)
    probabilities = np.asarray(model.predict(normalize(images, mean, std), verbose=0), dtype=np.float32)
    names = class_names(manifest, probabilities.shape[1])
    return [Prediction(path, row, top_classes(row, names, top)) for path, row in zip(files, probabilities)]


def format_prediction(prediction: Prediction) -> str:
    """One printed line: `PATH: CLASS PROBABILITY, CLASS PROBABILITY, ...` (probabilities to 4 decimals)."""
    return f"{prediction.path}: " + ", ".join(f"{name} {p:.4f}" for name, p in prediction.top)


def write_csv(predictions: Sequence[Prediction], out: Path) -> Path:
    """Write `predictions` to the CSV file `out` (columns `CSV_COLUMNS`, one row per image and rank,
    probability with 6 decimals; temp file + rename, never half-written) and return `out`.

    Raises:
        LenetKerasError: the file cannot be written.
    """
    out = Path(out)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for prediction in predictions:
        for rank, (name, probability) in enumerate(prediction.top, start=1):
            writer.writerow([str(prediction.path), rank, name, f"{probability:.6f}"])
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text.getvalue())
    except OSError as error:
        raise LenetKerasError(f"{out}: cannot write the CSV ({error})") from error
    return out


def default_export_dir(run_dir: Path) -> Path:
    """Where `export` writes without `out`: RUN_DIR/export/savedmodel."""
    return Path(run_dir) / "export" / "savedmodel"


def export(run_dir: Path, out: Path | None = None, weights: str = "final") -> Path:
    """Write `run_dir`'s model with its `weights` (see `load_run`) as a TensorFlow SavedModel into the new folder `out`
    (default `default_export_dir(run_dir)`) and return it.

    `model.export(out, format="tf_saved_model")`: endpoint `serve` takes float32 (N, H, W, C)
    images scaled as the run's pipelines scale them (see `predict_files`) and returns float32
    (N, num_classes) probabilities. Written beside `out` under a temporary name, then renamed,
    so a failed export leaves no partial `out`.

    Raises:
        LenetKerasError: `out` already exists, or a run file is missing (see `load_run`).
    """
    out = Path(out) if out is not None else default_export_dir(run_dir)
    if out.exists():
        raise LenetKerasError(f"{out}: already exists; not overwriting it (remove it or give another --out)")
    model, _ = load_run(run_dir, weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.parent / f".tmp-{out.name}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        model.export(str(temporary), format="tf_saved_model", verbose=False)
        temporary.rename(out)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return out
