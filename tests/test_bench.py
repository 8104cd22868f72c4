"""The benchmark's own arithmetic, checked against hand-computed numbers, and one real (short) LeNet-5 measurement."""

import re
from pathlib import Path

import numpy as np
import pytest

from lenet_keras import bench, config, models
from lenet_keras.config import ModelConfig

LENET5_FORWARD_MACS = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 120 * 400 + 120 * 84 + 84 * 10
"""Multiply-adds of one LeNet-5 forward pass (conv1, conv2, conv3, dense 84, dense 10)."""


def test_forward_flops_count_the_convolutions_and_matmuls():
    model = models.build(ModelConfig(name="lenet5"), (28, 28, 1), 10)
    flops = bench.forward_flops(model, (28, 28, 1))
    # 2 FLOPs per multiply-add, plus the small change of biases, pooling and softmax
    assert 2 * LENET5_FORWARD_MACS <= flops <= 1.05 * 2 * LENET5_FORWARD_MACS


def test_batch_images_counts_the_partial_last_batch():
    # by hand: 50,000 = 97 x 512 + 336; 48,000 = 93 x 512 + 384; 1,498 = 11 x 128 + 90
    assert bench.batch_images(50_000, 512, 0) == 512
    assert bench.batch_images(50_000, 512, 96) == 512
    assert bench.batch_images(50_000, 512, 97) == 336
    assert bench.batch_images(48_000, 512, 93) == 384
    assert bench.batch_images(1_498, 128, 11) == 90
    assert bench.batch_images(7_168, 1024, 6) == 1024
    with pytest.raises(ValueError):
        bench.batch_images(50_000, 512, 98)


def test_timed_window_leaves_out_the_first_three_steps():
    assert bench.timed_window(48_000, 512) == (91, 46_464)  # 94 steps; 90 x 512 + 384
    assert bench.timed_window(1_498, 128) == (9, 1_114)  # 12 steps; 8 x 128 + 90
    assert bench.timed_window(7_168, 1024) == (4, 4_096)  # 7 full steps
    assert bench.timed_window(50_000, 512) == (95, 48_464)  # 98 steps; 94 x 512 + 336


def test_workloads_docstring_states_the_timed_steps_of_each_workload():
    source = Path(bench.__file__).read_text()
    docstring = source[source.index("WORKLOADS = {"):source.index("POLICIES = {")]
    stated = [(int(steps), int(images.replace(",", ""))) for steps, images in
              re.findall(r"(\d+) timed steps? \(([\d,]+) images", docstring)]
    official = {"lenet5": 60_000, "cifar_cnn": 50_000, "cifar_fast": 50_000, "cifar_fast_silu": 50_000,
                "lenet5_tiny": 60_000}
    expected = []
    for name in bench.WORKLOADS:
        experiment = bench.experiment_of(name)
        total = experiment.data.train_subset or official[name]
        train_images = total - round(total * experiment.data.validation_split)
        expected.append(bench.timed_window(train_images, experiment.train.batch_size))
    assert stated == expected[:3] + expected[4:] == [(91, 46_464), (9, 1_114), (4, 4_096), (1, 512)]
    assert expected[3] == expected[2]  # cifar_fast_silu: "the same" as cifar_fast


def _tiny_model():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    return model


