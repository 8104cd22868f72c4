"""The run directory's one home, for every engine (Keras, the NumPy network, peers recorded as runs).

    runs/<experiment>/<run_id>/
        manifest.json      resolved config, seed, versions, data checksums, machine, git,
                           start/end UTC, wall seconds, status, warnings, final test metrics
        history.csv        per epoch: epoch (0-based), loss, accuracy, val_loss, val_accuracy,
                           learning_rate, epoch_seconds (wall seconds of the epoch)
        predictions.npz    test labels, predicted probabilities and a few sample images
        (Keras runs add best.keras, final.weights.h5, backup/ and tensorboard/: `lenet_keras.train`)

This module allocates the directory (`new_run_dir`), builds the manifest's blocks
(`start_manifest`, `data_block`), records a failure (`record_failure`) and a completion
(`completion_summary`), and writes `predictions.npz` (`write_predictions`). It imports neither
TensorFlow nor Keras. Every file is written through `manifest.atomic_path` (temp file + rename).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from lenet_keras import config as config_lib
from lenet_keras import manifest as manifest_lib
from lenet_keras.errors import RunDirectoryError

MANIFEST = "manifest.json"
PREDICTIONS = "predictions.npz"

SAMPLE_IMAGES = 32
"""How many test images `predictions.npz` keeps for the sample-predictions grid."""

SAMPLE_TITLE = f"the first {SAMPLE_IMAGES // 2} test images, then the first mistakes"
"""How `sample_indices` chooses them, as the grid's title says."""


def new_run_dir(experiment_dir: Path, run_id: str | None = None, prefix: str = "run") -> Path:
    """Create and return a fresh run directory under `experiment_dir`.

    With `run_id` None the id is `<prefix>-NNN` (`run-NNN` for Keras runs, `numpy-NNN` for
    `lenet_keras.scratch`), one more than the largest existing number of that prefix.

    Raises:
        RunDirectoryError: `run_id` is not a plain folder name, or that directory already exists.
    """
    experiment_dir.mkdir(parents=True, exist_ok=True)
    if run_id is not None and not config_lib.SAFE_NAME.fullmatch(run_id):
        raise RunDirectoryError(f"--run-id {run_id!r}: use letters, digits, '_', '.', '-' (no leading dot)")
    if run_id is not None:
        path = experiment_dir / run_id
        try:
            path.mkdir()
        except FileExistsError:
            raise RunDirectoryError(f"run directory {path} already exists; runs are never overwritten") from None
        return path
    numbers = [int(m.group(1)) for p in experiment_dir.iterdir()
               if (m := re.fullmatch(rf"{re.escape(prefix)}-(\d+)", p.name))]
    number = max(numbers, default=0) + 1
    while True:
        path = experiment_dir / f"{prefix}-{number:03d}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another process took it meanwhile
            number += 1


def next_numbered_path(folder: Path, prefix: str, suffix: str) -> Path:
    """Create and return a fresh empty file `folder/<prefix>-NNN<suffix>` (e.g. `bench-007.json`).

    NNN is one more than the largest existing number of that prefix and suffix (names whose middle
    is not a number, such as `bench-old.json`, are ignored). The file is created exclusively
    (O_EXCL), so the name is reserved: when another process took it meanwhile, the next number is
    tried, as `new_run_dir` does. `folder` is created if missing; the caller then writes the file
    (e.g. through `manifest.atomic_path`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pattern = rf"{re.escape(prefix)}-(\d+){re.escape(suffix)}"
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(pattern, p.name))]
    number = max(numbers, default=0) + 1
    while True:
        path = folder / f"{prefix}-{number:03d}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return path
        except FileExistsError:  # another process took it meanwhile
            number += 1


def config_block(experiment: config_lib.Experiment) -> dict[str, Any]:
    """The resolved config as manifest.json records it (JSON types: lists, not tuples), so it
    compares equal to a manifest's `config` read back (`resume.check_resumable`)."""
    return json.loads(json.dumps(experiment.to_dict()))


def data_block(dataset, validation_note: str = "") -> dict[str, Any]:
    """The manifest's `data` block of a `data.ImageData`: name, description, source, checksums,
    class names, image counts per split, how the validation split was made (+ `validation_note`)
    and whether the validation set is the test set (`validation_is_test`, read by
    `run_index.validation_is_test`)."""
    return {
        "dataset": dataset.name,
        "description": dataset.description,
        "source": dataset.source,
        "checksums_sha256": dataset.checksums,
        "class_names": list(dataset.class_names),
        "train_images": len(dataset.train_images),
        "val_images": len(dataset.val_images),
        "test_images": len(dataset.test_images),
        "validation": dataset.validation + validation_note,
        "validation_is_test": bool(dataset.validation_is_test),
    }


def process_block() -> dict[str, Any]:
    """{"pid", "process_start", "host", "command"} of this process: `process_start` tells this
    process from a later one that reuses its pid (`manifest.process_start`), the command has its
    passwords masked."""
    return {"pid": os.getpid(), "process_start": manifest_lib.process_start(os.getpid()), "host": socket.gethostname(),
            "command": manifest_lib.command_line()}


