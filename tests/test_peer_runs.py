"""Peer runs as run directories (issue 17 item 3): the seeds' scripts' real printed output
(tests/fixtures/peers/, captured from ../shared/peers; see its README) becomes
`runs/<experiment>/run-NNN/` with the printed numbers in manifest.json and history.csv
(`lenet_keras.external_run`, `benchmarks.peer_runs`); malformed output raises a clear error and
leaves no run directory; `bench_peers` and `airbench_compare` record the peer runs they make."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import bench_peers, peer_runs, preflight
from lenet_keras import external_run, report, rundir

from .conftest import missing_shared

FIXTURES = Path(__file__).parent / "fixtures" / "peers"
DECK = (FIXTURES / "seed002_keras_lenet_2epochs.txt").read_text()
TORCH = (FIXTURES / "seed000_torch_lenet_2epochs.txt").read_text()
AIRBENCH = (FIXTURES / "airbench94_tiny_folder_bf16.txt").read_text()
VERSIONS = {"python": "3.11.7", "torch": "2.13.0+cpu"}

AIRBENCH_TOTALS = [11.0537, 16.0820, 30.6663, 51.0965, 75.9489, 92.5894, 107.4733, 123.6533, 145.2974, 167.5419]
"""The fixture's cumulative total_time_seconds of epochs 0-9 (as printed)."""
AIRBENCH_VAL_ACC = [0.1660, 0.2720, 0.2620, 0.3460, 0.3780, 0.4680, 0.4900, 0.5200, 0.5360, 0.5000]


MACHINE = {"platform": "Linux", "cpu": "fake", "cpu_count": 2, "gpus": []}


@pytest.fixture(autouse=True)
def fake_machine(request, monkeypatch):
    """Our machine block without importing TensorFlow (whose import runs subprocesses the fakes
    below would answer); the real run's test keeps the real one."""
    if "real_run" not in request.node.name:
        monkeypatch.setattr(external_run, "machine_block", lambda: dict(MACHINE))


def record(name: str, output: str, runs_dir: Path, args: list[str], seed: int | None = None, source=None) -> Path:
    """Record a fixture's output as the run of peer `name` (wall seconds 20.0)."""
    return peer_runs.record_peer_output(peer_runs.PEERS[name], output, runs_dir, args=args, command="python x.py",
                                        wall_seconds=20.0, seed=seed, versions=VERSIONS, source=source)


def history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_deck_output_becomes_a_run_directory_with_the_printed_numbers(tmp_path):
    run_dir = record("deck-keras", DECK, tmp_path, ["2"])

    assert run_dir == tmp_path / "peer_deck_keras_lenet5" / "run-001"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert (manifest["experiment"], manifest["run_id"], manifest["status"]) == ("peer_deck_keras_lenet5", "run-001",
                                                                                "completed")
    assert manifest["engine"] == "keras-deck" and manifest["seed"] is None
    assert external_run.UNSEEDED_NOTE in manifest["notes"]
    assert manifest["test"] == {"accuracy": 0.9069, "loss": 0.3219}  # "test_acc=0.9069 test_loss=0.3219"
    assert manifest["training_seconds"] is None and manifest["validation_seconds"] is None  # train_s has validation
    assert manifest["printed"]["train_s"] == 9.3 and manifest["wall_seconds"] == 20.0
    assert manifest["epochs_completed"] == 2 and manifest["best"] == {"epoch": 1, "val_accuracy": 0.9094}
    assert manifest["config"]["train"]["epochs"] == 2 and manifest["config"]["train"]["batch_size"] == 512
    assert "seed" not in manifest["config"]
    assert "last 12,000" in manifest["data"]["validation"] and manifest["versions"] == VERSIONS
    assert manifest["printed"] == {"params": 61706, "train_s": 9.3}
    rows = history(run_dir)
    assert list(rows[0]) == ["epoch", "epoch_seconds", "val_accuracy"]
    assert [(int(r["epoch"]), float(r["epoch_seconds"]), float(r["val_accuracy"])) for r in rows] == [
        (0, 5.33, 0.8737), (1, 3.36, 0.9094)]  # "epoch 1 5.33s val_acc=0.8737", "epoch 2 3.36s val_acc=0.9094"


def test_torch_output_records_its_seed_threads_and_equal_configs_across_seeds(tmp_path):
    first = record("torch-lenet5", TORCH, tmp_path, ["2"], seed=0)
    second = record("torch-lenet5", TORCH, tmp_path, ["2"], seed=1)

    assert (first.name, second.name) == ("run-001", "run-002")
    one, two = (json.loads((d / "manifest.json").read_text()) for d in (first, second))
    assert (one["seed"], two["seed"], one["engine"]) == (0, 1, "pytorch")
    assert one["config"] == two["config"], "runs of one recipe differ only in the seed"
    assert one["test"] == {"accuracy": 0.8528} and one["printed"]["train_s"] == 13.6 and one["training_seconds"] is None
    assert one["machine"] == {**MACHINE, "threads": 2}  # ours, and the script's "threads=2"
    assert [(float(r["epoch_seconds"]), float(r["val_accuracy"])) for r in history(first)] == [
        (8.09, 0.5238), (5.52, 0.8527)]


