"""Every make target works from a fresh clone, or stops at once saying why: the benchmark targets
take the seeds' scripts as PEERS=DIR (default ../shared/peers when it exists) and check what they
need before anything trains (`benchmarks.preflight`, the one home of those checks); without peers,
`make figures` and `make lenet-side-by-side` run ours and say that the peers were left out;
`make peers-venv` prints which torch build it installed and fails on a CUDA build.

The make-level tests run in a copy of the repository's code in a temporary folder with nothing
beside it (a fresh clone without ../shared), with the virtual environment running the tests as its .venv."""

from __future__ import annotations

import json

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import lenet_side_by_side, mnist_comparison, preflight

from .conftest import REPO


def _clone(root: Path) -> Path:
    """root/main: the code, experiments and Makefile of the checkout (its .venv linked), no data, nothing beside it."""
    main = root / "main"
    main.mkdir(parents=True)
    for folder in ("lenet_keras", "benchmarks", "experiments"):
        shutil.copytree(REPO / folder, main / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "pyproject.toml", "requirements.txt"):
        shutil.copy2(REPO / name, main / name)
    (main / ".venv").symlink_to(Path(sys.prefix))  # the environment running the tests (the checkout's .venv)
    return main


@pytest.fixture()
def clone(tmp_path):
    return _clone(tmp_path / "fresh")


def make(folder: Path, *arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`make -o .venv/.installed ARGUMENTS PYTHON=false` in `folder`: the linked .venv is never
    reinstalled, and a virtual environment the target would create (.venv-peers) fails at once."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    environment.pop("MAKEFLAGS", None)
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", *arguments, "PYTHON=false"], cwd=folder,
                          env=environment, capture_output=True, text=True, timeout=300)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def test_the_peer_targets_pass_the_peers_folder_make_finds_or_is_given(tmp_path, clone):
    with_peers = _clone(tmp_path / "workspace")
    (tmp_path / "workspace" / "shared" / "peers").mkdir(parents=True)
    for target, args in (("figures", ()), ("lenet-side-by-side", ()), ("bench", ("ARGS=--peers",)),
                         ("cifar-fast-bench", ())):
        assert "--peers-dir none" in make(clone, "-n", target, *args).stdout, target  # no ../shared beside it
        assert "--peers-dir ../shared/peers" in make(with_peers, "-n", target, *args).stdout, target
        assert "--peers-dir /elsewhere" in make(clone, "-n", target, "PEERS=/elsewhere", *args).stdout, target
        assert "--peers-dir none" in make(with_peers, "-n", target, "PEERS=", *args).stdout, target
    assert "--peers-dir" not in make(clone, "-n", "bench").stdout  # the package's bench has no peers


def test_make_bench_with_peers_stops_at_once_naming_the_missing_peers(clone):
    done = make(clone, "bench", "ARGS=--peers --workloads lenet5 --precisions fp32")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (line,) = error_lines(done)
    assert line.startswith("error: seed002_keras_lenet.py (the deck's Keras LeNet-5) is needed: no peers' folder "
                           "(--peers-dir none); give --peers-dir DIR (make: PEERS=DIR)")
    assert not (clone / "runs").exists()


def test_make_bench_skips_the_workloads_without_data_one_line_each(clone, tmp_path):
    (tmp_path / "nothing").mkdir()
    done = make(clone, "bench", "ARGS=--workloads cifar_cnn cifar_fast", env={"LENET_KERAS_DATA": str(tmp_path / "nothing")})
    skipped = [line for line in done.stdout.splitlines() if line.startswith("skipped ")]
    assert [line.split(":")[0] for line in skipped] == ["skipped cifar_cnn", "skipped cifar_fast"]
    assert all("cifar10-jpeg/" in line and "LENET_KERAS_DATA=DIR" in line for line in skipped)
    assert error_lines(done) == ["error: no workload to run: none of cifar_cnn, cifar_fast has its data (the 'skipped' "
                                 "lines above say what is missing)"] and "Traceback" not in done.stderr


def test_make_cifar_fast_bench_stops_before_installing_anything(clone, tmp_path):
    images = tmp_path / "images"
    for split in ("train", "test"):
        (images / split).mkdir(parents=True)
    done = make(clone, "cifar-fast-bench", f"DATA={images}")
    (line,) = error_lines(done)
    assert line.startswith("error: airbench94_cpu.py (airbench94 on the CPU) is needed: no peers' folder")
    assert line.endswith('or --peer-python none (make: ARGS="--peer-python none"): ours only, against the reference figures')
    assert "pip install" not in done.stdout and not (clone / ".venv-peers").exists()
    no_data = make(clone, "cifar-fast-bench", f"DATA={tmp_path / 'nowhere'}")
    assert error_lines(no_data) == [f"error: --data-dir {tmp_path / 'nowhere'}: no train/ and test/ sub-folders (give an "
                                    "image folder with train/<class>/* and test/<class>/*, e.g. a JPEG copy of CIFAR-10)"]


