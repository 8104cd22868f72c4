"""What a run directory's `manifest.json` records about the world: versions, machine, git.

Also the atomic JSON writer every run file that others read goes through.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from lenet_keras.errors import RunDirectoryError

PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "tensorboard", "pandas", "matplotlib")


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path`; when the block ends without error, it replaces `path`.

    The temporary name (`.tmp-PID-NAME`) ends with `path`'s name (so `.keras`, `.weights.h5`,
    `.npz` writers accept it). Its content is flushed to disk (fsync) before the rename, and the
    directory is fsynced after the rename (so the rename itself is on disk): after a crash or power
    loss `path` holds either its old or its new content, never a partial one. On platforms where a
    directory cannot be opened (Windows), the directory fsync is skipped, and the rename may be lost
    on power loss (the file then holds its old content). On error the temporary file is removed and
    `path` is untouched.

    Raises:
        OSError: writing, the file fsync or the rename failed (whatever the block raised is
            re-raised as well); `path` is then untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    """Flush `directory`'s entries (a rename in it) to disk; a no-op where a directory cannot be opened.

    POSIX needs this for a rename to survive power loss; Windows cannot open a directory with
    `os.open` (PermissionError) and has no directory fsync, so there it is skipped, as it is on
    file systems that refuse fsync on a directory (EINVAL, ENOTSUP).

    Raises:
        OSError: the fsync itself failed (e.g. EIO), on a platform and file system that support it.
    """
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        descriptor = os.open(directory, flags)
    except (PermissionError, IsADirectoryError):
        return  # Windows: directories cannot be opened or fsynced
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, getattr(errno, "ENOTSUP", errno.EINVAL)):
            raise
    finally:
        os.close(descriptor)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` through `atomic_path` (never half-written)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` through `atomic_path` (never half-written)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from `path`."""
    return json.loads(path.read_text(encoding="utf-8"))


def read_run_manifest(run_dir: Path) -> dict:
    """The manifest of `run_dir`, checked to be a run's manifest.

    Raises:
        RunDirectoryError: no manifest.json, not valid JSON, or without the resolved `config`.
    """
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir} is not a run directory: it has no manifest.json")
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as error:
        raise RunDirectoryError(f"{path} is broken (not valid JSON: {error}); the run cannot be reproduced or resumed from it") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        raise RunDirectoryError(f"{path} has no 'config' table: it is not a lenet-keras run manifest")
    return manifest


def utc_now() -> str:
    """The current UTC time, ISO 8601 with seconds (e.g. 2026-11-25T02:21:00Z)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def versions() -> dict[str, str]:
    """Versions of Python and of the installed packages that decide a run's numbers."""
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The machine: OS, CPU model, logical CPUs usable by this process, and TensorFlow's GPUs and
    threads when this process has loaded TensorFlow (a Keras run); a process without it (the
    NumPy engine, a peer's record) gets null there instead of importing TensorFlow for it."""
    tf = sys.modules.get("tensorflow")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": usable,
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")] if tf else None,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() if tf else None,
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() if tf else None,
    }


def process_start(pid: int) -> str | None:
    """An identity of process `pid`'s start that a later process reusing the pid does not share:
    "<boot id>:<start time in clock ticks after boot>" (Linux: /proc/sys/kernel/random/boot_id and
    field 22 of /proc/<pid>/stat). None where /proc does not tell (not Linux, or no such process).
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (command) ": field 3 onwards
    return f"{boot}:{fields[19]}"


def git_state(directory: Path) -> dict[str, Any]:
    """The git commit of `directory` and whether tracked files have uncommitted changes."""

    def _git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip()

    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def mask_password(text: str) -> str:
    """`text` with the password of any `scheme://user:password@host` URL replaced by `***`."""
    return re.sub(r"(://[^/:@\s]+:)[^@\s]+@", r"\1***@", text)


def command_line() -> str:
    """The command that started this process (`python -m lenet_keras ...` for the CLI), passwords masked."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "lenet_keras":
        argv[0:1] = ["-m", "lenet_keras"]
    return mask_password(" ".join(["python", *argv]))