def test_airbench_output_splits_its_cumulative_times_into_epochs(tmp_path):
    folder = tmp_path / "tinycifar"
    for split, count in (("train", 3), ("test", 2)):
        (folder / split / "cat").mkdir(parents=True)
        for i in range(count):
            (folder / split / "cat" / f"{i}.jpg").write_bytes(b"")
    run_dir = record("airbench94", AIRBENCH, tmp_path / "runs", [str(folder), "bf16"], seed=0, source=folder)

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert run_dir.parent.name == "peer_airbench94" and manifest["engine"] == "airbench94"
    assert manifest["test"] == {"accuracy": 0.5, "tta_accuracy": 0.506}  # last val_acc; eval row's tta_val_acc
    # training only (the last epoch row's cumulative time); the eval row's total adds the TTA evaluation
    assert manifest["training_seconds"] == pytest.approx(170.3978 - 2.8559) and manifest["validation_seconds"] is None
    assert manifest["printed"]["total_time_seconds"] == 170.3978 and manifest["printed"]["tta_seconds"] == pytest.approx(2.8559)
    assert manifest["data"]["validation"].startswith("the test set")
    assert (manifest["data"]["train_images"], manifest["data"]["test_images"]) == (3, 2)
    assert manifest["config"]["train"]["precision"] == "bf16" and manifest["config"]["data"]["dataset"] == "tinycifar"
    rows = history(run_dir)
    assert len(rows) == 10 and [int(r["epoch"]) for r in rows] == list(range(10))
    assert [float(r["val_accuracy"]) for r in rows] == AIRBENCH_VAL_ACC
    seconds = [float(r["epoch_seconds"]) for r in rows]
    assert seconds[:2] == pytest.approx([11.0537, 16.0820 - 11.0537])
    assert [sum(seconds[:i + 1]) for i in range(10)] == pytest.approx(AIRBENCH_TOTALS)
    assert (float(rows[0]["loss"]), float(rows[0]["accuracy"])) == (2.2812, 0.1611)  # train_loss, train_acc


def test_report_reads_a_peer_run_with_its_history(tmp_path):
    """`report.read_run` reads it; `Run.completed` also needs predictions.npz, which a peer's
    printed output cannot give, so the status is checked instead."""
    run = report.read_run(record("deck-keras", DECK, tmp_path, ["2"]))

    assert run.manifest["status"] == "completed" and run.manifest["engine"] == "keras-deck"
    assert run.history["val_accuracy"].tolist() == [0.8737, 0.9094]
    table = report.summary_table([run])
    assert table.loc[0, "test acc"] == 0.9069 and table.loc[0, "epochs"] == 2


@pytest.mark.parametrize("name, output, message", [
    ("deck-keras", DECK.replace("params=", "paramz="), "no final 'params=... train_s=... test_acc=...' line"),
    ("deck-keras", "", "no 'epoch N S.SSs val_acc=X' line"),
    ("torch-lenet5", TORCH.replace("epoch 1 ", "epoch 3 "), "epochs numbered"),
    ("airbench94", AIRBENCH.replace("eval", "done"), "no final 'eval' row"),
    ("airbench94", "\n".join(l for l in AIRBENCH.splitlines() if "|      4  |" not in l), "a row is missing"),
])
def test_malformed_output_raises_a_clear_error_and_leaves_no_run_directory(tmp_path, name, output, message):
    with pytest.raises(ValueError, match=message):
        record(name, output, tmp_path, ["2"] if name != "airbench94" else [str(tmp_path), "bf16"])
    assert not (tmp_path / peer_runs.PEERS[name].experiment).exists() or not any(
        (tmp_path / peer_runs.PEERS[name].experiment).iterdir())


