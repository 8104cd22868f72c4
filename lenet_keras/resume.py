"""Crash safety: the files of a run survive a kill at any moment, and the run can be continued.

What a run writes while it trains, and how each survives SIGKILL or power loss:

    history.csv              rewritten whole after every epoch via temp file + rename (`callbacks.HistoryCSV`)
    best.keras               saved to a temp file, then renamed (`callbacks.BestCheckpoint`)
    backup/                  `callbacks.CrashSafeBackup` (a `keras.callbacks.BackupAndRestore`): after every
                             epoch, epoch-NNNN.weights.h5 (model and optimizer state) and
                             epoch-NNNN.state.npz (what callbacks accumulate: the lookahead
                             average, validation seconds; `callbacks.StatefulCallback`) are written and
                             renamed, then training_metadata.json (the epoch count, the files'
                             names and SHA-256) replaces the previous one; it always names
                             complete files. Removed when the run completes.
    tensorboard/             append-only event files; a record cut short by a kill is skipped by
                             TensorBoard, and on resume the events after the backup are dropped
                             (`trim_tensorboard`, each tag by its own step: the epoch, or the optimizer
                             iteration of `*_vs_iterations`) so the curves have no doubled points.
    manifest.json            written via temp file + rename (`manifest.write_json_atomic`).

`lenet_keras.train.run(..., resume=RUN_DIR)` continues a run from its last completed epoch:
weights, optimizer state (momentum, iteration count, hence the learning-rate schedule), the
state of the callbacks that accumulate any (`StatefulCallback`: airbench's lookahead average)
and the history come from the backup, and the input pipeline is a pure function of (seed, epoch)
(`lenet_keras.pipeline.pipelines`), as are the dropout masks (`callbacks.DropoutSeeds`). So the resumed run
ends with the same final weights and metrics as one never interrupted.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np

from lenet_keras import dataformats
from lenet_keras import manifest as manifest_lib
from lenet_keras.errors import RunDirectoryError

BACKUP_DIR = "backup"
METADATA = "training_metadata.json"
UNFINISHED = ("running", "interrupted", "failed")
"""Statuses a run can be resumed from (a completed run has nothing left to do)."""


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


def checked_backup(run_dir: Path) -> dict[str, Any]:
    """The backup's `training_metadata.json` of `run_dir` ({} when there is none), after checking
    that every file it names exists with the recorded SHA-256.

    Raises:
        RunDirectoryError: training_metadata.json is unreadable, or a file it names is missing
            or its SHA-256 differs (the file changed after it was written).
    """
    metadata_path = Path(run_dir) / BACKUP_DIR / METADATA
    if not metadata_path.exists():
        return {}
    try:
        metadata = manifest_lib.read_json(metadata_path)
        int(metadata["epoch"])
        files = {metadata["weights"]: metadata["sha256"]}
        if "state" in metadata:
            files[metadata["state"]] = metadata["state_sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise RunDirectoryError(f"{metadata_path}: broken backup metadata ({error}); cannot resume this run") from None
    for name, digest in files.items():
        path = metadata_path.parent / name
        if not path.is_file():
            raise RunDirectoryError(f"{path}: missing, but {metadata_path} names it; cannot resume this run")
        if dataformats.sha256_of_file(path) != digest:
            raise RunDirectoryError(f"{path}: SHA-256 differs from the one recorded in {metadata_path} "
                                    "(the file changed after it was written); cannot resume this run")
    return metadata


def backup_epoch(run_dir: Path) -> int:
    """How many epochs the backup of `run_dir` holds (0 when there is none).

    Raises:
        RunDirectoryError: as `checked_backup`.
    """
    return int(checked_backup(run_dir).get("epoch", 0))


def read_backup_state(run_dir: Path, metadata: dict[str, Any] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The callbacks' state in the backup of `run_dir`: backup_key -> {name: array} ({} if none).

    `metadata` is the backup's checked metadata (`checked_backup`, which verifies the SHA-256);
    read and checked here when not given.
    """
    metadata = checked_backup(run_dir) if metadata is None else metadata
    if "state" not in metadata:
        return {}
    return parse_state(Path(run_dir) / BACKUP_DIR / metadata["state"])


