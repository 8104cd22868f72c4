"""Every Keras callback of a run, at module level, each with what it writes and why.

The runner (`lenet_keras.train.callbacks_for`) puts them in this order: `TerminateOnNaN`, the
recipe's own (`Lookahead` for `train.lookahead`, an optimizer's `optim.callbacks_for`: `FreezeWhitenBias`,
`EstimateCurvature`),
`DropoutSeeds`, `Throughput`, `EpochLogs`, `ChanceLevel`, `ModelGraph`, `HistoryCSV`, Keras's
`TensorBoard`, `BestCheckpoint`, the caller's extra callbacks, and `CrashSafeBackup` last (an
epoch counts as done only once everything before it has written it).

Crash safety: every file is written through `manifest.atomic_path` (temp file, fsync, rename,
fsync of the folder). A callback that accumulates state outside the model's variables is a
`StatefulCallback`: `CrashSafeBackup` saves that state with every backup and hands it back on
resume, so a resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

import keras
import numpy as np

from lenet_keras import manifest as manifest_lib
from lenet_keras import resume as resume_lib
from lenet_keras.errors import RunDirectoryError
from lenet_keras.paper1998 import curvature_draw


@runtime_checkable
class StatefulCallback(Protocol):
    """A Keras callback whose accumulated state must survive a kill (saved with every backup).

    `backup_key` names its arrays in the backup's `epoch-NNNN.state.npz` (`<key>/<name>`);
    `backup_state()` returns them (name -> NumPy array) at an epoch's end; `restore_state(state)`
    gets them back before `fit` on a resumed run (None when the backup holds none for this key:
    the callback raises `RunDirectoryError` if it cannot resume identically without them).
    """

    backup_key: str

    def backup_state(self) -> dict[str, np.ndarray]:
        """The state to save at an epoch's end: array name -> NumPy array (any shape and dtype)."""
        ...

    def restore_state(self, state: dict[str, np.ndarray] | None) -> None:
        """Take back the arrays of `backup_state` before `fit` (None: the backup has none).

        Raises:
            RunDirectoryError: the callback cannot resume identically without them.
        """
        ...


class EpochLogs(keras.callbacks.Callback):
    """Adds `learning_rate` (at the epoch's end) and `epoch_seconds` (wall) to the epoch logs.

    Placed before `HistoryCSV` and `TensorBoard`, which see the same logs dict, so they record them.
    """

    def on_epoch_begin(self, epoch, logs=None):
        """Start the epoch's wall clock."""
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        """Add `learning_rate` and `epoch_seconds` (float, wall seconds) to `logs`."""
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            logs["epoch_seconds"] = time.perf_counter() - self._start


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux `ru_maxrss` is in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Throughput(keras.callbacks.Callback):
    """Prints the device, training images/s over steps 2-11 (after tracing; with
    `train.steps_per_execution` > 1, over the second call of the compiled loop, the first whose
    end a callback sees after tracing) and the projected wall time of the run; stores both in `record` (the manifest's `speed`), with the wall
    seconds spent in per-epoch validation (`validation_seconds`, all epochs of the run: a
    `StatefulCallback`, so a resumed run adds to the seconds of the epochs before its backup;
    a backup written before lenet-keras saved them restarts the count at 0).

    Args:
        batch_size: images per step; steps_per_epoch: steps of one epoch; epochs: epochs this
            `fit` trains (for the projection); record: the dict to fill; quiet: print nothing.
    """

    FIRST, LAST = 1, 11
    backup_key = "speed"

    def __init__(self, batch_size: int, steps_per_epoch: int, epochs: int, record: dict, quiet: bool = False):
        super().__init__()
        self.batch_size, self.steps_per_epoch, self.epochs = batch_size, steps_per_epoch, epochs
        self.record, self.quiet = record, quiet
        self._start = None

    def on_train_batch_end(self, batch, logs=None):
        """Time the steps after the first batch end seen at step FIRST or later, up to the first batch
        end at LAST (or the epoch's last step) or later; report once. Keras calls this once per
        `steps_per_execution` steps, with the last step's index."""
        if "images_per_second_first_steps" in self.record:  # measured already, in the first epoch
            return
        if self._start is None:
            if batch >= self.FIRST:
                self._start = (batch, time.perf_counter())
            return
        first, start = self._start
        if batch >= min(self.LAST, self.steps_per_epoch - 1) and batch > first:
            self.report(batch, first, (batch - first) * self.batch_size / (time.perf_counter() - start))

    def report(self, batch: int, first: int, images_per_s: float) -> None:
        """Record (and print) the measured rate, the device and the projected training time."""
        import tensorflow as tf

        projected = self.steps_per_epoch * self.epochs * self.batch_size / images_per_s
        device = ", ".join(d.name for d in tf.config.list_logical_devices("GPU")) or "CPU"
        self.record.update(device=device, images_per_second_first_steps=round(images_per_s, 1),
                           projected_training_seconds=round(projected, 1))
        if not self.quiet:
            print(f"\n[{device}] {images_per_s:.1f} training images/s over steps {first + 2}-{batch + 1}; "
                  f"projected training time {projected / 60:.1f} min for {self.epochs} epochs", flush=True)
        message = long_run_message(projected, self.epochs, device)
        if message:
            print(f"WARNING: {message}", file=sys.stderr, flush=True)

    def on_test_begin(self, logs=None):
        """Start timing a validation pass inside `fit`."""
        self._validation_start = time.perf_counter()

    def on_test_end(self, logs=None):
        """Add the pass's wall seconds to `record["validation_seconds"]` (the epochs' share of validation)."""
        self.record["validation_seconds"] = round(
            self.record.get("validation_seconds", 0.0) + time.perf_counter() - self._validation_start, 3)

    def backup_state(self) -> dict[str, np.ndarray]:
        """{"validation_seconds": float64 scalar array} of the epochs so far."""
        return {"validation_seconds": np.float64(self.record.get("validation_seconds", 0.0))}

    def restore_state(self, state: dict[str, np.ndarray] | None) -> None:
        """Continue the count of validation seconds from the backup."""
        if state is not None:
            self.record["validation_seconds"] = float(state["validation_seconds"])


