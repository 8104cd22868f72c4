"""A run's TensorBoard HParams session and Keras-style epoch scalars, written without TensorFlow.

Owns: the hyperparameters of a run's session (`session_hparams`: its manifest's resolved config
flattened with dotted keys, plus its engine), writing that session (`write_run_session`,
`ensure_run_session`), the epoch scalars of an engine without Keras's TensorBoard callback
(`EpochScalars`: the tags and folders Keras 3 writes) and reading event files back
(`read_events`, `session_start_infos`).

Every run of every engine (`lenet_keras.train`, `lenet_keras.scratch.train`, sweep trials, which
are normal runs) has exactly one HParams session, in `<run>/tensorboard/` itself. TensorBoard
finds its metrics below that folder: `epoch_accuracy` and `epoch_loss` in the `train` and
`validation` groups (`<run>/tensorboard/train`, `.../validation`) and `test_accuracy` in `test`.
So `tensorboard --logdir runs/` lists every run in its HParams tab, comparable by config. No
experiment summary (`hp.hparams_config`) is written anywhere, sweeps included: one under the
logdir would become the columns of every session (only a sweep's swept keys), so TensorBoard
infers the columns from the sessions themselves (the union of their keys) and their scalars.

The session is written once, when a run starts (so a failed or interrupted run is listed too,
with the epochs it finished). Resuming a run does not write another: its config is the one
recorded (`resume.check_resumable`), so the first session stays. Resuming trims events of the
epochs trained again (`resume.trim_tensorboard`), which drops the session (step 0) when the
run resumes from epoch 0; `ensure_run_session` then writes it anew, so a resumed run also ends
with exactly one session.

Only `tensorboard`'s protos and its pure-Python CRC-32C are used, records framed here (`_record`):
the NumPy engine must not load TensorFlow (tests/test_code_shape.py), and
`tensorboard.summary.Writer` / `EventFileWriter` would (they use `tf.io.gfile`).
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any, Iterator

from lenet_keras import manifest as manifest_lib
from lenet_keras import run_index

_SESSION_SUFFIX = ".hparams"
_file_numbers = itertools.count()






def session_hparams(manifest: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """The session's hyperparameters: `manifest["config"]` flattened (`run_index.flatten`) and `engine`."""
    return {**run_index.flatten(manifest["config"]), "engine": run_index.engine_of(manifest)}


def session_name(manifest: dict[str, Any]) -> str:
    """`<experiment>/<run_id>`: the session's group name (each run is its own group)."""
    return f"{manifest['experiment']}/{manifest['run_id']}"


def _event_file_name(suffix: str = "") -> str:
    """An event file name TensorBoard reads: `events.out.tfevents.<time>.<host>.<pid>.<n>.v2<suffix>`."""
    return f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}." \
           f"{next(_file_numbers)}.v2{suffix}"


def _record(event) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the serialized event, its masked CRC-32C."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    data = event.SerializeToString()
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def _file_version_event():
    from tensorboard.compat.proto import event_pb2

    return event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")


def write_session(log_dir: Path, hparams: dict[str, Any], name: str) -> Path:
    """Write one HParams session (`hp.hparams` with `trial_id=name`) as its own event file in
    `log_dir`, atomically (temp file + rename); returns the file."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.hparams import summary_v2

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    summary = summary_v2.hparams_pb(dict(hparams), trial_id=name)
    event = event_pb2.Event(wall_time=time.time(), step=0, summary=summary)
    path = log_dir / _event_file_name(_SESSION_SUFFIX)
    with manifest_lib.atomic_path(path) as tmp:
        tmp.write_bytes(_record(_file_version_event()) + _record(event))
    return path


def write_run_session(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """The run's session (`session_hparams`, `session_name`) in `run_dir/tensorboard/`."""
    return write_session(Path(run_dir) / "tensorboard", session_hparams(manifest), session_name(manifest))


def ensure_run_session(run_dir: Path, manifest: dict[str, Any]) -> bool:
    """On resume: write the run's session unless `run_dir/tensorboard/` holds one; True if written."""
    if session_start_infos(Path(run_dir) / "tensorboard"):
        return False
    write_run_session(run_dir, manifest)
    return True


def read_events(path: Path) -> Iterator[Any]:
    """The `Event` protos of one event file, in order; a record cut short (a kill) ends it."""
    from tensorboard.compat.proto import event_pb2

    data = Path(path).read_bytes()
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        end = offset + 12 + length + 4
        if end > len(data):
            return
        yield event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
        offset = end


def session_start_infos(log_dir: Path) -> list[Any]:
    """The HParams `SessionStartInfo` protos in the event files directly in `log_dir` (not below)."""
    from tensorboard.plugins.hparams import metadata

    found = []
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in read_events(path):
            for value in event.summary.value:
                if value.tag == metadata.SESSION_START_INFO_TAG:
                    found.append(metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content))
    return found


def keras_epoch_scalars(row: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{"train": {tag: value}, "validation": {tag: value}} for one history row, named as Keras 3's
    TensorBoard callback names epoch logs: `val_<x>` goes to validation as `epoch_<x>`, any other
    key to train as `epoch_<x>` (`epoch_accuracy`, `epoch_loss`, `epoch_learning_rate`,
    `epoch_epoch_seconds`); the `epoch` column is the step."""
    groups: dict[str, dict[str, float]] = {"train": {}, "validation": {}}
    for key, value in row.items():
        if key == "epoch":
            continue
        group, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
        groups[group][f"epoch_{name}"] = float(value)
    return groups


class EpochScalars:
    """Epoch scalars in `log_dir/train` and `log_dir/validation` with Keras's tags (`keras_epoch_scalars`),
    float32 scalar tensors with the "scalars" plugin's metadata, step = epoch (0-based), and the
    test scalars in `log_dir/test`, as a Keras run writes them (`train.log_test_results`). Each
    write appends one event and flushes; use as a context manager, or `close()`."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.files: dict[str, Any] = {}

    def _file(self, group: str):
        if group not in self.files:
            folder = self.log_dir / group
            folder.mkdir(parents=True, exist_ok=True)
            self.files[group] = open(folder / _event_file_name(), "ab")
            self.files[group].write(_record(_file_version_event()))
        return self.files[group]

    def write(self, row: dict[str, Any]) -> None:
        """Write one history row (its `epoch` is the step)."""
        for group, scalars in keras_epoch_scalars(row).items():
            if scalars:
                self.write_scalars(group, int(row["epoch"]), scalars)

    def write_test(self, step: int, loss: float, accuracy: float) -> None:
        """`test_loss` and `test_accuracy` in `log_dir/test` at `step` (the epochs trained), as a Keras run."""
        self.write_scalars("test", step, {"test_loss": loss, "test_accuracy": accuracy})

    def write_scalars(self, group: str, step: int, scalars: dict[str, float]) -> None:
        """One event in `log_dir/<group>` with each tag's float32 scalar at `step`; flushed."""
        import numpy as np
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.util import tensor_util

        summary = summary_pb2.Summary()
        plugin = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        for tag, value in scalars.items():
            summary.value.add(tag=tag, metadata=plugin, tensor=tensor_util.make_tensor_proto(np.float32(value)))
        handle = self._file(group)
        handle.write(_record(event_pb2.Event(wall_time=time.time(), step=step, summary=summary)))
        handle.flush()

    def close(self) -> None:
        """Close the event files."""
        for handle in self.files.values():
            handle.close()
        self.files = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
