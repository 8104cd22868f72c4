"""benchmarks.train_phases: the seconds of one train command, by runner stage."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import time
import types

from benchmarks import train_phases
from tests.conftest import REPO


def test_each_stage_is_timed_once_and_the_stage_result_is_unchanged():
    def stage(*args, _name, **kwargs):
        time.sleep(0.05)  # a stage that takes a known least time
        return _name, args, kwargs

    fake_train = types.SimpleNamespace(**{name: functools.partial(stage, _name=name) for name in train_phases.STAGES})
    seconds = {}
    train_phases.timed_stages(fake_train, seconds)
    assert fake_train.fit(1, verbose=2) == ("fit", (1,), {"verbose": 2})  # the wrapped call returns what it returned
    assert list(seconds) == ["fit"] and 0.05 <= seconds["fit"] < 5


def test_a_tiny_mnist_run_prints_every_stage_and_each_epoch(mnist_dir, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_phases", "experiments/mnist_lenet5_quick.toml", "data.train_subset=600",
         "data.test_subset=100", "--runs-dir", str(tmp_path)],  # MNIST found as the mnist_dir fixture found it
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout.split("seconds by stage of one train command:")[1]
    names = [line.split("  ")[1].strip() for line in table.strip().splitlines()]
    assert names[1:1 + len(train_phases.STAGES)] == list(train_phases.STAGES)
    epochs = re.search(r"epochs \(history.csv epoch_seconds\)\s+([\d. ]+)\n", table).group(1).split()
    assert len(epochs) == 2  # mnist_lenet5_quick trains 2 epochs
    whole = float(re.search(r"whole command \(this module start to end\)\s+([\d.]+)", table).group(1))
    stages = [float(line.split()[-1]) for line in table.strip().splitlines()[:1 + len(train_phases.STAGES)]]
    assert 0 < sum(stages) <= whole + 0.005 * len(stages)  # each printed figure is rounded to 0.01 s
    manifest = json.loads((tmp_path / "mnist_lenet5_quick" / "run-001" / "manifest.json").read_text())
    assert manifest["status"] == "completed"
