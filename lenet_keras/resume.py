"""Crash safety: the files of a run survive a kill at any moment, and the run can be continued.

What a run writes while it trains, and how each survives SIGKILL or power loss:

    history.csv              rewritten whole after every epoch via temp file + rename (`HistoryCSV`)
    best.keras               saved to a temp file, then renamed (`BestCheckpoint`)
    backup/                  `CrashSafeBackup` (a `keras.callbacks.BackupAndRestore`): after every
                             epoch, epoch-NNNN.weights.h5 (model and optimizer state) and
                             epoch-NNNN.state.npz (what callbacks accumulate: the lookahead
                             average, validation seconds; `StatefulCallback`) are written and
                             renamed, then training_metadata.json (the epoch count, the files'
                             names and SHA-256) replaces the previous one; it always names
                             complete files. Removed when the run completes.
    tensorboard/             append-only event files; a record cut short by a kill is skipped by
                             TensorBoard, and on resume the events of epochs after the backup are
                             dropped (`trim_tensorboard`) so the curves have no doubled points.
    manifest.json            written via temp file + rename (`manifest.write_json_atomic`).

`lenet_keras.train.run(..., resume=RUN_DIR)` continues a run from its last completed epoch:
weights, optimizer state (momentum, iteration count, hence the learning-rate schedule), the
state of the callbacks that accumulate any (`StatefulCallback`: airbench's lookahead average)
and the history come from the backup, and the input pipeline is a pure function of (seed, epoch)
(`lenet_keras.data.pipelines`), as are the dropout masks (`DropoutSeeds`). So the resumed run
ends with the same final weights and metrics as one never interrupted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import socket
import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lenet_keras import dataformats as data_lib  # sha256_of_file (moved from lenet_keras.data)
from lenet_keras import manifest as manifest_lib
from lenet_keras.errors import RunDirectoryError

BACKUP_DIR = "backup"
METADATA = "training_metadata.json"
UNFINISHED = ("running", "interrupted", "failed")
"""Statuses a run can be resumed from (a completed run has nothing left to do)."""


@runtime_checkable
class StatefulCallback(Protocol):
    """A Keras callback whose accumulated state must survive a kill (saved with every backup).

    `backup_key` names its arrays in the backup's `epoch-NNNN.state.npz` (`<key>/<name>`);
    `backup_state()` returns them (name -> NumPy array) at an epoch's end; `restore_state(state)`
    gets them back before `fit` on a resumed run (None when the backup holds none for this key:
    the callback raises `RunDirectoryError` if it cannot resume identically without them).
    """

    backup_key: str

    def backup_state(self) -> dict[str, np.ndarray]: ...

    def restore_state(self, state: dict[str, np.ndarray] | None) -> None: ...


def read_history(path: Path) -> list[dict[str, str]]:
    """The rows of a `history.csv` as dicts of strings, in file order ([] when there is no file).

    Raises:
        RunDirectoryError: the file is not a CSV with an `epoch` column and whole rows.
    """
    if not path.exists():
        return []
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    if rows and ("epoch" not in rows[0] or any(None in row.values() or None in row for row in rows)):
        raise RunDirectoryError(f"{path}: not a history written by lenet_keras (need an 'epoch' column, whole rows)")
    return rows


def backup_epoch(run_dir: Path) -> int:
    """How many epochs the backup of `run_dir` holds (0 when there is none).

    Raises:
        RunDirectoryError: training_metadata.json is unreadable, or the weights file it names
            is missing or its SHA-256 differs (the file changed after it was written).
    """
    metadata_path = Path(run_dir) / BACKUP_DIR / METADATA
    if not metadata_path.exists():
        return 0
    try:
        metadata = manifest_lib.read_json(metadata_path)
        epoch, files = int(metadata["epoch"]), {metadata["weights"]: metadata["sha256"]}
        if "state" in metadata:
            files[metadata["state"]] = metadata["state_sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise RunDirectoryError(f"{metadata_path}: broken backup metadata ({error}); cannot resume this run") from None
    for name, digest in files.items():
        path = metadata_path.parent / name
        if not path.is_file():
            raise RunDirectoryError(f"{path}: missing, but {metadata_path} names it; cannot resume this run")
        if data_lib.sha256_of_file(path) != digest:
            raise RunDirectoryError(f"{path}: SHA-256 differs from the one recorded in {metadata_path} "
                                    "(the file changed after it was written); cannot resume this run")
    return epoch


def read_backup_state(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """The callbacks' state in the backup of `run_dir`: backup_key -> {name: array} ({} if none).

    Call `backup_epoch` first: it checks the file's SHA-256.
    """
    folder = Path(run_dir) / BACKUP_DIR
    metadata = manifest_lib.read_json(folder / METADATA) if (folder / METADATA).exists() else {}
    if "state" not in metadata:
        return {}
    state: dict[str, dict[str, np.ndarray]] = {}
    with np.load(folder / metadata["state"], allow_pickle=False) as arrays:
        for name in arrays.files:
            key, _, array_name = name.partition("/")
            state.setdefault(key, {})[array_name] = arrays[name]
    return state


def crash_safe_backup(run_dir: Path):
    """A `keras.callbacks.BackupAndRestore` into `run_dir/backup/` whose files are never half-written.

    Keras's own callback writes the weights and then the metadata in place, so a kill between
    the two leaves epoch k+1's weights labelled as epoch k. This one writes
    `epoch-NNNN.weights.h5` (model and optimizer variables; `save_weights`) through a temp file
    and rename, then atomically replaces `training_metadata.json` ({"epoch", "weights",
    "sha256"}), then deletes older weight files. It also saves nothing at batch level and keeps the
    backup when training ends (the run removes it once its manifest says completed).
    `restore()` loads the backup before `fit` and returns the epoch to start from;
    `track(callbacks)` names the `StatefulCallback`s whose state is saved in
    `epoch-NNNN.state.npz` with every backup, and hands them their restored state.

    Raises (from `restore`):
        RunDirectoryError: broken metadata or weights (`backup_epoch`), or weights that do not fit
            this model (a checkpoint from another model).
    """
    import keras

    class CrashSafeBackup(keras.callbacks.BackupAndRestore):
        """See `crash_safe_backup`."""

        def __init__(self):
            super().__init__(str(Path(run_dir) / BACKUP_DIR), save_freq="epoch", delete_checkpoint=False)
            self.restored = False
            self.stateful: list[StatefulCallback] = []
            self.restored_state: dict[str, dict[str, np.ndarray]] = {}

        def track(self, callbacks) -> None:
            """Save the state of each `StatefulCallback` in `callbacks` with every backup; on a
            resumed run, give each its saved state now (None if the backup has none for it)."""
            self.stateful = [c for c in callbacks if isinstance(c, StatefulCallback)]
            keys = [c.backup_key for c in self.stateful]
            if len(set(keys)) != len(keys):
                raise ValueError(f"two stateful callbacks share a backup_key: {keys}")
            if self.restored and self.model._initial_epoch:
                for callback in self.stateful:
                    callback.restore_state(self.restored_state.get(callback.backup_key))

        def restore(self) -> int:
            """Load the backup's weights into the (compiled, built) model; return its epoch count."""
            folder = Path(self.backup_dir)
            epoch = backup_epoch(Path(run_dir))
            if epoch:
                weights = folder / manifest_lib.read_json(folder / METADATA)["weights"]
                if not self.model.optimizer.built:
                    self.model.optimizer.build(self.model.trainable_variables)
                problem = None
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        self.model.load_weights(str(weights))
                    except (ValueError, KeyError, OSError) as error:
                        problem = str(error)
                # Keras only warns when the optimizer's variables do not match: that would silently
                # restart momentum and the schedule, so it is an error here.
                skipped = [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)]
                problem = problem or (skipped[0] if skipped else None)
                if problem:
                    raise RunDirectoryError(
                        f"{weights}: does not fit model {type(self.model).__name__} "
                        f"({self.model.count_params()} parameters) and its optimizer: {problem}"
                    )
                self.restored_state = read_backup_state(Path(run_dir))
            self.model._initial_epoch = epoch
            self.restored = True
            return epoch

        def _load_model(self):
            if not self.restored:
                self.restore()

        def on_train_begin(self, logs=None):
            """Restore the backup, unless `restore()` was called already."""
            self._load_model()

        def _save_model(self):
            folder = Path(self.backup_dir)
            folder.mkdir(parents=True, exist_ok=True)
            name = f"epoch-{self._current_epoch:04d}.weights.h5"
            with manifest_lib.atomic_path(folder / name) as tmp:
                self.model.save_weights(str(tmp))
            state_name = f"epoch-{self._current_epoch:04d}.state.npz"
            arrays = {f"{c.backup_key}/{key}": value for c in self.stateful for key, value in c.backup_state().items()}
            with manifest_lib.atomic_path(folder / state_name) as tmp:
                with open(tmp, "wb") as file:
                    np.savez(file, **arrays)
            metadata = {"epoch": self._current_epoch, "weights": name, "sha256": data_lib.sha256_of_file(folder / name),
                        "state": state_name, "state_sha256": data_lib.sha256_of_file(folder / state_name)}
            manifest_lib.write_json_atomic(folder / METADATA, metadata)
            for old in sorted([*folder.glob("epoch-*.weights.h5"), *folder.glob("epoch-*.state.npz")]):
                if old.name not in (name, state_name):
                    old.unlink(missing_ok=True)

    return CrashSafeBackup()