@pytest.mark.parametrize("change, message", [
    ({"test": {"accuracy": 90.69}}, "not a fraction"),
    ({"test": {"loss": 0.3}}, "no 'accuracy'"),
    ({"config": {"script": "x.py", "seed": 1}}, "holds 'seed'"),
    ({"history": [{"val_accuracy": 0.9}]}, "no 'epoch_seconds'"),
    ({"data": {"description": "MNIST"}}, "validation"),
    ({"data": {"description": "MNIST", "validation": "v"}}, "validation_is_test"),
])
def test_record_external_run_refuses_incomplete_figures_before_making_a_directory(tmp_path, change, message):
    arguments = {"engine": "pytorch", "config": {"script": "x.py"}, "seed": 0, "command": "python x.py",
                 "history": [{"epoch_seconds": 1.0, "val_accuracy": 0.5}], "test": {"accuracy": 0.5},
                 "wall_seconds": 2.0, "versions": VERSIONS, "data": {"description": "d", "validation": "v", "validation_is_test": False}}
    with pytest.raises(ValueError, match=message):
        external_run.record_external_run(tmp_path, "peer_x", **{**arguments, **change})
    assert not (tmp_path / "peer_x").exists()


def test_a_failed_write_removes_the_new_run_directory(tmp_path, monkeypatch):
    def broken(run_dir, manifest):
        raise OSError("disk full")

    monkeypatch.setattr(rundir, "write_manifest", broken)
    with pytest.raises(OSError, match="disk full"):
        record("deck-keras", DECK, tmp_path, ["2"])
    assert list((tmp_path / "peer_deck_keras_lenet5").iterdir()) == []


def fake_subprocess(outputs: dict, calls: list):
    """subprocess.run returning `outputs[script file name]` as stdout; records each argv."""
    def run(argv, capture_output, text, env=None):
        calls.append(argv)
        script = next(Path(a).name for a in argv if a.endswith(".py"))
        return subprocess.CompletedProcess(argv, 0, outputs[script], "")
    return run


def test_bench_peers_records_the_lenet_peers_but_not_the_synthetic_cifar_one(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", fake_subprocess(  # the module both bench_peers and peer_runs use
        {"seed002_keras_lenet.py": DECK, "seed000_torch_lenet.py": TORCH, "seed004_torch_cifar.py": "images_per_s=9.5\n"},
        calls))
    monkeypatch.setattr(peer_runs, "versions_of", lambda python: VERSIONS)

    deck = bench_peers.run_peer("python", "seed002_keras_lenet.py", ["2"], "/m", runs_dir=tmp_path)
    torch = bench_peers.run_peer("py-torch", "seed000_torch_lenet.py", ["2"], "/m", runs_dir=tmp_path)
    cifar = bench_peers.run_peer("py-torch", "seed004_torch_cifar.py", ["10", "128", "bf16"], None, runs_dir=tmp_path)

    assert deck["run_dir"] == str(tmp_path / "peer_deck_keras_lenet5" / "run-001") and deck["test_accuracy"] == 0.9069
    assert torch["run_dir"] == str(tmp_path / "peer_torch_lenet5" / "run-001")
    assert json.loads(Path(torch["run_dir"], "manifest.json").read_text())["seed"] == 0  # the script's own seed
    assert "run_dir" not in cifar and sorted(p.name for p in tmp_path.iterdir()) == [
        "peer_deck_keras_lenet5", "peer_torch_lenet5"]
    assert calls[0][1].endswith("seed002_keras_lenet.py")  # run as it is, no seed wrapper


