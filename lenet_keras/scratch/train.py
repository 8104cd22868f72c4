"""Train the NumPy LeNet-5 with an experiment's recipe into a run directory Keras runs sit beside.

`run(experiment)` writes `runs/<experiment>/numpy-NNN/` with the files the report reads:
`history.csv` (the Keras columns: epoch, accuracy, epoch_seconds, learning_rate, loss,
val_accuracy, val_loss), `manifest.json` (engine "numpy", config, versions, data checksums,
machine, status, test metrics), `predictions.npz` and `tensorboard/`: the run's HParams session,
each epoch's scalars in train/ and validation/ and the test scalars in test/, under the tags a
Keras run writes (`epoch_accuracy`, `epoch_loss`, ...; `lenet_keras.hparams_log`, without
TensorFlow). So `python -m lenet_keras report mnist_lenet5` overlays the NumPy and Keras
learning curves, the comparison the LeNet paper seed (000) draws between its from-scratch and
framework networks.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lenet_keras import config as config_lib
from lenet_keras import data as data_lib
from lenet_keras import hparams_log
from lenet_keras import manifest as manifest_lib
from lenet_keras import rundir
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


def _finish(run_dir: Path, manifest: dict, rows: list[dict], dataset: data_lib.ImageData,
            test: tuple[float, float, np.ndarray], t0: float, validation_seconds: float) -> None:
    """Write predictions.npz and the completed manifest (`lenet_keras.rundir`; training and
    validation seconds apart, `rundir.seconds_block`)."""
    test_loss, test_accuracy, probabilities = test
    rundir.write_predictions(run_dir, dataset, probabilities)
    manifest.update(**rundir.completion_summary(rows, test_loss, test_accuracy, t0),
                    **rundir.seconds_block(sum(row["epoch_seconds"] for row in rows), validation_seconds))
    rundir.write_manifest(run_dir, manifest)


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
    run_dir = rundir.new_run_dir(Path(runs_dir) / experiment.name, prefix="numpy")
    manifest = rundir.start_manifest(experiment, run_dir, rundir.data_block(dataset),
                                     {"name": "lenet5 (NumPy)", "parameters": network.count_params()}, started,
                                     engine="numpy (lenet_keras.scratch)")
    rundir.write_manifest(run_dir, manifest)
    hparams_log.write_run_session(run_dir, manifest)
    rows, validation_seconds = [], 0.0
    scalars = hparams_log.EpochScalars(run_dir / "tensorboard")
    try:
        for epoch in range(epochs):
            start = time.perf_counter()
            order = np.random.default_rng([experiment.seed, epoch]).permutation(len(train_x))
            loss, accuracy = _train_epoch(network, optimizer, train_x, targets, dataset.train_labels, order,
                                          experiment.train.batch_size, epoch, run_dir)
            validation_start = time.perf_counter()
            val_loss, val_accuracy, _ = _evaluate(network, val_x, dataset.val_labels)
            validation_seconds += time.perf_counter() - validation_start
            rows.append({"epoch": epoch, "accuracy": accuracy, "epoch_seconds": time.perf_counter() - start,
                         "learning_rate": optimizer.current_learning_rate(), "loss": loss,
                         "val_accuracy": val_accuracy, "val_loss": val_loss})
            write_history(run_dir / "history.csv", rows)
            scalars.write(rows[-1])
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f} accuracy {accuracy:.4f} val_loss {val_loss:.4f} "
                      f"val_accuracy {val_accuracy:.4f} ({rows[-1]['epoch_seconds']:.1f} s)", flush=True)
        test = _evaluate(network, test_x, dataset.test_labels)
        scalars.write_test(epochs, test[0], test[1])
    except BaseException as error:
        rundir.record_failure(run_dir, manifest, error, t0)
        error.run_dir = run_dir  # named by the CLI's interrupted line
        raise
    finally:
        scalars.close()
    _finish(run_dir, manifest, rows, dataset, test, t0, validation_seconds)
    return run_dir