def write_history(path: Path, rows: list[dict]) -> None:
    """Write `rows` (dicts with the same keys, the first row's order) as `history.csv`, atomically."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest_lib.write_text_atomic(path, out.getvalue())


def history_csv(path: Path, kept_rows: list[dict[str, str]]):
    """A callback writing `history.csv` whole after each epoch (temp file + rename).

    Columns as Keras's `CSVLogger`: `epoch` (0-based), then the epoch's logs in sorted key
    order; values as `str(float)`. `kept_rows` are the rows of epochs before a resume.
    """
    import keras

    class HistoryCSV(keras.callbacks.Callback):
        """See `history_csv`."""

        def __init__(self):
            super().__init__()
            self.rows = [dict(row) for row in kept_rows]

        def on_epoch_end(self, epoch, logs=None):
            """Append the epoch's row and rewrite the file."""
            row = {"epoch": str(epoch)}
            row.update({key: str(float(np.asarray(logs[key]))) for key in sorted(logs or {})})
            self.rows.append(row)
            write_history(path, self.rows)

    return HistoryCSV()


def best_checkpoint(path: Path, best_val_accuracy: float):
    """A callback saving the model to `path` (a `.keras` file) whenever `val_accuracy` beats
    `best_val_accuracy` (fraction; -inf for a new run), through a temp file and rename."""
    import keras

    class BestCheckpoint(keras.callbacks.Callback):
        """See `best_checkpoint`."""

        def __init__(self):
            super().__init__()
            self.best = best_val_accuracy

        def on_epoch_end(self, epoch, logs=None):
            """Save when this epoch's val_accuracy is the best so far."""
            value = float((logs or {}).get("val_accuracy", -np.inf))
            if value > self.best:
                self.best = value
                with manifest_lib.atomic_path(path) as tmp:
                    self.model.save(str(tmp))

    return BestCheckpoint()