LONG_RUN_SECONDS = 3600
"""A projected training time above this (one hour) is announced with the cheaper alternatives."""


def long_run_message(projected_seconds: float, epochs: int, device: str) -> str | None:
    """The warning for a run projected to train longer than `LONG_RUN_SECONDS`, else None: how
    long, how long one epoch takes, and the cheaper alternatives (fewer epochs, the fast recipe)."""
    if projected_seconds <= LONG_RUN_SECONDS:
        return None
    per_epoch = projected_seconds / max(epochs, 1)
    return (f"this run is projected to train for {projected_seconds / 3600:.1f} h on {device} ({epochs} epochs, "
            f"{per_epoch / 60:.1f} min each). Cheaper: fewer epochs (train.epochs=N, `make ... EPOCHS=N`), or the "
            f"fast CIFAR recipe (`make cifar-fast`, experiments/cifar_fast.toml); Ctrl-C stops it resumably.")


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


class ChanceLevel(keras.callbacks.Callback):
    """Warns (stderr, once) and appends to `record` each epoch whose training accuracy is at chance
    level (`chance_level_message`): a run that trains to nothing with a finite loss, which
    `TerminateOnNaN` cannot see. The manifest's `warnings` and the report show them."""

    backup_key = "chance_level"

    def __init__(self, num_classes: int, record: list):
        super().__init__()
        self.num_classes, self.record = num_classes, record

    def on_epoch_end(self, epoch, logs=None):
        """Check the epoch's training accuracy and loss."""
        logs = logs or {}
        if "accuracy" not in logs:
            return
        message = chance_level_message(epoch, float(logs["accuracy"]), float(logs.get("loss", np.nan)), self.num_classes)
        if message:
            if not self.record:
                print(f"WARNING: {message}", file=sys.stderr, flush=True)
            self.record.append(message)

    def backup_state(self) -> dict[str, np.ndarray]:
        """{"messages": the warnings so far, a str array}."""
        return {"messages": np.array(self.record, dtype=str)}

    def restore_state(self, state: dict[str, np.ndarray] | None) -> None:
        """Continue from the warnings of the epochs before the backup."""
        self.record[:] = [str(m) for m in state["messages"]] if state is not None else []


class ModelGraph(keras.callbacks.Callback):
    """Writes the model's inference op graph to `log_dir/train` for TensorBoard's Graphs dashboard.

    Keras's TensorBoard callback writes no graph for `Sequential` subclasses in Keras 3.
    """

    def __init__(self, log_dir: Path):
        super().__init__()
        self.log_dir = Path(log_dir)

    def on_train_begin(self, logs=None):
        """Trace the forward pass on float32 (None, *input shape) and write its graph."""
        import tensorflow as tf

        spec = tf.TensorSpec((None, *self.model.input_shape[1:]), tf.float32)
        forward = tf.function(lambda images: self.model(images, training=False))
        writer = tf.summary.create_file_writer(str(self.log_dir / "train"))
        with writer.as_default():
            tf.summary.graph(forward.get_concrete_function(spec).graph)
        writer.close()