def test_bench_peers_records_under_the_folder_above_out_dir_by_default(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(bench_peers.bench, "run_bench", lambda *a, companion, **k: seen.update(runs=companion.runs_dir))
    (tmp_path / "data").mkdir()
    for name in preflight.MNIST_GZ:
        (tmp_path / "data" / name).write_text("")
    monkeypatch.setenv("LENET_KERAS_DATA", str(tmp_path / "data"))
    assert bench_peers.main(["--workloads", "lenet5_tiny", "--peers-dir", "none", "--peer-python", str(tmp_path / "no"),
                             "--out-dir", str(tmp_path / "runs" / "bench")]) == 0  # lenet5_tiny: no peer goes with it
    assert seen["runs"] == tmp_path / "runs"


def test_peer_runs_command_seeds_torch_runs_through_the_wrapper(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(peer_runs.subprocess, "run", fake_subprocess({"seed000_torch_lenet.py": TORCH}, calls))
    monkeypatch.setattr(peer_runs, "versions_of", lambda python: VERSIONS)
    monkeypatch.setattr(preflight, "mnist_gz", lambda data_dir: str(tmp_path))
    monkeypatch.setattr(preflight, "peer_python", lambda python, modules: ("2.13.0+cpu", None))
    python = tmp_path / "python"
    python.write_text("")
    peers = tmp_path / "peers"
    peers.mkdir()
    (peers / "seed000_torch_lenet.py").write_text("")

    assert peer_runs.main(["torch-lenet5", "--runs", "2", "--epochs", "2", "--runs-dir", str(tmp_path / "runs"),
                           "--peer-python", str(python), "--peers-dir", str(peers)]) == 0
    assert [argv[1] for argv in calls] == [str(peers / "seed000_torch_lenet.py"), "-c"]  # seed 0: as it is
    assert calls[1][2:4] == [peer_runs.SEED_WRAPPER, "1"]
    second = json.loads((tmp_path / "runs" / "peer_torch_lenet5" / "run-002" / "manifest.json").read_text())
    assert second["seed"] == 1 and "<seed wrapper> 1 " in second["command"]
    assert second["seed_wrapper"] == peer_runs.SEED_WRAPPER
    printed = capsys.readouterr().out
    assert "[2/2] " in printed and "test accuracy 0.8528" in printed
    assert peer_runs.main(["deck-keras", "--seeds", "1"]) == 2  # unseeded script: --seeds refused


def test_peer_runs_records_a_real_run_of_the_decks_script(tmp_path, monkeypatch):
    """One real epoch of ../shared/peers/seed002_keras_lenet.py on the full MNIST (about 15 s)."""
    try:
        preflight.mnist_gz(None)
        preflight.peer_script(preflight.peers_dir(None), "seed002_keras_lenet.py")
    except preflight.Missing:
        missing_shared("the MNIST .gz files and ../shared/peers/seed002_keras_lenet.py")
    monkeypatch.chdir(peer_runs.REPO)
    assert peer_runs.main(["deck-keras", "--epochs", "1", "--runs-dir", str(tmp_path)]) == 0

    run_dir = tmp_path / "peer_deck_keras_lenet5" / "run-001"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rows = history(run_dir)
    assert manifest["status"] == "completed" and manifest["epochs_completed"] == len(rows) == 1
    assert manifest["test"]["accuracy"] > 0.5 and 0.5 < float(rows[0]["val_accuracy"]) <= 1
    assert manifest["versions"]["python"] and "keras" in manifest["versions"]
    assert manifest["command"].endswith("seed002_keras_lenet.py 1") and " /" not in manifest["command"]
    assert manifest["data"]["source"] and not manifest["data"]["source"].startswith("/")
    assert manifest["script"]["sha256"]
    assert " /" not in manifest["recorded_by"] and "intra_op_threads" not in manifest["machine"]


def _interpreter(path: Path, line: str | None) -> str:
    """A fake Python that prints `line` (torch's version and CUDA) for any code, or fails to import torch."""
    body = f"echo '{line}'" if line else "echo \"ModuleNotFoundError: No module named 'torch'\" >&2; exit 1"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_bench_peers_checks_the_scripts_and_torch_its_runs_need_before_measuring(tmp_path, monkeypatch, capsys):
    mnist = tmp_path / "data" / "mnist"
    mnist.mkdir(parents=True)
    for name in preflight.MNIST_GZ:
        (mnist / name).write_text("")
    monkeypatch.setenv("LENET_KERAS_DATA", str(tmp_path / "data"))
    measured = []
    monkeypatch.setattr(bench_peers.bench, "run_bench", lambda *a, companion, **k: measured.append(companion))
    peers = tmp_path / "peers"
    peers.mkdir()
    (peers / "seed002_keras_lenet.py").write_text("")
    base = ["--workloads", "lenet5", "--precisions", "fp32", "--peers-dir", str(peers), "--out-dir", str(tmp_path / "b")]

    torch = _interpreter(tmp_path / "torch-python", "2.13.0+cpu None")
    assert bench_peers.main([*base, "--peer-python", torch]) == 2  # with torch, the PyTorch LeNet-5 runs too
    assert capsys.readouterr().err == (f"error: {peers / 'seed000_torch_lenet.py'}: no such file (the PyTorch LeNet-5); "
                                       f"{preflight.GET_PEERS}\n")
    no_torch = _interpreter(tmp_path / "plain-python", None)
    assert bench_peers.main([*base, "--peer-python", no_torch]) == 2
    assert capsys.readouterr().err.startswith(f"error: {no_torch}: ModuleNotFoundError: No module named 'torch'")
    assert measured == []

    assert bench_peers.main([*base, "--peer-python", str(tmp_path / "absent")]) == 0  # no interpreter: deck only
    (companion,) = measured
    assert not companion.torch_ok and "PyTorch peers skipped" in companion.note
    assert (companion.peers_dir, companion.mnist_gz) == (peers, str(mnist))


def test_peer_runs_checks_the_peers_folder_and_script_before_running(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(peer_runs, "run_and_record", lambda *a, **k: pytest.fail("ran"))
    assert peer_runs.main(["deck-keras", "--peers-dir", "none"]) == 2
    assert capsys.readouterr().err.startswith("error: seed002_keras_lenet.py (the deck's Keras LeNet-5) is needed: "
                                              "no peers' folder (--peers-dir none)")
    assert peer_runs.main(["airbench94", "--peers-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'airbench94_cpu.py'}: no such file")
