"""The runner: `run(experiment)` -> a self-describing run directory, in named stages.

    run = prepare -> input_pipelines -> callbacks_for -> fit -> evaluate -> record_results

Each stage is one function below. The runner knows no recipe by name: a model that needs
data-dependent initialization declares it (`models.InitializedFromData`), an optimizer that needs
callbacks supplies them (`optim.callbacks_for`), test-time augmentation is a named evaluation
(`airbench.TEST_TIME_AUGMENTATIONS`), and the run directory's files are `lenet_keras.rundir`'s.

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
        tensorboard/       the run's HParams session (its flattened config, `hparams_log`);
                           train/ and validation/ epoch scalars (incl. learning rate), the
                           graph and weight histograms; test/ final scalars and an image of
                           sample predictions

Every file others read is written via temp file + rename, so a kill at any moment leaves
each either complete or absent (`lenet_keras.resume`). Run ids are `run-001`, `run-002`, ...
(one more than the largest existing number); an existing run directory is never overwritten.
Everything is seeded from `experiment.seed` with TensorFlow op determinism on.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lenet_keras import config as config_lib
from lenet_keras import data as data_lib
from lenet_keras import distribute, hardware, hparams_log
from lenet_keras import manifest as manifest_lib
from lenet_keras import models, optim, pipeline, rundir
from lenet_keras import resume as resume_lib
from lenet_keras.errors import ConfigError, RunDirectoryError, TrainingDivergedError

FINAL_WEIGHTS = "final.weights.h5"
"""The model and optimizer variables after the last epoch (`model.load_weights` reads them)."""


@dataclasses.dataclass
class Job:
    """What `prepare` hands to the later stages of one run.

    `first_epoch` is 0 for a new run, the backup's epoch count on resume; `kept_rows` are the
    history rows of those epochs; `record` gathers the manifest's `speed` and `warnings` as
    callbacks fill them; `t0` is `time.perf_counter()` at the start.
    """

    experiment: config_lib.Experiment
    dataset: data_lib.ImageData
    strategy: Any
    cluster: dict
    model: Any
    run_dir: Path
    manifest: dict
    backup: Any
    resumed: bool
    first_epoch: int
    kept_rows: list
    t0: float
    chief: bool = True
    record: dict = dataclasses.field(default_factory=lambda: {"speed": {}, "warnings": []})

    @property
    def log_dir(self) -> Path:
        """The run's TensorBoard folder."""
        return self.run_dir / "tensorboard"


def recorded_experiment(run_dir: Path) -> config_lib.Experiment:
    """The experiment recorded in `run_dir/manifest.json` (its resolved config and seed).

    Raises:
        RunDirectoryError: missing or broken manifest (`manifest.read_run_manifest`).
        ConfigError: the recorded config is not valid for this version of the package.
    """
    manifest = manifest_lib.read_run_manifest(run_dir)
    return config_lib.from_dict(manifest["config"], source=str(Path(run_dir) / "manifest.json"))


def _scaled(experiment: config_lib.Experiment, learning_rate_scale: float) -> config_lib.Experiment:
    """`experiment` with `optimizer.learning_rate` and `schedule.max_learning_rate` times the scale."""
    if learning_rate_scale == 1:
        return experiment
    optimizer, schedule = experiment.optimizer, experiment.schedule
    return dataclasses.replace(
        experiment,
        optimizer=dataclasses.replace(optimizer, learning_rate=optimizer.learning_rate * learning_rate_scale),
        schedule=dataclasses.replace(schedule, max_learning_rate=schedule.max_learning_rate * learning_rate_scale),
    )