class HistoryCSV(keras.callbacks.Callback):
    """Writes `history.csv` whole after each epoch (temp file + rename, `resume.write_history`).

    Columns as Keras's `CSVLogger`: `epoch` (0-based), then the epoch's logs in sorted key order;
    values as `str(float)`. `kept_rows` are the rows of the epochs before a resume.
    """

    def __init__(self, path: Path, kept_rows: list[dict[str, str]]):
        super().__init__()
        self.path = Path(path)
        self.rows = [dict(row) for row in kept_rows]

    def on_epoch_end(self, epoch, logs=None):
        """Append the epoch's row and rewrite the file."""
        row = {"epoch": str(epoch)}
        row.update({key: str(float(np.asarray(logs[key]))) for key in sorted(logs or {})})
        self.rows.append(row)
        resume_lib.write_history(self.path, self.rows)


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model to `path` (a `.keras` file) whenever `val_accuracy` beats the best so far
    (`best_val_accuracy`, a fraction; -inf for a new run), through a temp file and rename."""

    def __init__(self, path: Path, best_val_accuracy: float):
        super().__init__()
        self.path, self.best = Path(path), best_val_accuracy

    def on_epoch_end(self, epoch, logs=None):
        """Save when this epoch's val_accuracy is the best so far."""
        value = float((logs or {}).get("val_accuracy", -np.inf))
        if value > self.best:
            self.best = value
            with manifest_lib.atomic_path(self.path) as tmp:
                self.model.save(str(tmp))


class DropoutSeeds(keras.callbacks.Callback):
    """Sets every dropout layer's random state from (seed, layer, epoch) at each epoch start.

    Keras's dropout layers draw their masks from a `keras.random.SeedGenerator` whose state
    advances with every step and is not part of the saved weights; resetting it per epoch makes
    the masks of epoch k the same whether or not the run was resumed.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        """Set each seed generator's state to (hash(seed, layer index, epoch), 0)."""
        # private Keras name (`framework_internals.PRIVATE_USES`): no public list of a layer's seed generators
        generators = [g for layer in self.model.layers for g in getattr(layer, "_seed_generators", [])]
        for index, generator in enumerate(generators):
            first = np.random.SeedSequence([self.seed, index, epoch]).generate_state(1, np.uint32)[0] >> 1
            generator.state.assign(np.array([first, 0], dtype=generator.state.dtype))


def lookahead_decay(step, total_steps: int):
    """airbench's `alpha_schedule`: 0.95**5 * (step / total_steps)**3 (the EMA keeps this much of itself)."""
    return 0.95 ** 5 * (np.asarray(step, np.float64) / total_steps) ** 3


class Lookahead(keras.callbacks.Callback):
    """airbench94's `LookaheadState` (`train.lookahead`): weights := a slow moving average of themselves.

    It keeps an average of every float variable of the model (weights and BatchNorm moving
    statistics, as airbench's state_dict; not the optimizer's). After every `every`-th optimizer
    step s: average += (1 - d) * (weights - average), d = `lookahead_decay(s, total_steps)`,
    then weights := average. When training ends the weights are the average (airbench's final
    update with d = 1). The average starts from the weights when a new run's `fit` starts; it
    is a `StatefulCallback` (key "lookahead"), so the crash-safe backup saves it after every
    epoch and a resumed run continues from it, bit-identical to an uninterrupted run.
    Source: Keller Jordan, airbench94.py (PyPI airbench==0.1.8), `LookaheadState`.
    """

    backup_key = "lookahead"

    def __init__(self, total_steps: int, every: int = 5):
        super().__init__()
        self.total_steps, self.every = total_steps, every
        self.restored: list[np.ndarray] | None = None

    def on_train_begin(self, logs=None):
        """Start the average from the current float variables, or from the restored average."""
        self.variables = [v for v in self.model.weights if "float" in str(v.dtype)]
        if self.restored is None:
            self.average = [np.array(v.numpy(), np.float32) for v in self.variables]
            return
        shapes = [tuple(v.shape) for v in self.variables]
        if [a.shape for a in self.restored] != shapes:
            raise RunDirectoryError(f"the backup's lookahead average has shapes {[a.shape for a in self.restored]}, "
                                    f"the model's float variables {shapes}; cannot resume this run")
        self.average = [np.array(a, np.float32) for a in self.restored]

    def backup_state(self) -> dict[str, np.ndarray]:
        """The average, one float32 array per float variable: {"average_000": ..., ...}."""
        return {f"average_{i:03d}": a for i, a in enumerate(self.average)}

    def restore_state(self, state: dict[str, np.ndarray] | None) -> None:
        """Continue from a backup's average (raises `RunDirectoryError` if it has none)."""
        if state is None:
            raise RunDirectoryError("the backup holds no lookahead average (written before lenet-keras saved "
                                    "it); a resumed run would differ from an uninterrupted one")
        self.restored = [state[name] for name in sorted(state, key=lambda name: int(name.rsplit("_", 1)[1]))]

    def on_train_batch_end(self, batch, logs=None):
        """Update the average every `every`-th optimizer step and load it into the weights."""
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0 and step <= self.total_steps:
            self.update(float(lookahead_decay(step, self.total_steps)))

    def update(self, decay: float) -> None:
        """average = lerp(average, weights, 1 - decay); weights := average."""
        for variable, average in zip(self.variables, self.average):
            average += (1.0 - decay) * (variable.numpy() - average)
            variable.assign(average)

    def on_train_end(self, logs=None):
        """End on the average (airbench's final update with decay 1)."""
        self.update(1.0)


