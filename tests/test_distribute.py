"""`[distribution]` on real MNIST subsets: MirroredStrategy over two logical CPU devices against
one device, two MultiWorkerMirroredStrategy workers on 127.0.0.1 (TF_CONFIG), the learning-rate
scaling, and the errors. Strategies that must be set up at program start run in subprocesses,
through the real command line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

from lenet_keras import config, distribute
from lenet_keras.errors import ConfigError

from .conftest import REPO

SMALL = ["train.epochs=1", "data.train_subset=2048", "data.test_subset=512", "train.histogram_freq=0",
         "train.batch_size=128"]
WEIGHTS_TOLERANCE = 1e-5
"""Mirrored vs one device: the all-reduce adds the two half-batch gradients in another order than
one device sums the whole batch, so weights may differ by float32 rounding (measured: at most
2.2e-8 after this one epoch of 16 steps); 1e-5 absolute leaves room and still catches a wrong
batch split, which moves weights by ~1e-3."""


def _train(runs_dir, mnist_dir, *overrides, env=None):
    """Start `python -m lenet_keras train` on the MNIST subset (a Popen)."""
    command = [sys.executable, "-m", "lenet_keras", "train", str(REPO / "experiments/mnist_lenet5.toml"), *SMALL,
               *overrides, "--runs-dir", str(runs_dir), "--data-dir", str(mnist_dir)]
    return subprocess.Popen(command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process, timeout=300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def _weights(run_dir) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(run_dir / "final.weights.h5") as file:
        file.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def _manifest(run_dir) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_mirrored_over_two_cpu_devices_matches_one_device(tmp_path, mnist_dir):
    _finish(_train(tmp_path / "one", mnist_dir))
    _finish(_train(tmp_path / "two", mnist_dir, "distribution.strategy=mirrored", "distribution.cpu_replicas=2"))
    one, two = tmp_path / "one/mnist_lenet5/run-001", tmp_path / "two/mnist_lenet5/run-001"
    cluster = _manifest(two)["distribution"]
    assert (cluster["strategy"], cluster["replicas"], cluster["workers"]) == ("mirrored", 2, 1)
    assert cluster["device_kinds"] == ["CPU"] and len(cluster["devices"]) == 2
    assert _manifest(one)["distribution"]["replicas"] == 1
    a, b = _weights(one), _weights(two)
    assert set(a) == set(b) and len(a) > 10  # model and optimizer variables
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=WEIGHTS_TOLERANCE, err_msg=name)
    history_one, history_two = pd.read_csv(one / "history.csv"), pd.read_csv(two / "history.csv")
    for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(history_one[column], history_two[column], rtol=1e-5, err_msg=column)
    assert _manifest(one)["test"]["accuracy"] == pytest.approx(_manifest(two)["test"]["accuracy"], abs=1 / 512)


def test_two_workers_on_localhost_end_identical_and_only_the_chief_writes(tmp_path, mnist_dir):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = [
        _train(tmp_path / "runs", mnist_dir, "distribution.strategy=multi_worker",
               env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})})
        for index in range(2)
    ]
    chief_output, other_output = (_finish(worker) for worker in workers)
    runs = sorted((tmp_path / "runs").rglob("manifest.json"))
    assert [path.parent.name for path in runs] == ["run-001"], runs  # only the chief's run directory
    manifest = json.loads(runs[0].read_text())
    assert manifest["status"] == "completed"
    assert {k: manifest["distribution"][k] for k in ("strategy", "workers", "replicas", "task")} == {
        "strategy": "multi_worker", "workers": 2, "replicas": 2, "task": "worker:0"}
    digest = manifest["final_weights"]["values_sha256"]
    assert f"worker:1: done, final weights values_sha256 {digest}" in other_output  # identical weights
    temporary = other_output.split("temporary folder ")[1].split(" is removed")[0]
    assert not os.path.exists(temporary)
    assert "run directory:" in chief_output and "run directory:" not in other_output


def test_scaled_learning_rate_multiplies_the_schedule(mnist_dir):
    from lenet_keras import data, train

    experiment = config.load(REPO / "experiments/mnist_lenet5.toml", SMALL)
    dataset = data.load(experiment.data, mnist_dir)
    base = train.compiled_model(experiment, dataset).optimizer
    scaled = train.compiled_model(experiment, dataset, learning_rate_scale=2).optimizer
    assert float(scaled.learning_rate) == pytest.approx(2 * float(base.learning_rate))
    assert float(base.learning_rate) == pytest.approx(0.01)


@pytest.mark.parametrize("overrides, message", [
    (["distribution.strategy=parameter_server"], "distribution.strategy"),
    (["distribution.cpu_replicas=2"], "needs distribution.strategy = \"mirrored\""),
    (["distribution.cpu_replicas=-1"], "distribution.cpu_replicas"),
])
def test_bad_distribution_keys_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config.load(REPO / "experiments/mnist_lenet5.toml", overrides)


@pytest.mark.parametrize("value, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {}}', "\"cluster\" and \"task\""),
])
def test_multi_worker_needs_a_valid_tf_config(monkeypatch, value, message):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ConfigError, match=message):
        distribute.tf_config()


def _start_workers(runs_dir, mnist_dir, *overrides):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return [
        _train(runs_dir, mnist_dir, "distribution.strategy=multi_worker", *overrides,
               env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})})
        for index in range(2)
    ]


def test_a_killed_multi_worker_job_resumes_to_the_same_weights(tmp_path, mnist_dir):
    """SIGKILL both workers after the chief's first backup, start both again with --resume:
    the chief restores its backup, worker 1 gets it by broadcast (weights, optimizer and the
    lookahead callback's average), and the result equals an uninterrupted two-worker run."""
    import signal
    import time

    longer = ["train.epochs=3", "data.train_subset=6144", "train.lookahead=true"]
    for worker in _start_workers(tmp_path / "whole", mnist_dir, *longer):
        _finish(worker)
    expected = _manifest(tmp_path / "whole/mnist_lenet5/run-001")["final_weights"]["values_sha256"]

    workers = _start_workers(tmp_path / "runs", mnist_dir, *longer)
    metadata = tmp_path / "runs/mnist_lenet5/run-001/backup/training_metadata.json"
    deadline = time.monotonic() + 240
    while not metadata.exists() and time.monotonic() < deadline and workers[0].poll() is None:
        time.sleep(0.05)
    for worker in workers:
        worker.send_signal(signal.SIGKILL)
        worker.communicate()
    assert metadata.exists(), "the chief never wrote a backup"
    run_dir = tmp_path / "runs/mnist_lenet5/run-001"
    assert _manifest(run_dir)["status"] == "running"  # killed: nothing could record it

    outputs = [_finish(worker) for worker in _start_workers(tmp_path / "runs", mnist_dir, *longer, "--resume")]
    assert f"resuming {run_dir}" in outputs[0]
    manifest = _manifest(run_dir)
    assert manifest["status"] == "completed" and manifest["resumed"][0]["from_epoch"] >= 1
    assert manifest["final_weights"]["values_sha256"] == expected
    assert f"values_sha256 {expected}" in outputs[1]
    assert list(pd.read_csv(run_dir / "history.csv")["epoch"]) == [0, 1, 2]
