"""Train a NumPy LeNet-5 (the deck's or the 1998 one) with an experiment's recipe, into a run directory.

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
from lenet_keras.paper1998 import curvature_draw
from lenet_keras.scratch import layers as L
from lenet_keras.scratch.lenet1998 import ScratchLeNet5_1998, StochasticDiagonalLM
from lenet_keras.scratch.network import SGD, ScratchLeNet5

PROGRESS_EVERY = 10_000
"""Updates between the progress lines of a long pass (`_train_epoch`)."""
COLUMNS = ("epoch", "accuracy", "epoch_seconds", "learning_rate", "loss", "val_accuracy", "val_loss")
"""history.csv columns, in the order Keras runs write them (each row dict is built in this order)."""


class DeckRecipe:
    """The deck's LeNet-5 (`ScratchLeNet5`, Glorot-uniform from the seed) with SGD + momentum under
    Keras's `ExponentialDecay`; softmax cross-entropy. Each epoch shuffles the training set with
    `numpy.random.default_rng([seed, epoch])`."""

    model = "lenet5"

    @staticmethod
    def problems(experiment: config_lib.Experiment) -> list[str]:
        """What this recipe does not implement, one phrase per key."""
        problems = []
        if experiment.optimizer.name != "sgd" or experiment.optimizer.nesterov or experiment.optimizer.global_clipnorm:
            problems.append("optimizer (only 'sgd' with momentum, no nesterov, no global_clipnorm)")
        if experiment.schedule.name not in ("exponential_decay", "constant"):
            problems.append(f"schedule.name = {experiment.schedule.name!r} (only 'exponential_decay' or 'constant')")
        return problems

    def __init__(self, experiment: config_lib.Experiment, dataset: data_lib.ImageData):
        schedule = experiment.schedule
        self.network = ScratchLeNet5(dataset.image_shape, dataset.num_classes, seed=experiment.seed)
        self.optimizer = SGD(experiment.optimizer.learning_rate, experiment.optimizer.momentum, schedule.decay_steps,
                             schedule.decay_rate if schedule.name == "exponential_decay" else 1.0, schedule.staircase)
        self.seed, self.num_classes = experiment.seed, dataset.num_classes

    def order(self, epoch: int, count: int) -> np.ndarray:
        """The training images' order in `epoch`."""
        return np.random.default_rng([self.seed, epoch]).permutation(count)

    def start_epoch(self, epoch: int, images: np.ndarray) -> None:
        """Nothing to do before an epoch."""

    def learning_rate(self, epoch: int) -> float:
        """The learning rate the next update uses."""
        return self.optimizer.current_learning_rate()

    def step(self, images: np.ndarray, labels: np.ndarray, learning_rate: float) -> tuple[float, int]:
        """One update on a batch (the optimizer's own decayed rate; `learning_rate` is
        `learning_rate(epoch)`): (mean loss before it, correct predictions before it)."""
        targets = np.eye(self.num_classes, dtype=images.dtype)[labels]
        loss, logits = self.network.loss_and_gradients(images, targets)
        if np.isfinite(loss):
            self.optimizer.apply(self.network)
        return loss, int((logits.argmax(1) == labels).sum())

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, float, np.ndarray]:
        """(mean cross-entropy, top-1 accuracy as a fraction, probabilities (N, classes) float32)."""
        probabilities = self.network.predict(images).astype(np.float32)
        picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
        return float(-np.log(picked).mean()), float((probabilities.argmax(1) == labels).mean()), probabilities


