"""Determinism and crash safety on real MNIST: byte-identical reruns, SIGKILL mid-epoch then --resume."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lenet_keras import callbacks, config, dataformats, resume, train
from lenet_keras import manifest as manifest_lib
from lenet_keras.errors import RunDirectoryError

from .conftest import REPO

EXPERIMENT = REPO / "experiments/mnist_lenet5.toml"
SMALL = ["train.epochs=3", "data.train_subset=1500", "data.test_subset=300", "train.batch_size=100"]
STEPS = 14  # batches per epoch: 1500 images, 10% validation -> 1350 training images / 100


def _history_without_timing(run_dir):
    lines = (run_dir / "history.csv").read_text().splitlines()
    column = lines[0].split(",").index("epoch_seconds")
    return [",".join(v for i, v in enumerate(line.split(",")) if i != column) for line in lines]


def _weights(run_dir):
    import h5py

    arrays = {}

    def _collect(name, item):
        if isinstance(item, h5py.Dataset):
            arrays[name] = item[()]

    with h5py.File(run_dir / train.FINAL_WEIGHTS, "r") as f:
        f.visititems(_collect)
    return arrays


def _scalar_steps(log_dir, tag):
    import tensorflow as tf
    from tensorboard.compat.proto import event_pb2

    steps = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return sorted(steps)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_dir):
    """Two uninterrupted runs of the same small experiment (same seed, same process)."""
    runs_dir = tmp_path_factory.mktemp("runs")
    experiment = config.load(EXPERIMENT, SMALL)
    first = train.run(experiment, runs_dir, data_dir=mnist_dir, run_id="first", verbose=0)
    second = train.run(experiment, runs_dir, data_dir=mnist_dir, run_id="second", verbose=0)
    return runs_dir, first, second


def test_two_runs_are_byte_identical(uninterrupted):
    _, first, second = uninterrupted
    assert _history_without_timing(first) == _history_without_timing(second)
    assert len(_history_without_timing(first)) == 1 + 3
    a, b = _weights(first), _weights(second)
    assert a.keys() == b.keys() and len(a) >= 10  # model layers and optimizer variables
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (first, second)]
    assert manifests[0]["test"] == manifests[1]["test"] and manifests[0]["status"] == "completed"
    assert manifests[0]["final_weights"]["values_sha256"] == manifests[1]["final_weights"]["values_sha256"]
    assert not (first / resume.BACKUP_DIR).exists()  # removed once completed


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import keras
    from lenet_keras import config, train

    KILL_EPOCH, KILL_BATCH = int(os.environ.get("KILL_EPOCH", 1)), int(os.environ.get("KILL_BATCH", 6))

    class KillMidEpoch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self._epoch == KILL_EPOCH and batch == KILL_BATCH:
                os.kill(os.getpid(), signal.SIGKILL)
        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

    experiment = config.load(sys.argv[1], sys.argv[4:])
    train.run(experiment, sys.argv[2], data_dir=sys.argv[3], run_id="killed", verbose=0, callbacks=(KillMidEpoch(),))
    """
)


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_result(uninterrupted, mnist_dir):
    runs_dir, first, _ = uninterrupted
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(EXPERIMENT), str(runs_dir), str(mnist_dir), *SMALL],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL in epoch 1, batch 6
    run_dir = runs_dir / "mnist_lenet5" / "killed"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "running"  # nobody could record the kill
    assert resume.backup_epoch(run_dir) == 1
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 1
    assert not list(run_dir.rglob(".tmp-*"))

    resumed = subprocess.run(
        [sys.executable, "-m", "lenet_keras", "train", "--resume", str(run_dir), "--data-dir", str(mnist_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["resumed"][0]["from_epoch"] == 1
    assert _history_without_timing(run_dir) == _history_without_timing(first)
    a, b = _weights(first), _weights(run_dir)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert manifest["test"] == json.loads((first / "manifest.json").read_text())["test"]
    # TensorBoard: one point per epoch, the killed attempt's partial epoch dropped
    assert _scalar_steps(run_dir / "tensorboard" / "train", "epoch_loss") == [0, 1, 2]
    assert _scalar_steps(run_dir / "tensorboard" / "validation", "epoch_accuracy") == [0, 1, 2]
    # curves with the optimizer's iteration as step keep their points from before the kill
    iterations = _scalar_steps(first / "tensorboard" / "validation", "evaluation_loss_vs_iterations")
    assert iterations[0] > 2 and iterations == [iterations[0], 2 * iterations[0], 3 * iterations[0]]  # steps 12, 24, 36
    assert _scalar_steps(run_dir / "tensorboard" / "validation", "evaluation_loss_vs_iterations") == iterations
    assert not (run_dir / resume.BACKUP_DIR).exists()


def _interrupted_copy(source, tmp_path, epoch_files=True):
    """A copy of a completed run made to look killed after epoch 1 (backup of epoch 1's state)."""
    import shutil

    import keras

    target = tmp_path / "mnist_lenet5" / "copy"
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest.update(status="interrupted", pid=None)
    (target / "manifest.json").write_text(json.dumps(manifest))
    model = keras.models.load_model(target / "best.keras")
    backup = callbacks.CrashSafeBackup(target)
    backup.set_model(model)
    backup._current_epoch = 1  # Keras's BackupAndRestore counter, as after epoch 1
    backup._save_model()
    return target


def test_completed_runs_other_configs_and_live_runs_are_not_resumed(uninterrupted, mnist_dir, tmp_path):
    _, first, _ = uninterrupted
    experiment = config.load(EXPERIMENT, SMALL)
    with pytest.raises(RunDirectoryError, match="status 'completed'"):
        train.run(experiment, data_dir=mnist_dir, resume=first, verbose=0)
    copy = _interrupted_copy(first, tmp_path)
    with pytest.raises(RunDirectoryError, match="first difference at 'seed'"):
        train.run(config.load(EXPERIMENT, [*SMALL, "seed=9"]), data_dir=mnist_dir, resume=copy, verbose=0)
    manifest = json.loads((copy / "manifest.json").read_text())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        manifest.update(status="running", pid=sleeper.pid, host=__import__("socket").gethostname(),
                        process_start=manifest_lib.process_start(sleeper.pid))
        (copy / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(RunDirectoryError, match=f"still running as process {sleeper.pid}"):
            train.run(experiment, data_dir=mnist_dir, resume=copy, verbose=0)
        assert resume.find_unfinished(tmp_path / "mnist_lenet5", manifest["config"]) is None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert resume.find_unfinished(tmp_path / "mnist_lenet5", manifest["config"]) == copy


def test_changed_or_foreign_backup_is_a_clear_error(uninterrupted, mnist_dir, tmp_path):
    import keras

    _, first, _ = uninterrupted
    experiment = config.load(EXPERIMENT, SMALL)
    copy = _interrupted_copy(first, tmp_path)
    weights = copy / resume.BACKUP_DIR / "epoch-0001.weights.h5"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated after it was written
    with pytest.raises(RunDirectoryError, match="SHA-256 differs"):
        train.run(experiment, data_dir=mnist_dir, resume=copy, verbose=0)

    other = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    other.compile(optimizer="sgd", loss="mse")
    other.save_weights(str(weights))  # a checkpoint of another model, recorded as if ours
    metadata = copy / resume.BACKUP_DIR / resume.METADATA
    record = json.loads(metadata.read_text())
    record["sha256"] = dataformats.sha256_of_file(weights)
    metadata.write_text(json.dumps(record))
    with pytest.raises(RunDirectoryError, match="does not fit model LeNet5"):
        train.run(experiment, data_dir=mnist_dir, resume=copy, verbose=0)
    from lenet_keras import models

    same_model = models.build(experiment.model, (28, 28, 1), 10)
    same_model.compile(optimizer="adam", loss="mse")  # same layers, other optimizer variables
    same_model.optimizer.build(same_model.trainable_variables)
    same_model.save_weights(str(weights))
    record["sha256"] = dataformats.sha256_of_file(weights)
    metadata.write_text(json.dumps(record))
    with pytest.raises(RunDirectoryError, match="and its optimizer: Skipping variable loading"):
        train.run(experiment, data_dir=mnist_dir, resume=copy, verbose=0)
    metadata.write_text("{not json")
    with pytest.raises(RunDirectoryError, match="broken backup metadata"):
        train.run(experiment, data_dir=mnist_dir, resume=copy, verbose=0)


def test_cli_resume_without_a_run_starts_a_new_one_and_names_bad_dirs(tmp_path, mnist_dir, capsys):
    from lenet_keras import cli

    args = ["train", str(EXPERIMENT), *SMALL, "train.epochs=1", "--runs-dir", str(tmp_path), "--data-dir", str(mnist_dir)]
    assert cli.main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "starting a new one" in out and (tmp_path / "mnist_lenet5" / "run-001" / "manifest.json").is_file()
    assert cli.main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "nowhere is not a run directory" in capsys.readouterr().err
    assert cli.main(["train"]) == 2
    assert "--resume RUN_DIR" in capsys.readouterr().err


CIFAR_FAST = REPO / "experiments/cifar_fast.toml"
CIFAR_SMALL = ["data.dataset=image_folder", "data.path=cifar10-jpeg", "data.train_subset=512",
               "data.test_subset=128", "train.batch_size=128", "train.epochs=4"]  # 4 steps per epoch


def test_cifar_fast_killed_after_lookahead_started_resumes_bit_identically(tmp_path, cifar_root):
    """cifar_fast keeps a lookahead average (every 5th step) outside the weights: the backup saves
    it, so a run killed in epoch 2 (step 10, after two lookahead updates) and resumed ends with the
    uninterrupted run's weights, history and test metrics; the whitening bias freezes at epoch 3
    after the resume. Validation seconds count the killed attempt's epochs too."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KILL_EPOCH": "2", "KILL_BATCH": "1"}
    # the reference in a fresh process too, as the killed and the resumed runs: a cifar_fast run
    # inside this test process, after other runs in it, is not bit-identical to a fresh process's
    uninterrupted = subprocess.run(
        [sys.executable, "-m", "lenet_keras", "train", str(CIFAR_FAST), *CIFAR_SMALL, "--runs-dir", str(tmp_path),
         "--run-id", "first", "--data-dir", str(cifar_root)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]
    first = tmp_path / "cifar_fast" / "first"
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(CIFAR_FAST), str(tmp_path), str(cifar_root), *CIFAR_SMALL],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = tmp_path / "cifar_fast" / "killed"
    assert resume.backup_epoch(run_dir) == 2
    state = resume.read_backup_state(run_dir)
    assert len(state["lookahead"]) > 10  # one average per float variable of the model
    seconds_before = float(state["speed"]["validation_seconds"])
    assert seconds_before > 0
    resumed = subprocess.run(
        [sys.executable, "-m", "lenet_keras", "train", "--resume", str(run_dir), "--data-dir", str(cifar_root)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _history_without_timing(run_dir) == _history_without_timing(first)
    a, b = _weights(first), _weights(run_dir)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    first_manifest = json.loads((first / "manifest.json").read_text())
    timing = ("tta_seconds",)
    assert {k: v for k, v in manifest["test"].items() if k not in timing} == \
        {k: v for k, v in first_manifest["test"].items() if k not in timing}
    assert manifest["final_weights"] == first_manifest["final_weights"]
    assert manifest["speed"]["validation_seconds"] > seconds_before


def test_throughput_callback_adds_to_the_restored_validation_seconds():
    record = {}
    callback = callbacks.Throughput(32, 10, 2, record, quiet=True)
    callback.restore_state({"validation_seconds": np.float64(7.5)})
    callback.on_test_begin()
    callback.on_test_end()
    assert 7.5 <= record["validation_seconds"] < 8.5
    assert float(callback.backup_state()["validation_seconds"]) == record["validation_seconds"]


def test_a_reused_pid_does_not_make_a_dead_run_look_alive(tmp_path):
    """A manifest's pid now held by another process (a container restart, pid reuse) is not its run's process:
    the recorded process start tells them apart, so `resume` finds the run."""
    import socket

    full = json.loads(json.dumps(config.load(EXPERIMENT, ["seed=1"]).to_dict()))  # as rundir.config_block
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir = tmp_path / "mnist_lenet5" / "run-001"
        run_dir.mkdir(parents=True)
        own = {"status": "running", "config": full, "host": socket.gethostname(), "pid": sleeper.pid,
               "process_start": manifest_lib.process_start(sleeper.pid)}
        assert own["process_start"] and resume.process_alive(own)
        (run_dir / "manifest.json").write_text(json.dumps(own))
        assert resume.find_unfinished(tmp_path / "mnist_lenet5", full) is None  # its live process
        reused = {**own, "process_start": own["process_start"].rsplit(":", 1)[0] + ":1"}  # started at another tick
        assert not resume.process_alive(reused)
        (run_dir / "manifest.json").write_text(json.dumps(reused))
        assert resume.find_unfinished(tmp_path / "mnist_lenet5", full) == run_dir
    finally:
        sleeper.kill()
        sleeper.wait()