def start_manifest(experiment: config_lib.Experiment, run_dir: Path, data: dict, model: dict, started_utc: str,
                   **blocks) -> dict[str, Any]:
    """The manifest of a run as it starts (status "running"); `blocks` add engine-specific keys
    (e.g. `engine`, `distribution`). Call `write_manifest` to write it."""
    return {
        "experiment": experiment.name, "run_id": run_dir.name, "status": "running", "error": None,
        "seed": experiment.seed, "config": config_block(experiment), **process_block(), **blocks, "data": data, "model": model,
        "versions": manifest_lib.versions(), "machine": manifest_lib.machine(),
        "git": manifest_lib.git_state(Path(__file__).resolve().parent), "started_utc": started_utc,
    }


def write_manifest(run_dir: Path, manifest: dict) -> None:
    """Write `run_dir/manifest.json` atomically."""
    manifest_lib.write_json_atomic(Path(run_dir) / MANIFEST, manifest)


def record_failure(run_dir: Path, manifest: dict, error: BaseException, t0: float, **extra) -> None:
    """Record status "interrupted" (KeyboardInterrupt) or "failed", the one-line error, the end
    time and the wall seconds since `t0` (`time.perf_counter()`) in the run's manifest."""
    manifest.update(
        **extra,
        status="interrupted" if isinstance(error, KeyboardInterrupt) else "failed",
        error="".join(traceback.format_exception_only(type(error), error)).strip(),
        ended_utc=manifest_lib.utc_now(),
        wall_seconds=round(time.perf_counter() - t0, 3),
    )
    write_manifest(run_dir, manifest)


def sample_indices(labels: np.ndarray, predicted: np.ndarray, count: int = SAMPLE_IMAGES) -> np.ndarray:
    """The first `count`/2 test images plus the first mistakes, topped up to `count`, in order.

    labels, predicted: int (N,) class indices. Returns sorted int64 indices (min(count, N),).
    """
    first = np.arange(min(count // 2, len(labels)))
    mistakes = np.flatnonzero(predicted != labels)
    mistakes = mistakes[~np.isin(mistakes, first)][: count - len(first)]
    chosen = np.concatenate([first, mistakes])
    if len(chosen) < count:
        rest = np.setdiff1d(np.arange(len(labels)), chosen)[: count - len(chosen)]
        chosen = np.concatenate([chosen, rest])
    return np.sort(chosen)


def write_predictions(run_dir: Path, dataset, probabilities: np.ndarray, **arrays: np.ndarray) -> np.ndarray:
    """Write `predictions.npz`: test labels (N,) int64, probabilities (N, classes) float32, the
    sample indices and images (`sample_indices`), class names and the samples' title, plus
    `arrays` (e.g. `tta_probabilities`, `augmentation_preview`). Returns the sample indices."""
    samples = sample_indices(dataset.test_labels, probabilities.argmax(axis=1))
    with manifest_lib.atomic_path(Path(run_dir) / PREDICTIONS) as tmp:
        np.savez_compressed(
            tmp, labels=dataset.test_labels, probabilities=probabilities, sample_indices=samples,
            sample_images=dataset.test_images[samples], class_names=np.array(dataset.class_names),
            sample_title=np.array(SAMPLE_TITLE), **arrays,
        )
    return samples


def seconds_block(epoch_seconds: float, validation_seconds: float | None) -> dict[str, float | None]:
    """The manifest's `training_seconds` and `validation_seconds` of every engine, from the wall
    seconds of its epochs (training steps and per-epoch validation passes, `epoch_seconds` summed)
    and those of the validation passes alone: training = epochs - validation. With
    `validation_seconds` None (a program that does not time its validation apart) both are None,
    and only the epoch seconds (validation included) are known."""
    if validation_seconds is None:
        return {"training_seconds": None, "validation_seconds": None}
    return {"training_seconds": round(float(epoch_seconds) - float(validation_seconds), 3),
            "validation_seconds": round(float(validation_seconds), 3)}


def completion_summary(rows: list[dict], test_loss: float, test_accuracy: float, t0: float) -> dict[str, Any]:
    """The manifest keys of a completed run from its history rows (dicts with loss, accuracy,
    val_loss, val_accuracy; strings or floats): status, epochs_completed, best (the epoch of best
    val_accuracy, 0-based), final (the last epoch's metrics), test (fractions; final weights),
    ended_utc and wall_seconds since `t0`."""
    val_accuracy = [float(row["val_accuracy"]) for row in rows]
    best = int(np.argmax(val_accuracy))
    return {
        "status": "completed",
        "epochs_completed": len(rows),
        "best": {"epoch": best, "val_accuracy": val_accuracy[best]},
        "final": {key: float(rows[-1][key]) for key in ("loss", "accuracy", "val_loss", "val_accuracy")},
        "test": {"loss": float(test_loss), "accuracy": float(test_accuracy), "weights": "final epoch"},
        "ended_utc": manifest_lib.utc_now(),
        "wall_seconds": round(time.perf_counter() - t0, 3),
    }
