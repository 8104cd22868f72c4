"""Train the NumPy LeNet-5 with an experiment's recipe into a run directory Keras runs sit beside.

`run(experiment)` writes `runs/<experiment>/numpy-NNN/` with the files the report reads:
`history.csv` (the Keras columns: epoch, accuracy, epoch_seconds, learning_rate, loss,
val_accuracy, val_loss), `manifest.json` (engine "numpy", config, versions, data checksums,
machine, status, test metrics) and `predictions.npz`. So `python -m lenet_keras report
mnist_lenet5` overlays the NumPy and Keras learning curves, the comparison the LeNet paper seed
(000) draws between its from-scratch and framework networks.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import numpy as np

from lenet_keras import config as config_lib
from lenet_keras import data as data_lib
from lenet_keras import manifest as manifest_lib
from lenet_keras.errors import ConfigError, TrainingDivergedError
from lenet_keras.resume import write_history
from lenet_keras.scratch.network import SGD, ScratchLeNet5

COLUMNS = ("epoch", "accuracy", "epoch_seconds", "learning_rate", "loss", "val_accuracy", "val_loss")
"""history.csv columns, in the order Keras runs write them (each row dict is built in this order)."""


def check_supported(experiment: config_lib.Experiment) -> None:
    """Refuse what the NumPy network does not implement (it has the deck's recipe only).

    Raises:
        ConfigError: naming the key: model other than lenet5, optimizer other than sgd (no
            Nesterov, no clipping), schedule other than exponential_decay/constant, any
            augmentation, label smoothing, or a precision other than float32.
    """
    problems = []
    if experiment.model.name != "lenet5":
        problems.append(f"model.name = {experiment.model.name!r} (only 'lenet5', the deck's)")
    if experiment.optimizer.name != "sgd" or experiment.optimizer.nesterov or experiment.optimizer.global_clipnorm:
        problems.append("optimizer (only 'sgd' with momentum, no nesterov, no global_clipnorm)")
    if experiment.schedule.name not in ("exponential_decay", "constant"):
        problems.append(f"schedule.name = {experiment.schedule.name!r} (only 'exponential_decay' or 'constant')")
    if experiment.augment != config_lib.AugmentConfig():
        problems.append("[augment] (no augmentation)")
    if experiment.train.label_smoothing:
        problems.append("train.label_smoothing (must be 0)")
    if experiment.train.precision != "float32":
        problems.append("train.precision (only 'float32')")
    if problems:
        raise ConfigError("the NumPy LeNet-5 does not support " + "; ".join(problems))


def _evaluate(network: ScratchLeNet5, images: np.ndarray, labels: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(mean cross-entropy, top-1 accuracy as a fraction, probabilities (N, classes) float32)."""
    probabilities = network.predict(images).astype(np.float32)
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.log(picked).mean()), float((probabilities.argmax(1) == labels).mean()), probabilities


def _train_epoch(network: ScratchLeNet5, optimizer: SGD, images: np.ndarray, targets: np.ndarray,
                 labels: np.ndarray, order: np.ndarray, batch_size: int, epoch: int, run_dir: Path) -> tuple[float, float]:
    """One pass over `images` in `order`, one SGD update a batch; (mean loss, accuracy as a fraction).

    Raises:
        TrainingDivergedError: a batch's loss is NaN or infinite (checked before its update, as
            Keras's `TerminateOnNaN` stops at that batch); the message names `epoch` (from 0, shown
            from 1), the batch and `run_dir`.
    """
    loss_sum = correct = 0.0
    for number, first in enumerate(range(0, len(order), batch_size), start=1):
        index = order[first : first + batch_size]
        loss, logits = network.loss_and_gradients(images[index], targets[index])
        if not np.isfinite(loss):
            raise TrainingDivergedError(
                f"training loss became {loss} in epoch {epoch + 1}, batch {number} (learning rate too high?); "
                f"training stopped there (run directory {run_dir})")
        correct += float((logits.argmax(1) == labels[index]).sum())
        loss_sum += loss * len(index)
        optimizer.apply(network)
    return loss_sum / len(order), correct / len(order)


def _new_manifest(experiment: config_lib.Experiment, dataset: data_lib.ImageData, network: ScratchLeNet5,
                  run_dir: Path, started: str) -> dict:
    """The manifest of a NumPy run as it starts (status "running")."""
    return {
        "experiment": experiment.name, "run_id": run_dir.name, "engine": "numpy (lenet_keras.scratch)",
        "status": "running", "error": None, "seed": experiment.seed, "config": experiment.to_dict(),
        "command": manifest_lib.command_line(),
        "data": {"dataset": dataset.name, "description": dataset.description, "source": dataset.source,
                 "checksums_sha256": dataset.checksums, "class_names": list(dataset.class_names),
                 "train_images": len(dataset.train_images), "val_images": len(dataset.val_images),
                 "test_images": len(dataset.test_images)},
        "model": {"name": "lenet5 (NumPy)", "parameters": network.count_params()},
        "versions": manifest_lib.versions(), "machine": manifest_lib.machine(),
        "git": manifest_lib.git_state(Path(__file__).resolve().parent), "started_utc": started,
    }