def test_step_timer_times_the_last_epochs_steps_after_warmup_in_real_images():
    """A real `fit` over 1,498 samples at batch 128, 2 epochs; the clock advances 1 s per step."""
    import keras

    ticks = [0.0]

    class Tick(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ticks[0] += 1.0

    record: dict = {}
    x = np.zeros((1_498, 4), np.float32)
    y = np.tile(np.float32([1, 0]), (1_498, 1))
    timer = bench._step_timer(lambda b: bench.batch_images(1_498, 128, b), record, clock=lambda: ticks[0])
    _tiny_model().fit(x, y, batch_size=128, epochs=2, shuffle=False, verbose=0, callbacks=[Tick(), timer])
    assert ticks[0] == 24  # 2 epochs of 12 steps
    assert record == {"steps": 9, "images": 1_114, "seconds": 9.0}


def test_rates_divide_real_images_by_seconds():
    pipeline = {"steps": 9, "images": 1_114, "seconds": 11.14}  # 100 images/s
    in_memory = {"steps": 9, "images": 1_152, "seconds": 9.6}  # 120 images/s
    got = bench.rates(4e9, pipeline, in_memory, inference_images_per_s=300.0, peak_gflop_per_s=500.0)
    assert got["train_images_per_s"] == 100.0
    assert got["compute_images_per_s"] == 120.0
    assert got["input_wait_fraction"] == 0.167  # 1 - 100 / 120
    assert got["train_mflop_per_image"] == 4000.0
    assert got["train_gflop_per_s"] == 400.0  # 4 GFLOP x 100 images/s
    assert got["peak_fraction"] == 0.8  # 400 / 500
    assert (got["timed_steps"], got["timed_images"]) == (9, 1_114)
    faster_pipeline = bench.rates(4e9, {**pipeline, "seconds": 5.57}, in_memory, 300.0, 500.0)
    assert faster_pipeline["input_wait_fraction"] == -0.667  # noise is shown, not floored: 1 - 200 / 120


def test_per_measurement_ratios_are_medians_of_ratios():
    rows = [{"workload": "cifar_cnn", "precision": p, "repeat": r, "train_gflop_per_s": g,
             "matmul_peak_gflop_per_s": m, "peak_fraction": g / m, "train_images_per_s": t, "compute_images_per_s": c}
            for p, r, g, m, t, c in [("fp32", 1, 10, 20, 100, 10), ("fp32", 2, 20, 10, 50, 10), ("fp32", 3, 30, 40, 80, 10),
                                     ("bf16", 1, 1, 1, 150, 15), ("bf16", 2, 1, 1, 100, 15), ("bf16", 3, 1, 1, 100, 15)]]
    ratios = bench.per_measurement_ratios(rows)
    peak = ratios["cifar_cnn fp32 peak_fraction (GFLOP/s of matmul peak)"]
    # ratios 0.5, 2, 0.75 -> median 0.75; the ratio of the medians would be 20 / 20 = 1
    assert (peak["values"], peak["min"], peak["median"], peak["max"]) == ([0.5, 2.0, 0.75], 0.5, 0.75, 2.0)
    speedup = ratios["cifar_cnn bf16 / fp32 train_images_per_s"]
    # 1.5, 2, 1.25 -> median 1.5; the ratio of the medians would be 100 / 80 = 1.25
    assert (speedup["values"], speedup["median"]) == ([1.5, 2.0, 1.25], 1.5)
    assert ratios["cifar_cnn bf16 / fp32 compute_images_per_s"]["median"] == 1.5


def test_bench_trains_with_the_callbacks_of_train_that_change_training(tmp_path, monkeypatch):
    """train.run's callbacks for airbench94 = the bench's + the declared logging/checkpoint ones."""
    import keras

    from lenet_keras import train

    class Stop(Exception):
        pass

    seen = {}

    def fake_fit(self, *args, callbacks=(), **kwargs):
        seen["train"] = [type(c).__name__ for c in callbacks]
        raise Stop

    monkeypatch.setattr(keras.Model, "fit", fake_fit)
    spec = bench.WORKLOADS["cifar_fast"]
    experiment = config.load(bench.experiment_file("cifar_fast"),
                             [*spec["overrides"], "data.train_subset=1024", "data.test_subset=16"])
    with pytest.raises(Stop):
        train.run(experiment, runs_dir=tmp_path, verbose=0)
    ours = [type(c).__name__ for c in train.algorithm_callbacks(experiment, steps_per_epoch=1)]
    assert ours == ["TerminateOnNaN", "Lookahead", "FreezeWhitenBias", "DropoutSeeds"]
    assert [name for name in seen["train"] if name not in bench.LEFT_OUT_CALLBACKS] == ours


def test_lenet5_measurement_times_the_documented_steps_with_op_determinism(mnist_dir, monkeypatch):
    import tensorflow as tf

    calls = []
    enable = tf.config.experimental.enable_op_determinism
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: calls.append(1) or enable())
    result = bench.measure("lenet5", "fp32", data_dir=str(mnist_dir))
    assert calls == [1]
    assert result["train_images"] == 48_000 and result["batch_size"] == 512
    assert (result["timed_steps"], result["timed_images"]) == (91, 46_464)
    assert result["train_mflop_per_image"] == pytest.approx(3 * 2 * LENET5_FORWARD_MACS / 1e6, rel=0.05)
    for key in ("epoch_seconds", "train_images_per_s", "compute_images_per_s", "inference_images_per_s",
                "matmul_peak_gflop_per_s", "peak_rss_mib", "train_gflop_per_s", "peak_fraction"):
        assert result[key] > 0, key
    assert result["differs_from_train"] == bench.TRAIN_DIFFERENCES and result["op_determinism"] is True


