"""manifest.atomic_path: file and directory fsynced around the rename; a failed write leaves no trace."""

from __future__ import annotations

import os
import sys

import pytest

from lenet_keras import manifest


@pytest.fixture()
def recorded(monkeypatch):
    """A log of ("fsync", inode) and ("replace", target name) events, in order, with the real calls made."""
    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.fspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(manifest.os, "fsync", fsync)
    monkeypatch.setattr(manifest.os, "replace", replace)
    return events


@pytest.mark.skipif(sys.platform == "win32", reason="directories cannot be fsynced on Windows")
def test_directory_is_fsynced_after_the_rename(tmp_path, recorded):
    target = tmp_path / "manifest.json"
    target.write_text("old")

    manifest.write_json_atomic(target, {"status": "completed"})

    assert manifest.read_json(target) == {"status": "completed"}
    directory_inode = tmp_path.stat().st_ino
    file_inode = target.stat().st_ino  # the renamed temp file keeps its inode
    kinds = [kind for kind, _ in recorded]
    assert ("fsync", file_inode) in recorded, recorded
    assert ("fsync", directory_inode) in recorded, recorded
    rename = kinds.index("replace")
    assert recorded.index(("fsync", file_inode)) < rename, "content must be on disk before the rename"
    assert recorded.index(("fsync", directory_inode)) > rename, "the directory must be fsynced after the rename"


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, recorded):
    target = tmp_path / "history.csv"
    target.write_text("epoch,loss\n1,0.5\n")

    with pytest.raises(RuntimeError, match="disk full"):
        with manifest.atomic_path(target) as tmp:
            assert tmp.name == f".tmp-{os.getpid()}-history.csv"
            tmp.write_text("epoch,loss\n1,0.5\n2,")  # half written, then the writer fails
            raise RuntimeError("disk full")

    assert target.read_text() == "epoch,loss\n1,0.5\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["history.csv"]
    assert not any(kind == "replace" for kind, _ in recorded)


def test_a_failed_rename_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    target.write_text('{"status": "running"}')

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(manifest.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        manifest.write_json_atomic(target, {"status": "completed"})

    assert manifest.read_json(target) == {"status": "running"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["manifest.json"]


def test_directory_fsync_is_skipped_where_directories_cannot_be_opened(tmp_path, monkeypatch):
    """Windows: os.open on a directory raises PermissionError; the write still succeeds."""
    real_open = os.open

    def windows_open(path, flags, *args):
        if os.path.isdir(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(manifest.os, "open", windows_open)
    target = tmp_path / "manifest.json"
    manifest.write_json_atomic(target, {"status": "completed"})
    assert manifest.read_json(target) == {"status": "completed"}


def test_the_machine_block_imports_no_tensorflow_in_a_process_without_it():
    """The NumPy engine's manifest must not load TensorFlow (it lists GPUs only when TF is loaded)."""
    import subprocess
    import sys

    code = ("import sys; from lenet_keras import manifest; block = manifest.machine(); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; assert block['gpus'] is None; "
            "import tensorflow; assert manifest.machine()['gpus'] == []")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