def dropout_seeds(seed: int):
    """A callback setting every dropout layer's random state from (seed, layer, epoch) at each epoch start.

    Keras's dropout layers draw their masks from a `keras.random.SeedGenerator` whose state
    advances with every step and is not part of the saved weights; resetting it per epoch makes
    the masks of epoch k the same whether or not the run was resumed.
    """
    import keras

    class DropoutSeeds(keras.callbacks.Callback):
        """See `dropout_seeds`."""

        def on_epoch_begin(self, epoch, logs=None):
            """Set each seed generator's state to (hash(seed, layer index, epoch), 0)."""
            generators = [g for layer in self.model.layers for g in getattr(layer, "_seed_generators", [])]
            for index, generator in enumerate(generators):
                first = np.random.SeedSequence([seed, index, epoch]).generate_state(1, np.uint32)[0] >> 1
                generator.state.assign(np.array([first, 0], dtype=generator.state.dtype))

    return DropoutSeeds()


def trim_tensorboard(log_dir: Path, first_epoch: int, keep: tuple[str, ...] = ("test",)) -> int:
    """Drop the events of epochs >= `first_epoch` from the event files under `log_dir`.

    Used on resume: those epochs are trained again and logged anew. Sub-folders named in `keep`
    are left alone; a record cut short by a kill ends the file there. Each file is rewritten via
    temp file + rename. Returns the number of events dropped.
    """
    import tensorflow as tf
    from tensorboard.compat.proto import event_pb2

    dropped = 0
    for path in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        if any(part in keep for part in path.relative_to(log_dir).parts[:-1]) or path.name.startswith(".tmp-"):
            continue
        kept, changed = [], False
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                event = event_pb2.Event.FromString(record.numpy())
                if event.HasField("file_version") or event.step < first_epoch:
                    kept.append(record.numpy())
                else:
                    dropped += 1
                    changed = True
        except tf.errors.DataLossError:  # the last record was cut short
            changed = True
        if changed:
            with manifest_lib.atomic_path(path) as tmp:
                with tf.io.TFRecordWriter(str(tmp)) as writer:
                    for record in kept:
                        writer.write(record)
    return dropped