def test_make_figures_and_side_by_side_stop_at_once_on_missing_data(clone, tmp_path):
    (tmp_path / "nothing").mkdir()
    for target in ("figures", "lenet-side-by-side"):
        done = make(clone, target, env={"LENET_KERAS_DATA": str(tmp_path / "nothing")})
        (line,) = error_lines(done)
        assert "MNIST (the four official IDX files, raw or .gz) is not in $LENET_KERAS_DATA=" in line, target
        assert "Traceback" not in done.stderr and not (clone / "runs").exists(), target
    done = make(clone, "figures", "PEERS=/no/such/peers")
    assert error_lines(done) == [f"error: --peers-dir /no/such/peers: no such folder; {preflight.GET_PEERS}"]


def test_make_peers_venv_checks_the_torch_build_it_installed(clone):
    recipe = make(clone, "-n", "peers-venv").stdout.splitlines()
    assert recipe[-1] == ".venv-peers/bin/python -m benchmarks.preflight torch-build --peer-python .venv-peers/bin/python"
    assert any("pip install" in line and "torch==2.13.0" in line and "--index-url" not in line for line in recipe)
    cpu_index = make(clone, "-n", "peers-venv", "TORCH_INDEX=https://download.pytorch.org/whl/cpu").stdout
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in cpu_index


def _fake_python(path: Path, printed: str | None, status: int = 0) -> str:
    """An 'interpreter' that prints `printed` (torch's version and CUDA) or fails with an import error."""
    error = "echo \"ModuleNotFoundError: No module named 'torch'\" >&2"
    path.write_text(f"#!/bin/sh\n{f'echo {printed!r}' if printed else error}\nexit {status}\n")
    path.chmod(0o755)
    return str(path)


