"""The one training entry point: `run(experiment)` -> a self-describing run directory.

    runs/<experiment>/<run_id>/
        manifest.json      resolved config, seed, versions, data checksums, machine, git,
                           start/end UTC, wall seconds, status, final test metrics
        history.csv        per epoch: epoch (0-based), loss, accuracy, val_loss, val_accuracy,
                           learning_rate, epoch_seconds (wall seconds of the epoch)
        best.keras         the model at the epoch of best validation accuracy
        final.weights.h5   model and optimizer variables after the last epoch
        backup/            while training: the state after the last completed epoch, from
                           which `--resume` continues (removed once the run completes)
        predictions.npz    test labels, predicted probabilities and a few sample images
        tensorboard/       train/ and validation/ epoch scalars (incl. learning rate), the
                           graph and weight histograms; test/ final scalars and an image of
                           sample predictions

Every file others read is written via temp file + rename, so a kill at any moment leaves
each either complete or absent (`lenet_keras.resume`). Run ids are `run-001`, `run-002`, ...
(one more than the largest existing number); an existing run directory is never overwritten.
Everything is seeded from `experiment.seed` with TensorFlow op determinism on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from lenet_keras import airbench
from lenet_keras import config as config_lib
from lenet_keras import data as data_lib
from lenet_keras import distribute
from lenet_keras import manifest as manifest_lib
from lenet_keras import models, optim
from lenet_keras import resume as resume_lib
from lenet_keras.errors import RunDirectoryError, TrainingDivergedError

FINAL_WEIGHTS = "final.weights.h5"
"""The model and optimizer variables after the last epoch (`model.load_weights` reads them)."""

WHITENING_IMAGES = 5000
"""Training images a model's data-dependent initialisation sees (airbench94's whitening conv: 5,000)."""

SAMPLE_IMAGES = 32
"""How many test images `predictions.npz` keeps for the sample-predictions grid."""

SAMPLE_TITLE = f"the first {SAMPLE_IMAGES // 2} test images, then the first mistakes"
"""How `_sample_indices` chooses them, as the grid's title says."""


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


def _epoch_logs_callback():
    import keras

    class EpochLogs(keras.callbacks.Callback):
        """Adds `learning_rate` (at the epoch's end) and `epoch_seconds` (wall) to the epoch logs.

        Placed first, so CSVLogger and TensorBoard, which see the same logs dict, record them.
        """

        def on_epoch_begin(self, epoch, logs=None):
            """Start the epoch's wall clock."""
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            """Add `learning_rate` and `epoch_seconds` (float, wall seconds) to `logs`."""
            if logs is not None:
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
                logs["epoch_seconds"] = time.perf_counter() - self._start

    return EpochLogs()


def _peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux `ru_maxrss` is in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _throughput_callback(batch_size: int, steps_per_epoch: int, epochs: int, record: dict, quiet: bool = False):
    import keras
    import tensorflow as tf

    class Throughput(keras.callbacks.Callback):
        """Prints the device, training images/s over steps 2-11 (after tracing) and the projected
        wall time of the whole run; stores both in `record` for the manifest, with the wall
        seconds spent in per-epoch validation (`validation_seconds`, all epochs of the run: a
        `resume.StatefulCallback`, so a resumed run adds to the seconds of the epochs before
        its backup; a backup written before lenet-keras saved them restarts the count at 0)."""

        FIRST, LAST = 1, 11
        backup_key = "speed"

        def backup_state(self) -> dict[str, np.ndarray]:
            """{"validation_seconds": float64 scalar array} of the epochs so far."""
            return {"validation_seconds": np.float64(record.get("validation_seconds", 0.0))}

        def restore_state(self, state: dict[str, np.ndarray] | None) -> None:
            """Continue the count of validation seconds from the backup."""
            if state is not None:
                record["validation_seconds"] = float(state["validation_seconds"])

        def on_train_batch_end(self, batch, logs=None):
            """Time steps FIRST+1..LAST of the first epoch; report once at LAST (or its last step)."""
            if "images_per_second_first_steps" in record:  # measured already, in the first epoch
                return
            if batch == self.FIRST:
                self._start = time.perf_counter()
            elif batch == min(self.LAST, steps_per_epoch - 1) and batch > self.FIRST:
                images_per_s = (batch - self.FIRST) * batch_size / (time.perf_counter() - self._start)
                projected = steps_per_epoch * epochs * batch_size / images_per_s
                device = ", ".join(d.name for d in tf.config.list_logical_devices("GPU")) or "CPU"
                record.update(device=device, images_per_second_first_steps=round(images_per_s, 1),
                              projected_training_seconds=round(projected, 1))
                if not quiet:
                    print(f"\n[{device}] {images_per_s:.1f} training images/s over steps {self.FIRST + 2}-{batch + 1}; "
                          f"projected training time {projected / 60:.1f} min for {epochs} epochs", flush=True)

        def on_test_begin(self, logs=None):
            """Start timing a validation pass inside `fit`."""
            self._validation_start = time.perf_counter()

        def on_test_end(self, logs=None):
            """Add the pass's wall seconds to `record["validation_seconds"]` (the epochs' share of validation)."""
            record["validation_seconds"] = round(
                record.get("validation_seconds", 0.0) + time.perf_counter() - self._validation_start, 3)

    return Throughput()