def process_alive(manifest: dict[str, Any]) -> bool:
    """Whether the process recorded in `manifest` ("host", "pid") is alive on this machine."""
    pid = manifest.get("pid")
    if manifest.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_resumable(run_dir: Path, manifest: dict[str, Any], config: dict[str, Any], checksums: dict[str, str]) -> None:
    """Refuse to resume `run_dir` unless it is unfinished, not running, and of the same experiment and data.

    Raises:
        RunDirectoryError: completed already; still running (its process is alive on this host);
            the experiment config or the dataset checksums differ from the manifest's (names the
            first differing key or file).
    """
    status = manifest.get("status")
    if status not in UNFINISHED:
        raise RunDirectoryError(f"{run_dir}: status {status!r}; only a {'/'.join(UNFINISHED)} run can be resumed")
    if status == "running" and process_alive(manifest):
        raise RunDirectoryError(f"{run_dir}: still running as process {manifest['pid']} on this machine")
    recorded = manifest.get("config")
    if recorded != config:
        key = _first_difference(recorded if isinstance(recorded, dict) else {}, config)
        raise RunDirectoryError(
            f"{run_dir}/manifest.json: the run was started with another experiment config "
            f"(first difference at {key!r}); resume it without changing the experiment or overrides"
        )
    recorded_sums = manifest.get("data", {}).get("checksums_sha256", {})
    if recorded_sums != checksums:
        changed = sorted(k for k in set(recorded_sums) | set(checksums) if recorded_sums.get(k) != checksums.get(k))
        raise RunDirectoryError(
            f"{run_dir}/manifest.json: the dataset differs from the one the run started with "
            f"(files {', '.join(changed)}); resume with the same data"
        )


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return prefix + key
    return ""


def find_unfinished(experiment_dir: Path, config: dict[str, Any]) -> Path | None:
    """The last run directory (by name order) of `experiment_dir` that can be resumed with `config`.

    A run qualifies when its manifest is readable, its status is running (with no live process)
    or interrupted, and its config equals `config`. None when there is none.
    """
    if not experiment_dir.is_dir():
        return None
    found = None
    for path in sorted(experiment_dir.glob("*/manifest.json")):
        try:
            manifest = manifest_lib.read_json(path)
        except (OSError, ValueError):
            continue
        if (isinstance(manifest, dict) and manifest.get("status") in ("running", "interrupted")
                and manifest.get("config") == config and not process_alive(manifest)):
            found = path.parent
    return found


def weights_digest(model) -> str:
    """SHA-256 of the values of the model's weights, then its optimizer's variables, in order.

    Equal digests mean bit-identical weights and optimizer state; unlike a file checksum it does
    not depend on layer names (which Keras numbers per process) or the HDF5 layout.
    """
    digest = hashlib.sha256()
    for variable in [*model.weights, *(model.optimizer.variables if model.optimizer else [])]:
        value = np.ascontiguousarray(np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable))
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def remove_backup(run_dir: Path) -> None:
    """Delete `run_dir/backup/` (once the run is completed)."""
    shutil.rmtree(Path(run_dir) / BACKUP_DIR, ignore_errors=True)