def test_torch_build_names_the_cpu_build_and_refuses_a_cuda_build(tmp_path, capsys):
    cpu = _fake_python(tmp_path / "cpu", "2.13.0+cpu None")
    assert preflight.main(["torch-build", "--peer-python", cpu]) == 0
    assert capsys.readouterr().out == f"{cpu}: torch 2.13.0+cpu, CPU build (torch.version.cuda is None)\n"
    cuda = _fake_python(tmp_path / "cuda", "2.13.0+cu126 12.6")
    assert preflight.main(["torch-build", "--peer-python", cuda]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {cuda}: torch 2.13.0+cu126 is a CUDA build (torch.version.cuda = 12.6)")
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in err and len(err.splitlines()) == 1
    none = _fake_python(tmp_path / "none", None, status=1)
    assert preflight.main(["torch-build", "--peer-python", none]) == 2
    assert capsys.readouterr().err.startswith(f"error: {none}: ModuleNotFoundError: No module named 'torch' (the "
                                              "PyTorch peers need torch); run `make peers-venv`")
    assert preflight.main(["torch-build", "--peer-python", str(tmp_path / "absent")]) == 2
    assert f"{tmp_path / 'absent'}: no such interpreter" in capsys.readouterr().err


def test_the_peer_interpreter_check_imports_torch_but_only_looks_airbench_up(tmp_path, monkeypatch):
    """airbench imports torchvision, which .venv-peers lacks (airbench94_cpu.py puts a stand-in in its
    place first): importing it would fail although everything the peer needs is there."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("__version__ = '2.13.0+cpu'\nclass version:\n    cuda = None\n")
    (tmp_path / "airbench").mkdir()
    (tmp_path / "airbench" / "__init__.py").write_text("import torchvision\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert preflight.peer_python(sys.executable, ("torch", "airbench")) == ("2.13.0+cpu", None)
    with pytest.raises(preflight.Missing, match="No module named 'airbench2'.*the PyTorch peers need torch and airbench2"):
        preflight.peer_python(sys.executable, ("torch", "airbench2"))


def test_the_peers_folder_defaults_to_shared_peers_only_when_it_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "DEFAULT_PEERS_DIR", tmp_path / "shared" / "peers")
    assert preflight.peers_dir(None) is None
    assert "no --peers-dir, and" in preflight.left_out(None, "x is")
    (tmp_path / "shared" / "peers").mkdir(parents=True)
    assert preflight.peers_dir(None) == tmp_path / "shared" / "peers"
    assert preflight.peers_dir("none") is None and preflight.peers_dir(str(tmp_path)) == tmp_path
    with pytest.raises(preflight.Missing, match="no such file"):
        preflight.peer_script(tmp_path, "seed000_torch_lenet.py")


def _no_training(monkeypatch, module, built: list):
    """`module`'s runs replaced by records; `compare.build` records the experiments it is given."""
    from lenet_keras import compare

    monkeypatch.setattr(compare, "build", lambda names, **k: built.append(list(names)) or Path("index.html"))
    from lenet_keras import manifest

    monkeypatch.setattr(manifest, "machine", lambda: {})


def test_figures_without_peers_train_ours_and_say_the_deck_code_was_left_out(tmp_path, monkeypatch, capsys):
    built, trained = [], []
    _no_training(monkeypatch, mnist_comparison, built)
    monkeypatch.setattr(mnist_comparison.seeds, "train_seeds", lambda experiment, o, seeds, *a: trained.append(
        (str(experiment), seeds)))
    monkeypatch.setattr(mnist_comparison, "numpy_run", lambda *a: trained.append("numpy"))
    monkeypatch.setattr(mnist_comparison, "deck_code_run", lambda *a: pytest.fail("the deck's code ran without peers"))

    assert mnist_comparison.main(["--seeds", "0", "--peers-dir", "none", "--runs-dir", str(tmp_path)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == [f"note: the deck's own code (seed002_keras_lenet.py) is left out: no peers' folder (--peers-dir "
                     f"none); {preflight.GET_PEERS}"]
    assert trained == [("mnist_lenet5", [0]), ("mnist_lenet5_fast", [0]), "numpy"]
    assert built == [list(mnist_comparison.RECIPES)]


def test_figures_with_peers_check_the_deck_codes_gzip_mnist_before_training(tmp_path, monkeypatch, capsys):
    peers, data = tmp_path / "peers", tmp_path / "data" / "mnist"
    peers.mkdir()
    (peers / "seed002_keras_lenet.py").write_text("")
    data.mkdir(parents=True)
    for name in preflight.MNIST_GZ:
        (data / name.removesuffix(".gz")).write_text("")  # raw files: ours reads them, the deck's code cannot
    monkeypatch.setattr(mnist_comparison.seeds, "train_seeds", lambda *a: pytest.fail("trained before the checks"))
    assert mnist_comparison.main(["--peers-dir", str(peers), "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the MNIST .gz files the LeNet peers read (train-images-idx3-ubyte.gz, ")
    assert len(err.splitlines()) == 1


def test_side_by_side_without_peers_runs_ours_without_ratios_and_says_so(tmp_path, monkeypatch, capsys):
    built = []
    _no_training(monkeypatch, lenet_side_by_side, built)
    monkeypatch.setattr(lenet_side_by_side, "run_deck", lambda *a: pytest.fail("the deck's code ran without peers"))
    monkeypatch.setattr(lenet_side_by_side, "run_ours", lambda experiment, seed, runs_dir, data_dir: {
        "wall_seconds": 10.0 + seed, "test_accuracy": 0.99, "run_dir": "r"})

    assert lenet_side_by_side.main(["--seeds", "0", "1", "--experiments", "mnist_lenet5_quick", "--peers-dir", "none",
                                    "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert notes == [f"note: the deck's code (seed002_keras_lenet.py), so the wall ratios and targets, are left out: "
                     f"no peers' folder (--peers-dir none); {preflight.GET_PEERS}"]
    assert "mnist_lenet5_quick: test accuracy 99.00% (99.00-99.00), wall 10.5 s\n" in out and "deck code:" not in out
    assert built == [["mnist_lenet5_quick"]]
    from lenet_keras import hardware

    isa = hardware.isa_class()  # each ISA class has its own runs, results and report
    assert f"CPU ISA class: {hardware.describe_isa()}\n" in out
    results = json.loads((tmp_path / isa / "bench" / "lenet-side-001.json").read_text())
    assert (results["isa_class"], results["isa"]) == (isa, hardware.describe_isa())


def test_side_by_side_refuses_an_unknown_experiment_before_running(capsys, monkeypatch):
    monkeypatch.setattr(lenet_side_by_side, "run_ours", lambda *a: pytest.fail("ran"))
    assert lenet_side_by_side.main(["--experiments", "no_such_recipe", "--peers-dir", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --experiments no_such_recipe: no such file or shipped name (shipped: ")
    assert len(err.splitlines()) == 1


def test_every_tool_answers_help():
    for module in ("benchmarks.preflight", "benchmarks.mnist_comparison", "benchmarks.lenet_side_by_side",
                   "benchmarks.bench_peers", "benchmarks.airbench_compare", "benchmarks.peer_runs"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0 and f"python -m {module}" in done.stdout, (module, done.stderr[-2000:])
        if module != "benchmarks.preflight":
            assert "'none': without the peers" in done.stdout, module  # the option's own help