CHANCE_FACTOR = 2.0
"""A training accuracy below CHANCE_FACTOR / num_classes (0.2 for 10 classes) is "at chance level"."""


def chance_level_message(epoch: int, accuracy: float, loss: float, num_classes: int) -> str | None:
    """The warning for an epoch (0-based) whose training accuracy (fraction) is at chance level, else None.

    At chance level means below `CHANCE_FACTOR / num_classes`. The likely cause is named from the
    loss: far above ln(num_classes) (the cross-entropy of guessing uniformly) means the weights
    were thrown far off, usually by a learning rate far too high; otherwise too small a learning
    rate or too few steps.
    """
    if not accuracy < CHANCE_FACTOR / num_classes:
        return None
    uniform = float(np.log(num_classes))
    cause = (f"the loss {loss:.4g} is far above ln({num_classes}) = {uniform:.2f} of uniform guessing: the learning "
             "rate is most likely far too high" if loss > 3 * uniform else
             "the learning rate may be too low, or the run too short to leave chance level")
    return (f"epoch {epoch + 1}: training accuracy {accuracy:.4f} is at chance level (below {CHANCE_FACTOR:g}/"
            f"{num_classes} classes); {cause}")


def _chance_level_callback(num_classes: int, record: list):
    import keras

    class ChanceLevel(keras.callbacks.Callback):
        """Warns (stderr, once) and appends to `record` each epoch whose training accuracy is at
        chance level (`chance_level_message`): a run that trains to nothing with a finite loss,
        which `TerminateOnNaN` cannot see. The manifest's `warnings` and the report show them."""

        backup_key = "chance_level"

        def on_epoch_end(self, epoch, logs=None):
            """Check the epoch's training accuracy and loss."""
            logs = logs or {}
            if "accuracy" not in logs:
                return
            message = chance_level_message(epoch, float(logs["accuracy"]), float(logs.get("loss", np.nan)), num_classes)
            if message:
                if not record:
                    print(f"WARNING: {message}", file=sys.stderr, flush=True)
                record.append(message)

        def backup_state(self) -> dict[str, np.ndarray]:
            """{"messages": the warnings so far, a str array}."""
            return {"messages": np.array(record, dtype=str)}

        def restore_state(self, state: dict[str, np.ndarray] | None) -> None:
            """Continue from the warnings of the epochs before the backup."""
            record[:] = [str(m) for m in state["messages"]] if state is not None else []

    return ChanceLevel()


def _graph_callback(log_dir: Path):
    import keras
    import tensorflow as tf

    class ModelGraph(keras.callbacks.Callback):
        """Writes the model's inference op graph to TensorBoard's Graphs dashboard (`train` run).

        Keras's TensorBoard callback writes no graph for `Sequential` subclasses in Keras 3.
        """

        def on_train_begin(self, logs=None):
            """Trace the forward pass on float32 (None, *input shape) and write its graph."""
            spec = tf.TensorSpec((None, *self.model.input_shape[1:]), tf.float32)
            forward = tf.function(lambda images: self.model(images, training=False))
            writer = tf.summary.create_file_writer(str(log_dir / "train"))
            with writer.as_default():
                tf.summary.graph(forward.get_concrete_function(spec).graph)
            writer.close()

    return ModelGraph()