class Paper1998Recipe:
    """LeCun et al.'s 1998 LeNet-5 (`ScratchLeNet5_1998`, weights uniform in +-2.4 / fan-in from
    the seed) trained as the paper did (Appendix C): one stochastic diagonal Levenberg-Marquardt
    update per pattern, h_kk re-estimated before each epoch on `optimizer.curvature_patterns`
    training images of `paper1998.curvature_draw` (the Keras run's draw), the schedule's per-epoch learning rates, the MAP criterion
    (Eq. 9) as the loss. The images come in one order, `default_rng([seed, 0])`, every epoch
    (`train.reshuffle_each_epoch = false`) or `default_rng([seed, epoch])`."""

    model = "lenet5_1998"

    @staticmethod
    def problems(experiment: config_lib.Experiment) -> list[str]:
        """What this recipe does not implement, one phrase per key."""
        problems = []
        if experiment.optimizer.name != "sdlm":
            problems.append(f"optimizer.name = {experiment.optimizer.name!r} (only 'sdlm')")
        if experiment.schedule.name not in ("piecewise_constant", "constant"):
            problems.append(f"schedule.name = {experiment.schedule.name!r} (only 'piecewise_constant' or 'constant')")
        if experiment.train.batch_size != 1:
            problems.append(f"train.batch_size = {experiment.train.batch_size} (only 1: one update per pattern)")
        return problems

    def __init__(self, experiment: config_lib.Experiment, dataset: data_lib.ImageData):
        self.network = ScratchLeNet5_1998(experiment.model.rubbish_penalty, seed=experiment.seed)
        self.optimizer = StochasticDiagonalLM(experiment.optimizer.damping)
        self.experiment, self.seed = experiment, experiment.seed

    def order(self, epoch: int, count: int) -> np.ndarray:
        """The training images' order in `epoch`."""
        key = epoch if self.experiment.train.reshuffle_each_epoch else 0
        return np.random.default_rng([self.seed, key]).permutation(count)

    def start_epoch(self, epoch: int, images: np.ndarray) -> None:
        """h_kk from this epoch's draw of training images (Appendix C: before each pass)."""
        chosen = curvature_draw(self.seed, epoch, len(images), self.experiment.optimizer.curvature_patterns)
        self.optimizer.curvature = self.network.gauss_newton_diagonal(images[chosen])

    def learning_rate(self, epoch: int) -> float:
        """eta of `epoch`: `schedule.learning_rates[i]`, i the boundaries passed (or the constant rate)."""
        schedule = self.experiment.schedule
        if schedule.name == "constant":
            return self.experiment.optimizer.learning_rate
        return float(schedule.learning_rates[sum(epoch >= b for b in schedule.epoch_boundaries)])

    def step(self, images: np.ndarray, labels: np.ndarray, learning_rate: float) -> tuple[float, int]:
        """One SDLM update at eta = `learning_rate`: (the criterion before it, correct predictions before it)."""
        loss, penalties = self.network.loss_and_gradients(images, labels)
        if np.isfinite(loss):
            self.optimizer.apply(self.network, learning_rate)
        return loss, int((penalties.argmin(1) == labels).sum())

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, float, np.ndarray]:
        """(mean MAP criterion, top-1 accuracy as a fraction, softmax(-penalties) (N, 10) float32)."""
        losses, probabilities = [], []
        for first in range(0, len(images), 1000):
            penalties = self.network.penalties(images[first : first + 1000])
            losses.append(self.network.criterion(penalties, labels[first : first + 1000]))
            probabilities.append(L.softmax(-penalties))
        probabilities = np.concatenate(probabilities).astype(np.float32)
        return float(np.concatenate(losses).mean()), float((probabilities.argmax(1) == labels).mean()), probabilities


RECIPES = {recipe.model: recipe for recipe in (DeckRecipe, Paper1998Recipe)}
"""Registry: `model.name` -> the NumPy engine's network and optimizer for it."""


def check_supported(experiment: config_lib.Experiment) -> None:
    """Refuse what the NumPy engine does not implement.

    Raises:
        ConfigError: naming the key: a model without a NumPy recipe (`RECIPES`), what that recipe
            refuses (`problems`), any augmentation, label smoothing, or a precision other than float32.
    """
    recipe = RECIPES.get(experiment.model.name)
    problems = recipe.problems(experiment) if recipe else [
        f"model.name = {experiment.model.name!r} (only {', '.join(repr(name) for name in RECIPES)})"]
    if experiment.augment != config_lib.AugmentConfig():
        problems.append("[augment] (no augmentation)")
    if experiment.train.label_smoothing:
        problems.append("train.label_smoothing (must be 0)")
    if experiment.train.precision != "float32":
        problems.append("train.precision (only 'float32')")
    if problems:
        raise ConfigError("the NumPy engine does not support " + "; ".join(problems))