def compiled_model(experiment: config_lib.Experiment, dataset: data_lib.ImageData, strategy=None,
                   learning_rate_scale: float = 1.0):
    """The experiment's model, compiled with its optimizer, learning-rate schedule and loss.

    With a `tf.distribute` `strategy` its variables are created under `strategy.scope()`;
    `learning_rate_scale` multiplies `optimizer.learning_rate` and `schedule.max_learning_rate`
    (`distribution.scale_learning_rate`: the number of replicas).

    The model is built under the dtype policy `train.precision` resolves to on this machine
    (`hardware.resolve_precision`: "auto" is bfloat16 compute only where native bfloat16 units
    exist; mixed precision keeps float32 weights; Keras scales the loss for float16).
    Loss: categorical cross-entropy on one-hot float32 labels (with `train.label_smoothing`), or
    the model's own criterion for a `models.OwnCriterion` model (which refuses a nonzero
    `train.label_smoothing` with `ConfigError`, before anything is written); metric: top-1 accuracy named
    "accuracy"; `train.steps_per_execution` goes to `compile`, and `train.jit_compile` compiles the
    training and evaluation steps with XLA (which Keras turns off under TensorFlow's op determinism,
    a GPU concern: XLA on a CPU computes the same values every run, `tests/test_lenet1998.py`). The schedule counts optimizer steps, so it needs
    the steps per epoch of `dataset` at `train.batch_size`. A model that declares
    `models.InitializedFromData` is initialized from its first training images, normalized as
    the pipeline normalizes them.
    """
    import contextlib

    import keras

    experiment = _scaled(experiment, learning_rate_scale)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        keras.mixed_precision.set_global_policy(hardware.resolve_precision(experiment.train.precision).ran)
        try:
            model = models.build(experiment.model, dataset.image_shape, dataset.num_classes)
        finally:  # layers keep the policy they were built with; later code gets the default again
            keras.mixed_precision.set_global_policy("float32")
        own_loss = isinstance(model, models.OwnCriterion)
        if own_loss and experiment.train.label_smoothing:
            raise ConfigError(f"train.label_smoothing = {experiment.train.label_smoothing}: model "
                              f"{experiment.model.name!r} trains on its own criterion ({model.criterion}), "
                              "which has no label smoothing; set it to 0")
        model.compile(
            optimizer=optim.build(experiment, pipeline.steps_per_epoch(dataset, experiment.train.batch_size)),
            loss=None if own_loss else keras.losses.CategoricalCrossentropy(
                label_smoothing=experiment.train.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            steps_per_execution=experiment.train.steps_per_execution,
        )
        if experiment.train.jit_compile:  # Keras refuses XLA under op determinism; XLA on a CPU is deterministic
            model._jit_compile = True  # private Keras name: `framework_internals.PRIVATE_USES`
        if isinstance(model, models.InitializedFromData):
            images = dataset.train_images[:model.initialization_images]
            model.initialize_from_data(pipeline.normalize(images, experiment.data.mean, experiment.data.std))
        if experiment.distribution.strategy != "default":  # its variables must exist under the scope, on
            model.optimizer.build(model.trainable_variables)  # every worker, before a restore or broadcast
    if strategy is not None:
        distribute.allow_multi_worker_fit(model, strategy)
    return model


def kept_history(run_dir: Path, first_epoch: int) -> list[dict[str, str]]:
    """history.csv rows of epochs 0..first_epoch-1 (those of the backup a run resumes from), checked complete.

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


def _resume_target(experiment, runs_dir, resume, verbose) -> Path | None:
    """The run directory to resume: `resume` itself, or for True the last unfinished run of this
    experiment with the same config (None: start a new run)."""
    if resume is not True:
        return Path(resume) if resume else None
    target = resume_lib.find_unfinished(Path(runs_dir) / experiment.name, rundir.config_block(experiment))
    if verbose != 0:
        print(f"resuming {target}" if target else "no unfinished run of this experiment to resume; starting a new one",
              flush=True)
    return target


def _new_manifest(experiment, run_dir: Path, dataset, model, cluster: dict, scale: float, started: str) -> dict:
    """The manifest of a new Keras run as it starts (`rundir.start_manifest`)."""
    note = "" if experiment.data.validation_split else \
        "; nothing is selected by validation, test metrics are of the final weights"
    return rundir.start_manifest(
        experiment, run_dir, rundir.data_block(dataset, note),
        {"name": experiment.model.name, "parameters": int(model.count_params())}, started,
        distribution={**cluster, "learning_rate_scale": scale},
    )


def announce_precision(experiment: config_lib.Experiment, verbose: int | None) -> hardware.Precision:
    """The precision this run computes in (`hardware.resolve_precision`), printed as the run's first
    line unless `verbose` is 0, with the once-per-process warning for bfloat16 asked for explicitly
    on hardware without bfloat16 units (`hardware.warn_if_emulated`)."""
    precision = hardware.resolve_precision(experiment.train.precision)
    if verbose != 0:
        print(f"precision: {precision.ran} ({precision.reason})", flush=True)
    hardware.warn_if_emulated(precision)
    return precision


def check_same_precision(run_dir: Path, manifest: dict, precision: hardware.Precision) -> None:
    """Refuse to resume a run in another precision than it trained in (its weights would not be
    those of an uninterrupted run): `train.precision = "auto"` resolves by machine.

    Raises:
        RunDirectoryError: the manifest's `precision.ran` differs from `precision.ran`.
    """
    ran = (manifest.get("precision") or {}).get("ran")
    if ran is not None and ran != precision.ran:
        raise RunDirectoryError(
            f"{run_dir}: trained in {ran} ({manifest['precision'].get('reason')}), but this machine runs "
            f"{precision.ran} ({precision.reason}); resume it on a machine of its CPU class "
            f"({manifest['precision'].get('isa_class')}), or start a new run")


def share_restored_state(strategy, chief: bool, backup, first_epoch: int) -> None:
    """On a resumed multi-worker job, give every worker the callbacks' state the chief restored
    from its backup (the lookahead average, the validation seconds so far): the backup's state
    file travels as bytes (`distribute.broadcast_bytes_from_chief`) and the other workers
    `adopt` it. Nothing to do for a new run or a single worker."""
    if not first_epoch or not distribute.is_multi_worker(strategy):
        return
    state = distribute.broadcast_bytes_from_chief(strategy, backup.restored_state_bytes() if chief else b"")
    if not chief:
        backup.adopt(first_epoch, resume_lib.parse_state(io.BytesIO(state)) if state else {})


def prepare(experiment, runs_dir, data_dir, run_id, resume, verbose) -> Job:
    """Stage 1: strategy, data, seeds, compiled model, run directory (new, resumed or a worker's
    temporary one), restored backup, the manifest written with status "running" and (chief) the
    run's HParams session (`hparams_log.ensure_run_session`).

    Raises: as `run` (config, data and run-directory errors, before anything trains).
    """
    started, t0 = manifest_lib.utc_now(), time.perf_counter()
    strategy = distribute.strategy_for(experiment.distribution)  # first: multi-worker and logical CPUs need it
    chief = distribute.is_chief(strategy)
    dataset = data_lib.load(experiment.data, data_dir)
    target = _resume_target(experiment, runs_dir, resume if chief else None, verbose)  # others: broadcast
    precision = announce_precision(experiment, verbose)
    if target:
        manifest = manifest_lib.read_run_manifest(target)
        resume_lib.check_resumable(target, manifest, rundir.config_block(experiment), dataset.checksums)
        check_same_precision(target, manifest, precision)

    import keras
    import tensorflow as tf

    from lenet_keras.callbacks import CrashSafeBackup

    keras.utils.set_random_seed(experiment.seed)
    tf.config.experimental.enable_op_determinism()
    cluster = distribute.cluster(strategy, experiment.distribution)
    scale = cluster["replicas"] if experiment.distribution.scale_learning_rate else 1
    model = compiled_model(experiment, dataset, strategy, scale)
    if not chief:
        run_dir = Path(tempfile.mkdtemp(prefix=f"lenet-keras-{cluster['task'].replace(':', '-')}-"))
    else:
        run_dir = target or rundir.new_run_dir(Path(runs_dir) / experiment.name, run_id)
    backup = CrashSafeBackup(run_dir)
    backup.set_model(model)
    first_epoch = distribute.broadcast_from_chief(strategy, model, backup.restore() if target else 0)
    share_restored_state(strategy, chief, backup, first_epoch)
    if target:
        resume_lib.trim_tensorboard(run_dir / "tensorboard", first_epoch,
                                    first_iteration=int(model.optimizer.iterations.numpy()))
        manifest.update(status="running", error=None, **rundir.process_block(), distribution=cluster)
        manifest.setdefault("resumed", []).append({"utc": started, "from_epoch": first_epoch})
    else:
        manifest = _new_manifest(experiment, run_dir, dataset, model, cluster, scale, started)
        manifest["precision"] = precision.to_dict()
    rundir.write_manifest(run_dir, manifest)
    if chief:  # one HParams session per run; a resumed run keeps its first (`lenet_keras.hparams_log`)
        hparams_log.ensure_run_session(run_dir, manifest)
    return Job(experiment, dataset, strategy, cluster, model, run_dir, manifest, backup, bool(target), first_epoch,
               kept_history(run_dir, first_epoch) if target else [], t0, chief)


def input_pipelines(job: Job):
    """Stage 2: the seeded (train, validation, test) `tf.data` pipelines from `job.first_epoch` on,
    each sharded by data under a distribution strategy (`pipeline.pipelines`)."""
    experiment = job.experiment
    datasets = pipeline.pipelines(
        job.dataset, experiment.train.batch_size, experiment.seed, experiment.data.mean, experiment.data.std,
        experiment.augment, first_epoch=job.first_epoch, epochs=experiment.train.epochs,
        reshuffle=experiment.train.reshuffle_each_epoch,
    )
    if experiment.distribution.strategy != "default":
        datasets = tuple(map(distribute.shard_by_data, datasets))
    return datasets


def algorithm_callbacks(experiment: config_lib.Experiment, steps_per_epoch: int, dataset=None) -> list:
    """The callbacks that change what training computes, first in every run: `TerminateOnNaN`,
    `callbacks.Lookahead` (`train.lookahead`), the optimizer's own (`optim.callbacks_for`) and
    `callbacks.DropoutSeeds`. `lenet_keras.bench` trains with exactly these."""
    import keras

    from lenet_keras import callbacks as cb

    return [
        keras.callbacks.TerminateOnNaN(),
        *([cb.Lookahead(steps_per_epoch * experiment.train.epochs)] if experiment.train.lookahead else []),
        *optim.callbacks_for(experiment, dataset),
        cb.DropoutSeeds(experiment.seed),
    ]


def callbacks_for(job: Job, extra: tuple, verbose: int) -> list:
    """Stage 3: the run's Keras callbacks, in the order of `lenet_keras.callbacks`' docstring; the
    crash-safe backup last, tracking every `callbacks.StatefulCallback` (restored on resume)."""
    import keras

    from lenet_keras import callbacks as cb

    experiment, steps = job.experiment, pipeline.steps_per_epoch(job.dataset, job.experiment.train.batch_size)
    epochs = experiment.train.epochs
    best_so_far = max((float(row["val_accuracy"]) for row in job.kept_rows), default=-np.inf)
    callbacks = [
        *algorithm_callbacks(experiment, steps, job.dataset),
        cb.Throughput(experiment.train.batch_size, steps, epochs - job.first_epoch, job.record["speed"],
                      quiet=verbose == 0),
        cb.EpochLogs(),
        cb.ChanceLevel(job.dataset.num_classes, job.record["warnings"]),
        *([cb.ModelGraph(job.log_dir)] if job.first_epoch == 0 else []),
        cb.HistoryCSV(job.run_dir / "history.csv", job.kept_rows),
        keras.callbacks.TensorBoard(log_dir=str(job.log_dir), histogram_freq=experiment.train.histogram_freq,
                                    write_graph=True),
        cb.BestCheckpoint(job.run_dir / "best.keras", best_so_far),
        *extra,
        job.backup,  # last: an epoch counts as done only once everything above has written it
    ]
    job.backup.track(callbacks)
    return callbacks


def stop_reason(callbacks) -> str | None:
    """The `stop_reason` of the first extra callback that stopped training, else None."""
    return next((c.stop_reason for c in callbacks if getattr(c, "stop_reason", None)), None)


def fit(job: Job, datasets, callbacks: list, extra: tuple, verbose: int) -> list[dict[str, str]]:
    """Stage 4: `model.fit` from `job.first_epoch`; returns the history rows of every epoch.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite (`TerminateOnNaN` stopped training,
            and no extra callback claims the stop).
    """
    from lenet_keras.callbacks import HistoryCSV

    train_ds, val_ds, _ = datasets
    experiment = job.experiment
    job.model.fit(
        train_ds, validation_data=val_ds, epochs=experiment.train.epochs, initial_epoch=job.first_epoch,
        steps_per_epoch=pipeline.steps_per_epoch(job.dataset, experiment.train.batch_size), callbacks=callbacks,
        verbose=verbose, shuffle=False,  # train_ds is already shuffled with the run's seed
    )
    rows = next(c for c in callbacks if isinstance(c, HistoryCSV)).rows
    last_loss = float(rows[-1]["loss"]) if rows else np.nan
    if not rows or not np.isfinite(last_loss) or job.model.stop_training and not stop_reason(extra):
        raise TrainingDivergedError(
            f"training loss became NaN or infinite in epoch {len(rows)} (learning rate too high?); "
            f"training stopped there (run directory {job.run_dir})"
        )
    return rows


def evaluate(job: Job, test_ds) -> dict[str, Any]:
    """Stage 5: test loss and top-1 accuracy of the final weights, the test probabilities
    (N, classes) float32, and with `train.test_time_augmentation` the named evaluation's
    probabilities, accuracy and seconds (`airbench.TEST_TIME_AUGMENTATIONS`)."""
    from lenet_keras import airbench

    test_loss, test_accuracy = job.model.evaluate(test_ds, verbose=0)
    result = {"loss": float(test_loss), "accuracy": float(test_accuracy),
              "probabilities": job.model.predict(test_ds, verbose=0).astype(np.float32)}
    name = job.experiment.train.test_time_augmentation
    if name != "none":
        start = time.perf_counter()
        probabilities = airbench.TEST_TIME_AUGMENTATIONS[name](job.model, test_ds)
        result.update(tta_probabilities=probabilities, tta_seconds=round(time.perf_counter() - start, 3),
                      tta_accuracy=float(np.mean(probabilities.argmax(axis=1) == job.dataset.test_labels)))
    return result


def log_test_results(log_dir: Path, step: int, loss: float, accuracy: float, sample_png: bytes) -> None:
    """Write the test loss, accuracy and the sample-predictions image (PNG bytes) to `log_dir/test`."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(log_dir / "test"))
    with writer.as_default():
        tf.summary.scalar("test_loss", loss, step=step)
        tf.summary.scalar("test_accuracy", accuracy, step=step)
        image = tf.image.decode_png(sample_png, channels=4)[None]
        tf.summary.image("sample_test_predictions", image, step=step)
    writer.close()


def _augmentation_preview(experiment, dataset) -> dict[str, np.ndarray]:
    """{"augmentation_preview": the first training image and 15 augmented draws} if any augmentation is on."""
    augment_config = experiment.augment
    if not augment_config.per_image:
        return {}
    from lenet_keras import augment

    first = dataset.train_images[0]
    return {"augmentation_preview": np.concatenate([first[None], augment.preview(first, augment_config, experiment.seed, 15)])}


def write_artifacts(job: Job, result: dict) -> None:
    """predictions.npz, the test scalars and sample image in TensorBoard, final.weights.h5."""
    from lenet_keras import figures

    extra = _augmentation_preview(job.experiment, job.dataset)
    if "tta_probabilities" in result:
        extra["tta_probabilities"] = result["tta_probabilities"]
    samples = rundir.write_predictions(job.run_dir, job.dataset, result["probabilities"], **extra)
    dataset = job.dataset
    grid = figures.sample_predictions(dataset.test_images[samples], dataset.test_labels[samples],
                                      result["probabilities"][samples], dataset.class_names, title=rundir.SAMPLE_TITLE)
    if job.resumed:  # the killed attempt may have logged test results already: log them once
        resume_lib.trim_tensorboard(job.log_dir / "test", 0, keep=())
    log_test_results(job.log_dir, job.experiment.train.epochs, result["loss"], result["accuracy"],
                     figures.png_bytes(grid))
    with manifest_lib.atomic_path(job.run_dir / FINAL_WEIGHTS) as tmp:
        job.model.save_weights(str(tmp))


def record_results(job: Job, rows: list, result: dict, extra: tuple) -> Path | None:
    """Stage 6: the artifacts, then the manifest says "completed" with the metrics, speed, warnings
    and final weights digest; the backup is removed. A non-chief worker removes its temporary
    folder, prints its weights digest and returns None."""
    from lenet_keras.callbacks import peak_rss_mib

    write_artifacts(job, result)
    summary = rundir.completion_summary(rows, result["loss"], result["accuracy"], job.t0)
    summary["best"]["checkpoint"] = "best.keras"
    if "tta_probabilities" in result:
        summary["test"].update(tta_accuracy=result["tta_accuracy"], tta_seconds=result["tta_seconds"],
                               test_time_augmentation=job.experiment.train.test_time_augmentation)
    job.record["speed"]["peak_rss_mib"] = peak_rss_mib()
    job.manifest.update(
        **summary, speed=job.record["speed"], warnings=job.record["warnings"], stopped_early=stop_reason(extra),
        final_weights={"file": FINAL_WEIGHTS, "values_sha256": resume_lib.weights_digest(job.model)},
        **rundir.seconds_block(sum(float(row["epoch_seconds"]) for row in rows),
                               float(job.record["speed"].get("validation_seconds", 0.0))),
    )
    rundir.write_manifest(job.run_dir, job.manifest)
    resume_lib.remove_backup(job.run_dir)
    if job.chief:
        return job.run_dir
    shutil.rmtree(job.run_dir, ignore_errors=True)
    print(f"{job.cluster['task']}: done, final weights values_sha256 {job.manifest['final_weights']['values_sha256']}; "
          f"the chief writes the run directory (this worker's temporary folder {job.run_dir} is removed)", flush=True)
    return None


def run(
    experiment: config_lib.Experiment,
    runs_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    run_id: str | None = None,
    verbose: int | None = None,
    callbacks: tuple = (),
    resume: str | Path | bool | None = None,
) -> Path | None:
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
            run. The result (history, weights, test metrics) equals that of a run never
            interrupted, for every shipped experiment: the state callbacks accumulate (the
            lookahead average) is in the backup.

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
    job = prepare(experiment, runs_dir, data_dir, run_id, resume, verbose)
    verbose = (1 if sys.stdout.isatty() else 2) if verbose is None else verbose
    datasets = input_pipelines(job)
    run_callbacks = callbacks_for(job, tuple(callbacks), verbose)
    try:
        rows = fit(job, datasets, run_callbacks, tuple(callbacks), verbose)
        result = evaluate(job, datasets[2])
    except BaseException as error:
        rundir.record_failure(job.run_dir, job.manifest, error, job.t0, warnings=job.record["warnings"])
        error.run_dir = job.run_dir  # the CLI's "continue with: ... --resume RUN_DIR" line
        if not job.chief:
            shutil.rmtree(job.run_dir, ignore_errors=True)
        raise
    return record_results(job, rows, result, tuple(callbacks))