class FreezeWhitenBias(keras.callbacks.Callback):
    """From epoch `epochs` on, the bias of layer `layer_name` is no longer trainable (airbench94).

    airbench94 sets `model[0].bias.requires_grad = False` after `whiten_bias_epochs` (3)
    epochs, so PyTorch stops back-propagating into the first conv group's input.
    `optim.AirbenchSGD` already stops *updating* that bias then (`whiten_bias_steps`); this
    callback also stops *computing* its gradient: it marks the variable not trainable and
    rebuilds the training function, so the step skips the first 3x3 conv's input gradient
    (the 31x31x24 map) and the GELU and bias gradients before it. The result is the same
    weights; the step is faster. On a resumed run the bias is frozen at the first epoch's start
    when that epoch is `epochs` or later. A model without such a layer (or bias) is left alone.
    """

    def __init__(self, epochs: int, layer_name: str = "whiten"):
        super().__init__()
        self.epochs, self.layer_name = epochs, layer_name

    def on_epoch_begin(self, epoch, logs=None):
        """Freeze the bias (and rebuild the train function) once `epoch` >= `epochs`."""
        names = [layer.name for layer in self.model.layers]
        bias = self.model.get_layer(self.layer_name).bias if self.layer_name in names else None
        if bias is not None and epoch >= self.epochs and bias.trainable:
            bias.trainable = False
            self.model.make_train_function(force=True)


class EstimateCurvature(keras.callbacks.Callback):
    """Before each epoch, the SDLM optimizer's second derivatives from `patterns` training images.

    LeCun et al. 1998, Appendix C: h_kk is re-estimated on 500 patterns before each pass. The
    images of epoch e are a draw without replacement keyed by (seed, e) (`paper1998.curvature_draw`), so a resumed run re-estimates exactly what an uninterrupted one
    did; they are scaled as the pipeline scales (`pipeline.normalize`, no augmentation). The model's
    `gauss_newton_diagonal(images, one_hot_labels)` gives h_kk per trained variable, which go to
    `model.optimizer.set_curvature` (`optim.StochasticDiagonalLM`).

    Args:
        images: uint8 (N, H, W, C) training images; labels: int (N,); num_classes: one-hot width.
        mean, std: the experiment's `data.mean` and `data.std`.
    """


    def __init__(self, images, labels, num_classes: int, seed: int, patterns: int = 500, mean=(), std=()):
        super().__init__()
        self.images, self.labels, self.num_classes = images, labels, int(num_classes)
        self.seed, self.patterns, self.mean, self.std = int(seed), int(patterns), tuple(mean), tuple(std)

    def chosen(self, epoch: int) -> np.ndarray:
        """Indices (patterns,) int64 of the training images epoch `epoch` estimates on."""
        return curvature_draw(self.seed, epoch, len(self.images), self.patterns)

    def on_epoch_begin(self, epoch, logs=None):
        """Estimate h_kk on this epoch's images and hand it to the optimizer."""
        from lenet_keras import pipeline

        index = self.chosen(epoch)
        images = pipeline.normalize(self.images[index], self.mean, self.std)
        labels = np.eye(self.num_classes, dtype=np.float32)[self.labels[index]]
        if not self.model.optimizer.built:  # Keras builds it at the first step, after this
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.optimizer.set_curvature(self.model.gauss_newton_diagonal(images, labels))