def test_package_bench_has_no_peer_options():
    """The peers are the checkout's development tool (benchmarks/bench_peers.py), not the package command's."""
    options = {o for action in bench.parser()._actions for o in action.option_strings}
    assert not {"--peers", "--peer-python", "--peer-epochs"} & options
    assert not hasattr(bench, "PEERS_DIR")


def test_bench_peers_parses_the_peer_scripts_output():
    from benchmarks import bench_peers

    lenet = bench_peers.parse_peer_output("epoch 1 9.0s\nepoch 2 4.0s\nepoch 3 6.0s\ntest_acc=0.98\n",
                                          "seed000_torch_lenet.py", ["3"])
    assert lenet == {"peer": "seed000_torch_lenet.py", "args": ["3"], "epoch_seconds": 5.0,
                     "epoch_seconds_all": [9.0, 4.0, 6.0], "test_accuracy": 0.98}  # median of epochs 2+
    cifar = bench_peers.parse_peer_output("images_per_s=123.5\n", "seed004_torch_cifar.py", ["10", "128", "bf16"])
    assert cifar == {"peer": "seed004_torch_cifar.py", "args": ["10", "128", "bf16"], "images_per_s": 123.5}


def test_bench_peers_alternates_with_ours_and_writes_the_ratios(tmp_path, monkeypatch, capsys):
    """`python -m benchmarks.bench_peers`: each of our measurements is followed by its peers
    (A B A B ...); the ours / peer speed ratios go into bench-NNN.json and the CSV, as `bench --peers` did."""
    import json

    from benchmarks import bench_peers

    order = []

    def fake_ours(workload, precision, data_dir):
        order.append(("ours", workload, precision))
        return {"workload": workload, "precision": precision, "epoch_seconds": 2.0, "compute_images_per_s": 300.0,
                "train_images_per_s": 100.0, "peak_fraction": 0.5}

    def fake_peer(python, script, args, mnist_dir, runs_dir=None, peers_dir=None):
        order.append(("peer", script, args[-1]))
        assert runs_dir == tmp_path / "runs", "every peer run is given the folder its run directory goes to"
        return {"peer": script, "args": args, **({"images_per_s": 100.0} if "cifar" in script else {"epoch_seconds": 3.0})}

    monkeypatch.setattr(bench, "measure_in_subprocess", fake_ours)
    companion = bench_peers.PeerRuns(str(tmp_path / "no-python"), 3, None, run=fake_peer, runs_dir=tmp_path / "runs")
    assert "PyTorch peers skipped" in companion.note  # no .venv-peers here: only the deck's Keras peer
    companion.torch_ok = True
    path = bench.run_bench(["fp32", "bf16"], ["lenet5", "cifar_cnn"], 2, None, tmp_path, companion=companion)
    assert order[:6] == [("ours", "lenet5", "fp32"), ("peer", "seed002_keras_lenet.py", "3"),
                         ("peer", "seed000_torch_lenet.py", "3"), ("ours", "lenet5", "bf16"),
                         ("ours", "cifar_cnn", "fp32"), ("peer", "seed004_torch_cifar.py", "fp32")]
    assert len(order) == 2 * (4 + 4)  # per repeat: 4 of ours, 2 LeNet peers, 2 CIFAR peers
    written = json.loads(path.read_text())
    assert written["ratios"]["ours lenet5 fp32 vs torch lenet5"]["median"] == 1.5  # 3 s / 2 s
    assert written["ratios"]["ours cifar_cnn bf16 vs torch cifar bf16"]["values"] == [3.0, 3.0]  # 300 / 100 images/s
    assert len(written["peers"]) == 2 * 4 and "side" in path.with_suffix(".csv").read_text().splitlines()[0]
    printed = capsys.readouterr().out
    assert "speed ratios ours / peer (>1 = ours faster)" in printed and "speed ratio ours/peer 1.50" in printed