def _train_epoch(recipe, images: np.ndarray, labels: np.ndarray, order: np.ndarray, batch_size: int, epoch: int,
                 run_dir: Path, verbose: bool) -> tuple[float, float]:
    """One pass over `images` in `order`, one update a batch; (mean loss, accuracy as a fraction).
    With `verbose`, a pass of more than 10,000 updates prints a progress line (updates done, images/s)
    every 10,000.

    Raises:
        TrainingDivergedError: a batch's loss is NaN or infinite (checked before its update, as
            Keras's `TerminateOnNaN` stops at that batch); the message names `epoch` (from 0, shown
            from 1), the batch and `run_dir`.
    """
    loss_sum = correct = 0.0
    learning_rate, batches, start = recipe.learning_rate(epoch), range(0, len(order), batch_size), time.perf_counter()
    for number, first in enumerate(batches, start=1):
        index = order[first : first + batch_size]
        loss, right = recipe.step(images[index], labels[index], learning_rate)
        if not np.isfinite(loss):
            raise TrainingDivergedError(
                f"training loss became {loss} in epoch {epoch + 1}, batch {number} (learning rate too high?); "
                f"training stopped there (run directory {run_dir})")
        correct += right
        loss_sum += loss * len(index)
        if verbose and len(batches) > PROGRESS_EVERY and number % PROGRESS_EVERY == 0:
            print(f"  epoch {epoch + 1}: {number:,}/{len(batches):,} updates, "
                  f"{first + len(index):,} images at {(first + len(index)) / (time.perf_counter() - start):.0f} "
                  f"images/s, loss {loss_sum / (first + len(index)):.4f}", flush=True)
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
    """Train the NumPy network of `experiment`'s model (`RECIPES`: the deck's LeNet-5 or the 1998
    one) with its data, seed, optimizer, schedule, epochs and batch size.

    The recipe orders the images and initializes the weights from `seed` (`DeckRecipe`,
    `Paper1998Recipe`). Prints one line per epoch when `verbose`.

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
    recipe = RECIPES[experiment.model.name](experiment, dataset)
    epochs = experiment.train.epochs
    run_dir = rundir.new_run_dir(Path(runs_dir) / experiment.name, prefix="numpy")
    manifest = rundir.start_manifest(experiment, run_dir, rundir.data_block(dataset),
                                     {"name": f"{experiment.model.name} (NumPy)",
                                      "parameters": recipe.network.count_params()}, started,
                                     engine="numpy (lenet_keras.scratch)")
    rundir.write_manifest(run_dir, manifest)
    hparams_log.write_run_session(run_dir, manifest)
    rows, validation_seconds = [], 0.0
    scalars = hparams_log.EpochScalars(run_dir / "tensorboard")
    try:
        for epoch in range(epochs):
            start = time.perf_counter()
            recipe.start_epoch(epoch, train_x)
            loss, accuracy = _train_epoch(recipe, train_x, dataset.train_labels, recipe.order(epoch, len(train_x)),
                                          experiment.train.batch_size, epoch, run_dir, verbose)
            validation_start = time.perf_counter()
            val_loss, val_accuracy, _ = recipe.evaluate(val_x, dataset.val_labels)
            validation_seconds += time.perf_counter() - validation_start
            rows.append({"epoch": epoch, "accuracy": accuracy, "epoch_seconds": time.perf_counter() - start,
                         "learning_rate": recipe.learning_rate(epoch), "loss": loss,
                         "val_accuracy": val_accuracy, "val_loss": val_loss})
            write_history(run_dir / "history.csv", rows)
            scalars.write(rows[-1])
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f} accuracy {accuracy:.4f} val_loss {val_loss:.4f} "
                      f"val_accuracy {val_accuracy:.4f} ({rows[-1]['epoch_seconds']:.1f} s)", flush=True)
        test = recipe.evaluate(test_x, dataset.test_labels)
        scalars.write_test(epochs, test[0], test[1])
    except BaseException as error:
        rundir.record_failure(run_dir, manifest, error, t0)
        error.run_dir = run_dir  # named by the CLI's interrupted line
        raise
    finally:
        scalars.close()
    _finish(run_dir, manifest, rows, dataset, test, t0, validation_seconds)
    return run_dir