class CrashSafeBackup(keras.callbacks.BackupAndRestore):
    """A `keras.callbacks.BackupAndRestore` into `run_dir/backup/` whose files are never half-written.

    Keras's own callback writes the weights and then the metadata in place, so a kill between
    the two leaves epoch k+1's weights labelled as epoch k. This one writes
    `epoch-NNNN.weights.h5` (model and optimizer variables; `save_weights`) and
    `epoch-NNNN.state.npz` (the state of the tracked `StatefulCallback`s) through temp files and
    renames, then atomically replaces `training_metadata.json` ({"epoch", "weights", "sha256",
    "state", "state_sha256"}), then deletes older files. It saves nothing at batch level and
    keeps the backup when training ends (the run removes it once its manifest says completed).
    `restore()` loads the backup before `fit` and returns the epoch to start from;
    `track(callbacks)` names the callbacks whose state is saved, and hands them their restored state.

    Raises (from `restore`):
        RunDirectoryError: broken metadata or files (`resume.checked_backup`), or weights that do
            not fit this model (a checkpoint from another model) or its optimizer.
    """

    def __init__(self, run_dir: Path):
        super().__init__(str(Path(run_dir) / resume_lib.BACKUP_DIR), save_freq="epoch", delete_checkpoint=False)
        self.run_dir = Path(run_dir)
        self.restored = False
        self.stateful: list[StatefulCallback] = []
        self.restored_state: dict[str, dict[str, np.ndarray]] = {}
        self.state_file: Path | None = None

    def track(self, callbacks) -> None:
        """Save the state of each `StatefulCallback` in `callbacks` with every backup; on a resumed
        run, give each its saved state now (None if the backup has none for it)."""
        self.stateful = [c for c in callbacks if isinstance(c, StatefulCallback)]
        keys = [c.backup_key for c in self.stateful]
        if len(set(keys)) != len(keys):
            raise ValueError(f"two stateful callbacks share a backup_key: {keys}")
        if self.restored and self.model._initial_epoch:
            for callback in self.stateful:
                callback.restore_state(self.restored_state.get(callback.backup_key))

    def restore(self) -> int:
        """Load the backup's weights into the (compiled, built) model; return its epoch count."""
        metadata = resume_lib.checked_backup(self.run_dir)
        epoch = int(metadata.get("epoch", 0))
        if epoch:
            self.load_checked(Path(self.backup_dir) / metadata["weights"])
            self.restored_state = resume_lib.read_backup_state(self.run_dir, metadata)
            self.state_file = Path(self.backup_dir) / metadata["state"] if "state" in metadata else None
        self.model._initial_epoch = epoch
        self.restored = True
        return epoch

    def restored_state_bytes(self) -> bytes:
        """The restored backup's state file (.npz bytes; b"" when it has none), for other workers."""
        return self.state_file.read_bytes() if self.state_file else b""

    def adopt(self, epoch: int, state: dict[str, dict[str, np.ndarray]]) -> None:
        """On a worker that restored nothing itself (not the chief of a multi-worker job): start
        from `epoch` with the callbacks' `state` (backup_key -> {name: array}) that the chief
        restored and broadcast, exactly as `restore()` would have."""
        self.model._initial_epoch = epoch
        self.restored_state = state
        self.restored = True

    def load_checked(self, weights: Path) -> None:
        """`model.load_weights(weights)`, raising `RunDirectoryError` where Keras would only warn
        that the optimizer's variables do not match (that would silently restart momentum and
        the schedule) or fails on other layers."""
        import warnings

        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        problem = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self.model.load_weights(str(weights))
            except (ValueError, KeyError, OSError) as error:
                problem = str(error)
        skipped = [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)]
        problem = problem or (skipped[0] if skipped else None)
        if problem:
            raise RunDirectoryError(f"{weights}: does not fit model {type(self.model).__name__} "
                                    f"({self.model.count_params()} parameters) and its optimizer: {problem}")

    # private Keras names from here on (`framework_internals.PRIVATE_USES`): BackupAndRestore's
    # `_load_model`, `_save_model`, `_current_epoch` and the model's `_initial_epoch`
    def _load_model(self):
        if not self.restored:
            self.restore()

    def on_train_begin(self, logs=None):
        """Restore the backup, unless `restore()` was called already."""
        self._load_model()

    def _save_model(self):
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name, state_name = f"epoch-{self._current_epoch:04d}.weights.h5", f"epoch-{self._current_epoch:04d}.state.npz"
        with manifest_lib.atomic_path(folder / name) as tmp:
            self.model.save_weights(str(tmp))
        arrays = {f"{c.backup_key}/{key}": value for c in self.stateful for key, value in c.backup_state().items()}
        with manifest_lib.atomic_path(folder / state_name) as tmp, open(tmp, "wb") as file:
            np.savez(file, **arrays)
        resume_lib.write_backup_metadata(self.run_dir, self._current_epoch, name, state_name)