def _fake_measure(calls):
    def measure(workload, precision, data_dir):
        calls.append((workload, precision))
        return {"workload": workload, "precision": precision, "epoch_seconds": 2.0, "compute_images_per_s": 300.0,
                "train_images_per_s": 100.0, "peak_fraction": 0.5}
    return measure


def test_bench_skips_a_workload_without_its_data_with_one_line_and_records_the_isa_class(tmp_path, monkeypatch, capsys):
    """A data folder with the CIFAR image folder but no MNIST: cifar_cnn runs, lenet5 is skipped
    with one line naming the missing files and where to put them; the ISA class is printed and in the JSON."""
    import json

    from lenet_keras import hardware

    for split in ("train", "test"):
        (tmp_path / "data" / "cifar10-jpeg" / split).mkdir(parents=True)
    monkeypatch.setenv("LENET_KERAS_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(hardware, "describe_isa", lambda *a, **k: "amx (a fake CPU)")
    monkeypatch.setattr(hardware, "isa_class", lambda *a, **k: "amx")
    calls = []
    monkeypatch.setattr(bench, "measure_in_subprocess", _fake_measure(calls))

    assert bench.main(["--workloads", "lenet5", "cifar_cnn", "--precisions", "fp32", "--out-dir", str(tmp_path / "out")]) == 0
    assert calls == [("cifar_cnn", "fp32")]
    out = capsys.readouterr().out
    (skipped,) = [line for line in out.splitlines() if line.startswith("skipped ")]
    assert skipped.startswith("skipped lenet5: MNIST") and "train-images-idx3-ubyte.gz" in skipped
    assert f"{tmp_path / 'data'}/mnist/" in skipped  # where to put them
    assert "CPU ISA class: amx (a fake CPU)" in out
    written = json.loads((tmp_path / "out" / "bench-001.json").read_text())
    assert (written["isa_class"], written["isa"]) == ("amx", "amx (a fake CPU)")
    assert list(written["skipped"]) == ["lenet5"] and written["skipped"]["lenet5"] in skipped


def test_bench_with_no_workload_left_exits_2_before_measuring(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("LENET_KERAS_DATA", str(tmp_path / "empty"))
    calls = []
    monkeypatch.setattr(bench, "measure_in_subprocess", _fake_measure(calls))
    assert bench.main(["--out-dir", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert calls == [] and not (tmp_path / "out").exists()
    assert [line.split(":")[0] for line in captured.out.splitlines()] == [f"skipped {w}" for w in bench.DEFAULT_WORKLOADS]
    assert "cifar10-jpeg/ (train/<class>/*, test/<class>/*) is in none of" in captured.out
    assert captured.err.startswith("error: no workload to run") and len(captured.err.strip().splitlines()) == 1


def test_bench_refuses_bad_input_with_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(bench, "measure_in_subprocess", _fake_measure(calls))
    with pytest.raises(SystemExit) as stopped:
        bench.main(["--repeats", "0"])
    assert stopped.value.code == 2 and "argument --repeats: '0': expected a whole number >= 1" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert bench.main(["--workloads", "lenet5_tiny", "--out-dir", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"error: --out-dir {tmp_path / 'file'}: a file, expected a folder (results go there)\n"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX9")
    assert bench.main(["--workloads", "lenet5_tiny", "--out-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: ONEDNN_MAX_CPU_ISA='AVX9' is not one of oneDNN's values")
    assert calls == []


def test_the_default_workloads_leave_out_the_smoke_test():
    assert bench.parser().parse_args([]).workloads == list(bench.DEFAULT_WORKLOADS) == [
        "lenet5", "cifar_cnn", "cifar_fast", "cifar_fast_silu"]
    tiny = bench.experiment_of("lenet5_tiny", "fp32")
    assert (tiny.data.train_subset, tiny.train.batch_size, tiny.train.precision) == (2560, 512, "float32")


def test_the_tiny_bench_runs_from_an_installed_package_in_an_empty_folder(tmp_path, mnist_dir):
    """The wheel's layout (lenet_keras/ with its experiments inside, as pyproject.toml maps them; no
    repository around it), run from an empty folder: `bench` finds its experiments as package data,
    the smoke-test workload trains a few steps, and the ISA class is printed and recorded."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from lenet_keras import hardware

    site = tmp_path / "site"
    shutil.copytree(Path(bench.__file__).parent, site / "lenet_keras", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(Path(bench.__file__).parent.parent / "experiments", site / "lenet_keras" / "experiments")
    empty = tmp_path / "empty"
    empty.mkdir()
    data_root = mnist_dir.parent if mnist_dir.name == "mnist" else mnist_dir
    env = {**os.environ, "PYTHONPATH": str(site), "LENET_KERAS_DATA": str(data_root), "TF_CPP_MIN_LOG_LEVEL": "3"}
    where = subprocess.run([sys.executable, "-c", "import lenet_keras; print(lenet_keras.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True)
    assert where.stdout.strip() == str(site / "lenet_keras" / "__init__.py")
    done = subprocess.run([sys.executable, "-m", "lenet_keras", "bench", "--workloads", "lenet5_tiny", "--precisions",
                           "fp32", "--repeats", "1", "--out-dir", "out"], cwd=empty, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"CPU ISA class: {hardware.describe_isa()}" in done.stdout
    written = json.loads((empty / "out" / "bench-001.json").read_text())
    (ours,) = written["ours"]
    assert (ours["workload"], ours["experiment"], ours["timed_steps"], ours["timed_images"]) == (
        "lenet5_tiny", "mnist_lenet5", 1, 512)
    assert written["isa_class"] == ours["isa_class"] == hardware.isa_class()
    assert ours["epoch_seconds"] > 0 and ours["train_images_per_s"] > 0


def test_find_image_folder_looks_where_data_path_does(tmp_path, monkeypatch):
    """An absolute data.path as given; a relative one under the data folder only (not the working directory)."""
    for root in (tmp_path / "data", tmp_path / "cwd"):
        for split in ("train", "test"):
            (root / "images" / split).mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("LENET_KERAS_DATA", str(tmp_path / "data"))
    assert bench.find_image_folder("images") == tmp_path / "data" / "images"
    assert bench.find_image_folder(str(tmp_path / "cwd" / "images")) == tmp_path / "cwd" / "images"
    monkeypatch.setenv("LENET_KERAS_DATA", str(tmp_path / "cwd" / "images"))
    assert bench.find_image_folder("images") is None  # ./images is not looked at when a data folder is named