def _finish(run_dir: Path, manifest: dict, rows: list[dict], dataset: data_lib.ImageData,
            test: tuple[float, float, np.ndarray], t0: float) -> None:
    """Write predictions.npz and the completed manifest."""
    from lenet_keras.train import SAMPLE_TITLE, _sample_indices

    test_loss, test_accuracy, probabilities = test
    samples = _sample_indices(dataset.test_labels, probabilities.argmax(1))
    with manifest_lib.atomic_path(run_dir / "predictions.npz") as tmp:
        np.savez_compressed(tmp, labels=dataset.test_labels, probabilities=probabilities, sample_indices=samples,
                            sample_images=dataset.test_images[samples], class_names=np.array(dataset.class_names),
                            sample_title=np.array(SAMPLE_TITLE))
    val_accuracy = [row["val_accuracy"] for row in rows]
    best = int(np.argmax(val_accuracy))
    manifest.update(
        status="completed", epochs_completed=len(rows),
        best={"epoch": best, "val_accuracy": val_accuracy[best]},
        final={k: rows[-1][k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
        test={"loss": test_loss, "accuracy": test_accuracy, "weights": "final epoch"},
        training_seconds=round(sum(row["epoch_seconds"] for row in rows), 3),
        ended_utc=manifest_lib.utc_now(), wall_seconds=round(time.perf_counter() - t0, 3),
    )
    manifest_lib.write_json_atomic(run_dir / "manifest.json", manifest)


def run(experiment: config_lib.Experiment, runs_dir: str | Path = "runs", data_dir: str | Path | None = None,
        verbose: bool = True) -> Path:
    """Train the NumPy LeNet-5 with `experiment`'s data, seed, optimizer, schedule, epochs and batch size.

    Each epoch shuffles the training set with `numpy.random.default_rng([seed, epoch])`; weights
    start from Glorot-uniform with `seed`. Prints one line per epoch when `verbose`.

    Returns:
        The run directory `runs_dir/<experiment.name>/numpy-NNN/`.

    Raises:
        ConfigError: a recipe the NumPy network does not implement (`check_supported`).
        DataNotFoundError, ChecksumError: from `lenet_keras.data`.
        TrainingDivergedError: the training loss became NaN or infinite (training stops at that
            batch, as Keras runs do); the manifest says "failed".
        Any other training error is re-raised after the manifest records status "failed"
        ("interrupted" for KeyboardInterrupt).
    """
    from lenet_keras.train import new_run_dir

    check_supported(experiment)
    data_lib.check_name(experiment.data)
    started, t0 = manifest_lib.utc_now(), time.perf_counter()
    dataset = data_lib.load(experiment.data, data_dir)
    scale = np.float32(1 / 255)
    train_x, val_x, test_x = (a.astype(np.float32) * scale for a in
                              (dataset.train_images, dataset.val_images, dataset.test_images))
    targets = np.eye(dataset.num_classes, dtype=np.float32)[dataset.train_labels]
    network = ScratchLeNet5(dataset.image_shape, dataset.num_classes, seed=experiment.seed)
    schedule, epochs = experiment.schedule, experiment.train.epochs
    optimizer = SGD(experiment.optimizer.learning_rate, experiment.optimizer.momentum, schedule.decay_steps,
                    schedule.decay_rate if schedule.name == "exponential_decay" else 1.0, schedule.staircase)
    run_dir = new_run_dir(Path(runs_dir) / experiment.name, prefix="numpy")
    manifest = _new_manifest(experiment, dataset, network, run_dir, started)
    manifest_lib.write_json_atomic(run_dir / "manifest.json", manifest)
    rows = []
    try:
        for epoch in range(epochs):
            start = time.perf_counter()
            order = np.random.default_rng([experiment.seed, epoch]).permutation(len(train_x))
            loss, accuracy = _train_epoch(network, optimizer, train_x, targets, dataset.train_labels, order,
                                          experiment.train.batch_size, epoch, run_dir)
            val_loss, val_accuracy, _ = _evaluate(network, val_x, dataset.val_labels)
            rows.append({"epoch": epoch, "accuracy": accuracy, "epoch_seconds": time.perf_counter() - start,
                         "learning_rate": optimizer.current_learning_rate(), "loss": loss,
                         "val_accuracy": val_accuracy, "val_loss": val_loss})
            write_history(run_dir / "history.csv", rows)
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f} accuracy {accuracy:.4f} val_loss {val_loss:.4f} "
                      f"val_accuracy {val_accuracy:.4f} ({rows[-1]['epoch_seconds']:.1f} s)", flush=True)
        test = _evaluate(network, test_x, dataset.test_labels)
    except BaseException as error:
        manifest.update(status="interrupted" if isinstance(error, KeyboardInterrupt) else "failed",
                        error="".join(traceback.format_exception_only(type(error), error)).strip(),
                        ended_utc=manifest_lib.utc_now(), wall_seconds=round(time.perf_counter() - t0, 3))
        manifest_lib.write_json_atomic(run_dir / "manifest.json", manifest)
        raise
    _finish(run_dir, manifest, rows, dataset, test, t0)
    return run_dir