def parse_state(source) -> dict[str, dict[str, np.ndarray]]:
    """backup_key -> {name: array} from a backup's state .npz (arrays named `<key>/<name>`):
    `source` is its path or a binary file object (e.g. the bytes a multi-worker chief broadcast)."""
    state: dict[str, dict[str, np.ndarray]] = {}
    with np.load(source, allow_pickle=False) as arrays:
        for name in arrays.files:
            key, _, array_name = name.partition("/")
            state.setdefault(key, {})[array_name] = arrays[name]
    return state


def write_backup_metadata(run_dir: Path, epoch: int, weights: str, state: str) -> None:
    """Atomically point `run_dir/backup/training_metadata.json` at the complete files `weights` and
    `state` (names inside backup/) of `epoch` epochs, with their SHA-256; then delete older files."""
    folder = Path(run_dir) / BACKUP_DIR
    metadata = {"epoch": epoch, "weights": weights, "sha256": dataformats.sha256_of_file(folder / weights),
                "state": state, "state_sha256": dataformats.sha256_of_file(folder / state)}
    manifest_lib.write_json_atomic(folder / METADATA, metadata)
    for old in sorted([*folder.glob("epoch-*.weights.h5"), *folder.glob("epoch-*.state.npz")]):
        if old.name not in (weights, state):
            old.unlink(missing_ok=True)


def write_history(path: Path, rows: list[dict]) -> None:
    """Write `rows` (dicts with the same keys, the first row's order) as `history.csv`, atomically."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest_lib.write_text_atomic(path, out.getvalue())


ITERATION_TAG_SUFFIX = "_vs_iterations"
"""Keras's TensorBoard callback logs `evaluation_<metric>_vs_iterations` with the optimizer's
iteration count as step; every other scalar, histogram and image of a run has the epoch as step."""


def trim_tensorboard(log_dir: Path, first_epoch: int, keep: tuple[str, ...] = ("test",),
                     first_iteration: int | None = None) -> int:
    """Drop the events of epochs >= `first_epoch` from the event files under `log_dir`.

    Used on resume: those epochs are trained again and logged anew. Each tag is trimmed in its own
    step unit: events whose tags end in `ITERATION_TAG_SUFFIX` are kept up to optimizer step
    `first_iteration` included (the backup's iteration count, at which its last epoch's
    validation was logged; None: by `first_epoch` like the others), the others up to epoch
    `first_epoch - 1`. Sub-folders named in `keep` are left alone; a record cut
    short by a kill ends the file there. Each file is rewritten via temp file + rename. Returns
    the number of events dropped.
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
                by_iteration = first_iteration is not None and any(
                    v.tag.endswith(ITERATION_TAG_SUFFIX) for v in event.summary.value)
                kept_step = event.step <= first_iteration if by_iteration else event.step < first_epoch
                if event.HasField("file_version") or kept_step:
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
    """Whether the process recorded in `manifest` ("host", "pid", "process_start") is alive on this machine.

    A live process with the recorded pid but another start (`manifest_lib.process_start`: the pid
    was reused after a reboot or a container restart, common with pid 1 and small pid spaces) is
    not the run's process. A manifest without `process_start` is judged by the pid alone.
    """
    pid = manifest.get("pid")
    if manifest.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    recorded = manifest.get("process_start")
    return recorded is None or manifest_lib.process_start(pid) in (recorded, None)


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
    from lenet_keras import run_index

    recorded = run_index.resolved_config(manifest.get("config"))
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
    """The last run directory (`run_index.run_order`: run-1000 after run-999) of `experiment_dir`
    that can be resumed with `config`: readable manifest, status running (with no live process,
    `process_alive`) or interrupted, and that config. None when there is none."""
    from lenet_keras import run_index

    return run_index.unfinished_run(experiment_dir, config, process_alive)


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