def _sample_indices(labels: np.ndarray, predicted: np.ndarray, count: int = SAMPLE_IMAGES) -> np.ndarray:
    """The first `count`/2 test images plus the first mistakes, topped up to `count`, in order."""
    first = np.arange(min(count // 2, len(labels)))
    mistakes = np.flatnonzero(predicted != labels)
    mistakes = mistakes[~np.isin(mistakes, first)][: count - len(first)]
    chosen = np.concatenate([first, mistakes])
    if len(chosen) < count:
        rest = np.setdiff1d(np.arange(len(labels)), chosen)[: count - len(chosen)]
        chosen = np.concatenate([chosen, rest])
    return np.sort(chosen)


def _log_test_results(log_dir: Path, step: int, loss: float, accuracy: float, sample_png: bytes) -> None:
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(log_dir / "test"))
    with writer.as_default():
        tf.summary.scalar("test_loss", loss, step=step)
        tf.summary.scalar("test_accuracy", accuracy, step=step)
        image = tf.image.decode_png(sample_png, channels=4)[None]
        tf.summary.image("sample_test_predictions", image, step=step)
    writer.close()


def _stop_reason(callbacks) -> str | None:
    """The `stop_reason` of the first extra callback that stopped training, else None."""
    return next((c.stop_reason for c in callbacks if getattr(c, "stop_reason", None)), None)


def recorded_experiment(run_dir: Path) -> config_lib.Experiment:
    """The experiment recorded in `run_dir/manifest.json` (its resolved config and seed).

    Raises:
        RunDirectoryError: missing or broken manifest (`manifest.read_run_manifest`).
        ConfigError: the recorded config is not valid for this version of the package.
    """
    manifest = manifest_lib.read_run_manifest(run_dir)
    return config_lib.from_dict(manifest["config"], source=str(Path(run_dir) / "manifest.json"))


def compiled_model(experiment: config_lib.Experiment, dataset: data_lib.ImageData, strategy=None,
                   learning_rate_scale: float = 1.0):
    """The experiment's model, compiled with its optimizer, learning-rate schedule and loss.

    With a `tf.distribute` `strategy` its variables are created under `strategy.scope()`;
    `learning_rate_scale` multiplies `optimizer.learning_rate` and `schedule.max_learning_rate`
    (`distribution.scale_learning_rate`: the number of replicas).

    The model is built under the dtype policy `train.precision` (mixed precision: bfloat16 or
    float16 compute, float32 weights; Keras scales the loss for float16).
    Loss: categorical cross-entropy on one-hot float32 labels (with `train.label_smoothing`);
    metric: top-1 accuracy named "accuracy". The schedule counts optimizer steps, so it needs
    the steps per epoch of `dataset` at `train.batch_size`.
    """
    import contextlib
    import dataclasses

    import keras

    if learning_rate_scale != 1:
        experiment = dataclasses.replace(
            experiment,
            optimizer=dataclasses.replace(experiment.optimizer,
                                          learning_rate=experiment.optimizer.learning_rate * learning_rate_scale),
            schedule=dataclasses.replace(experiment.schedule,
                                         max_learning_rate=experiment.schedule.max_learning_rate * learning_rate_scale),
        )
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        keras.mixed_precision.set_global_policy(experiment.train.precision)
        try:
            model = models.build(experiment.model, dataset.image_shape, dataset.num_classes)
        finally:  # layers keep the policy they were built with; later code gets the default again
            keras.mixed_precision.set_global_policy("float32")
        model.compile(
            optimizer=optim.build(experiment, data_lib.steps_per_epoch(dataset, experiment.train.batch_size)),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=experiment.train.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        )
        if hasattr(model, "initialize_from_data"):  # airbench's whitening conv: from 5,000 training images
            images = dataset.train_images[:WHITENING_IMAGES].astype(np.float32) / 255.0
            if experiment.data.mean:
                images = (images - np.float32(experiment.data.mean)) / np.float32(experiment.data.std)
            model.initialize_from_data(images)
        if experiment.distribution.strategy != "default":  # its variables must exist under the scope, on
            model.optimizer.build(model.trainable_variables)  # every worker, before a restore or broadcast
    if strategy is not None:
        distribute.allow_multi_worker_fit(model, strategy)
    return model


def _kept_history(run_dir: Path, first_epoch: int) -> list[dict[str, str]]:
    """history.csv rows of epochs 0..first_epoch-1, checked complete.

    Raises:
        RunDirectoryError: history.csv lacks rows the backup says were trained.
    """
    rows = [row for row in resume_lib.read_history(run_dir / "history.csv") if int(row["epoch"]) < first_epoch]
    if [int(row["epoch"]) for row in rows] != list(range(first_epoch)):
        raise RunDirectoryError(
            f"{run_dir / 'history.csv'}: has epochs {[row['epoch'] for row in rows]}, but the backup holds "
            f"{first_epoch} epochs; cannot resume this run"
        )
    return rows


def run(
    experiment: config_lib.Experiment,
    runs_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    run_id: str | None = None,
    verbose: int | None = None,
    callbacks: tuple = (),
    resume: str | Path | bool | None = None,
) -> Path:
    """Train `experiment` once and write its run directory (see this module's docstring).

    Args:
        experiment: the validated experiment (`lenet_keras.config.load`).
        runs_dir: the parent of `<experiment.name>/<run_id>/`.
        data_dir: the only folder searched for the dataset; None: $LENET_KERAS_DATA if set, else data/
            (see `lenet_keras.data`).
        run_id: the run directory's name; default `run-NNN`.
        verbose: Keras progress output: 1 = progress bar, 2 = one line per epoch, 0 = none;
            default 1 in a terminal, else 2.
        callbacks: more Keras callbacks (a sweep's pruning callback). One that stops training
            early sets `stop_reason` (a string) on itself; the manifest records it as
            `stopped_early` and the run still completes (test metrics of the last epoch).
        resume: a run directory to continue from its last completed epoch (`lenet_keras.resume`),
            or True: the last unfinished run of this experiment with the same config, else a new
            run. The result equals that of a run never interrupted.

    Under `[distribution]` (`lenet_keras.distribute`) the model trains under that
    `tf.distribute` strategy; with several workers only the chief writes the run directory,
    the others train in a temporary folder removed at the end, print their final weights
    digest, and return None.

    Returns:
        The run directory (None on a multi-worker job's non-chief workers).

    Raises:
        ConfigError: an unknown dataset/model/optimizer/schedule name (before anything runs).
        DataNotFoundError, ChecksumError: from `lenet_keras.data` (before the run directory
            is created).
        RunDirectoryError: `run_id` exists already; `resume` names a run that cannot be
            resumed (completed, still running, other config or data, broken manifest or backup,
            a backup from another model).
        TrainingDivergedError: the training loss became NaN or infinite (training stops at
            that batch, `keras.callbacks.TerminateOnNaN`); the manifest says "failed".
        Any other training error is re-raised after `manifest.json` records status "failed"
        ("interrupted" for KeyboardInterrupt, which the CLI also raises on SIGTERM).
    """
    data_lib.check_name(experiment.data)
    models.check_name(experiment.model)
    optim.check_names(experiment)
    started, t0 = manifest_lib.utc_now(), time.perf_counter()
    strategy = distribute.strategy_for(experiment.distribution)  # first: multi-worker and logical CPUs need it
    chief = distribute.is_chief(strategy)
    if not chief:
        resume = None  # only the chief resumes; the others get its state by broadcast_from_chief
    dataset = data_lib.load(experiment.data, data_dir)
    config = json.loads(json.dumps(experiment.to_dict()))  # as manifest.json records it (lists, not tuples)
    if resume is True:
        resume = resume_lib.find_unfinished(Path(runs_dir) / experiment.name, config)
        if verbose != 0:
            print(f"resuming {resume}" if resume else "no unfinished run of this experiment to resume; starting a new one",
                  flush=True)
    if resume:
        run_dir = Path(resume)
        manifest = manifest_lib.read_run_manifest(run_dir)
        resume_lib.check_resumable(run_dir, manifest, config, dataset.checksums)

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(experiment.seed)
    tf.config.experimental.enable_op_determinism()
    cluster = distribute.cluster(strategy, experiment.distribution)
    learning_rate_scale = cluster["replicas"] if experiment.distribution.scale_learning_rate else 1
    model = compiled_model(experiment, dataset, strategy, learning_rate_scale)
    if not chief:
        run_dir = Path(tempfile.mkdtemp(prefix=f"lenet-keras-{cluster['task'].replace(':', '-')}-"))
    elif not resume:
        run_dir = new_run_dir(Path(runs_dir) / experiment.name, run_id)
    steps_per_epoch = data_lib.steps_per_epoch(dataset, experiment.train.batch_size)
    backup = resume_lib.crash_safe_backup(run_dir)
    backup.set_model(model)
    first_epoch = backup.restore() if resume else 0
    first_epoch = distribute.broadcast_from_chief(strategy, model, first_epoch)
    kept_rows = _kept_history(run_dir, first_epoch) if resume else []
    log_dir = run_dir / "tensorboard"
    if resume:
        resume_lib.trim_tensorboard(log_dir, first_epoch)
    epochs = experiment.train.epochs
    train_ds, val_ds, test_ds = data_lib.pipelines(
        dataset, experiment.train.batch_size, experiment.seed, experiment.data.mean, experiment.data.std,
        experiment.augment, first_epoch=first_epoch, epochs=epochs,
    )
    if experiment.distribution.strategy != "default":
        train_ds, val_ds, test_ds = map(distribute.shard_by_data, (train_ds, val_ds, test_ds))
    process = {"pid": os.getpid(), "host": socket.gethostname(), "command": manifest_lib.command_line()}
    if resume:
        manifest.update(status="running", error=None, **process, distribution=cluster)
        manifest.setdefault("resumed", []).append({"utc": started, "from_epoch": first_epoch})
    else:
        manifest = {
            "experiment": experiment.name,
            "run_id": run_dir.name,
            "status": "running",
            "error": None,
            "seed": experiment.seed,
            "config": config,
            **process,
            "data": {
                "dataset": dataset.name,
                "description": dataset.description,
                "source": dataset.source,
                "checksums_sha256": dataset.checksums,
                "class_names": list(dataset.class_names),
                "train_images": len(dataset.train_images),
                "val_images": len(dataset.val_images),
                "test_images": len(dataset.test_images),
                "validation": dataset.validation + ("" if experiment.data.validation_split else
                                                    "; nothing is selected by validation, test metrics are of the final weights"),
            },
            "model": {"name": experiment.model.name, "parameters": int(model.count_params())},
            "distribution": {**cluster, "learning_rate_scale": learning_rate_scale},
            "versions": manifest_lib.versions(),
            "machine": manifest_lib.machine(),
            "git": manifest_lib.git_state(Path(__file__).resolve().parent),
            "started_utc": started,
        }
    manifest_path = run_dir / "manifest.json"
    manifest_lib.write_json_atomic(manifest_path, manifest)
    speed: dict = {}
    run_warnings: list[str] = []
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    extra_callbacks = list(callbacks)
    history = resume_lib.history_csv(run_dir / "history.csv", kept_rows)
    best_so_far = max((float(row["val_accuracy"]) for row in kept_rows), default=-np.inf)
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        *([airbench.lookahead_callback(steps_per_epoch * epochs)] if experiment.train.lookahead else []),
        *([airbench.freeze_whiten_bias_callback(experiment.optimizer.whiten_bias_epochs)]
          if experiment.optimizer.name == "airbench_sgd" and experiment.optimizer.whiten_bias_epochs else []),
        resume_lib.dropout_seeds(experiment.seed),
        _throughput_callback(experiment.train.batch_size, steps_per_epoch, epochs - first_epoch, speed,
                             quiet=verbose == 0),
        _epoch_logs_callback(),
        _chance_level_callback(dataset.num_classes, run_warnings),
        *([_graph_callback(log_dir)] if first_epoch == 0 else []),
        history,
        keras.callbacks.TensorBoard(
            log_dir=str(log_dir), histogram_freq=experiment.train.histogram_freq, write_graph=True
        ),
        resume_lib.best_checkpoint(run_dir / "best.keras", best_so_far),
        *extra_callbacks,
        backup,  # last: an epoch counts as done only once everything above has written it
    ]
    backup.track(callbacks)
    try:
        model.fit(
            train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=first_epoch,
            steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose,
            shuffle=False,  # train_ds is already shuffled with the run's seed
        )
        rows = history.rows
        last_loss = float(rows[-1]["loss"]) if rows else np.nan
        diverged = not np.isfinite(last_loss) or model.stop_training and not _stop_reason(extra_callbacks)
        if not rows or diverged:
            raise TrainingDivergedError(
                f"training loss became NaN or infinite in epoch {len(rows)} (learning rate too high?); "
                f"training stopped there (run directory {run_dir})"
            )
        test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)
        probabilities = model.predict(test_ds, verbose=0).astype(np.float32)
        tta = {}
        if experiment.train.test_time_augmentation != "none":
            tta_start = time.perf_counter()
            tta_probabilities = airbench.tta_probabilities(
                model, test_ds, airbench.TTA_LEVELS[experiment.train.test_time_augmentation])
            tta = {"tta_probabilities": tta_probabilities,
                   "tta_accuracy": float(np.mean(tta_probabilities.argmax(axis=1) == dataset.test_labels)),
                   "tta_seconds": round(time.perf_counter() - tta_start, 3)}
    except BaseException as error:
        manifest.update(
            warnings=run_warnings,
            status="interrupted" if isinstance(error, KeyboardInterrupt) else "failed",
            error="".join(traceback.format_exception_only(type(error), error)).strip(),
            ended_utc=manifest_lib.utc_now(),
            wall_seconds=round(time.perf_counter() - t0, 3),
        )
        manifest_lib.write_json_atomic(manifest_path, manifest)
        if not chief:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise

    from lenet_keras import figures

    samples = _sample_indices(dataset.test_labels, probabilities.argmax(axis=1))
    extra = {}
    if experiment.augment.horizontal_flip or experiment.augment.crop_padding or experiment.augment.autoaugment != "none":
        from lenet_keras import augment

        first = dataset.train_images[0]
        extra["augmentation_preview"] = np.concatenate([first[None], augment.preview(first, experiment.augment, experiment.seed, 15)])
    with manifest_lib.atomic_path(run_dir / "predictions.npz") as tmp:
        np.savez_compressed(
            tmp,
            labels=dataset.test_labels,
            probabilities=probabilities,
            sample_indices=samples,
            sample_images=dataset.test_images[samples],
            class_names=np.array(dataset.class_names),
            sample_title=np.array(SAMPLE_TITLE),
            **extra,
            **({"tta_probabilities": tta["tta_probabilities"]} if tta else {}),
        )
    grid = figures.sample_predictions(
        dataset.test_images[samples], dataset.test_labels[samples], probabilities[samples], dataset.class_names,
        title=SAMPLE_TITLE,
    )
    if resume:  # the killed attempt may have logged test results already: log them once
        resume_lib.trim_tensorboard(log_dir / "test", 0, keep=())
    _log_test_results(log_dir, epochs, test_loss, test_accuracy, figures.png_bytes(grid))
    with manifest_lib.atomic_path(run_dir / FINAL_WEIGHTS) as tmp:
        model.save_weights(str(tmp))
    val_accuracy = [float(row["val_accuracy"]) for row in rows]
    best_epoch = int(np.argmax(val_accuracy))
    last = rows[-1]
    speed["peak_rss_mib"] = _peak_rss_mib()
    manifest.update(
        status="completed",
        speed=speed,
        epochs_completed=len(rows),
        best={"epoch": best_epoch, "val_accuracy": val_accuracy[best_epoch], "checkpoint": "best.keras"},
        final={key: float(last[key]) for key in ("loss", "accuracy", "val_loss", "val_accuracy")},
        test={"loss": float(test_loss), "accuracy": float(test_accuracy), "weights": "final epoch",
              **({"tta_accuracy": tta["tta_accuracy"], "tta_seconds": tta["tta_seconds"],
                  "test_time_augmentation": experiment.train.test_time_augmentation}
                 if tta else {})},
        final_weights={"file": FINAL_WEIGHTS, "values_sha256": resume_lib.weights_digest(model)},
        stopped_early=_stop_reason(extra_callbacks),
        warnings=run_warnings,
        ended_utc=manifest_lib.utc_now(),
        wall_seconds=round(time.perf_counter() - t0, 3),
    )
    manifest_lib.write_json_atomic(manifest_path, manifest)
    resume_lib.remove_backup(run_dir)
    if not chief:
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"{cluster['task']}: done, final weights values_sha256 {manifest['final_weights']['values_sha256']}; "
              f"the chief writes the run directory (this worker's temporary folder {run_dir} is removed)", flush=True)
        return None
    return run_dir
