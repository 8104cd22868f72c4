"""The command line: --help, and exit code 2 with a clear message for the user's mistakes."""

import subprocess
import sys
from pathlib import Path

import pytest

from lenet_keras import cli

from .conftest import REPO

EXPERIMENT = str(REPO / "experiments" / "mnist_lenet5.toml")


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["report", "--help"]])
def test_help_exits_zero_and_describes_the_command(args):
    result = subprocess.run([sys.executable, "-m", "lenet_keras", *args], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0
    assert "usage: python -m lenet_keras" in result.stdout


def test_unknown_key_is_exit_2_before_training(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lenet_keras", "train", EXPERIMENT, "train.epoch=3", "--runs-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 2
    assert "unknown key train.epoch (did you mean train.epochs?)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())  # nothing was created


def test_negative_learning_rate_is_exit_2(capsys, tmp_path):
    assert cli.main(["train", EXPERIMENT, "optimizer.learning_rate=-1", "--runs-dir", str(tmp_path)]) == 2
    assert "optimizer.learning_rate must be a finite number > 0, got -1.0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_train_then_report_succeeds_with_exit_0(capsys, tmp_path, mnist_dir):
    code = cli.main(["train", EXPERIMENT, "train.epochs=1", "data.train_subset=1000", "data.test_subset=100",
                     "name=tiny", "--data-dir", str(mnist_dir), "--runs-dir", str(tmp_path / "runs"),
                     "--report", "--reports-dir", str(tmp_path / "reports")])
    out = capsys.readouterr().out
    assert code == 0
    assert f"run directory: {tmp_path / 'runs' / 'tiny' / 'run-001'}" in out
    assert (tmp_path / "reports" / "tiny" / "index.html").is_file()  # the report of the overridden name
    assert cli.main(["report", "tiny", "--runs-dir", str(tmp_path / "runs"), "--reports-dir", str(tmp_path / "r2")]) == 0


def test_unsafe_run_id_and_missing_data_dir_are_exit_2(capsys, tmp_path, mnist_dir):
    assert cli.main(["train", EXPERIMENT, "--run-id", "../escape", "--data-dir", str(mnist_dir),
                     "--runs-dir", str(tmp_path)]) == 2
    assert "--run-id '../escape'" in capsys.readouterr().err
    assert cli.main(["train", EXPERIMENT, "--data-dir", str(tmp_path / "typo"), "--runs-dir", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_missing_data_offline_is_exit_2_listing_the_places(no_mnist_anywhere, capsys):
    (no_mnist_anywhere / "given").mkdir()
    code = cli.main(["train", EXPERIMENT, "--data-dir", str(no_mnist_anywhere / "given"), "--runs-dir",
                     str(no_mnist_anywhere / "runs")])
    err = capsys.readouterr().err
    assert code == 2
    assert "MNIST not found" in err and str(no_mnist_anywhere / "given" / "mnist") in err
    assert not (no_mnist_anywhere / "runs").exists()  # no empty run directory left behind


def test_report_of_nothing_is_exit_2(capsys, tmp_path):
    assert cli.main(["report", "mnist_lenet5", "--runs-dir", str(tmp_path)]) == 2
    assert "no runs in" in capsys.readouterr().err


def test_bad_usage_is_argparse_exit_2():
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "experiments/mnist_lenet5.toml", "--runs-dir"])  # option without its value
    assert info.value.code == 2


@pytest.mark.parametrize("argv,experiment,overrides,resume", [
    (["train", "--resume", "experiments/mnist_lenet5.toml"], "experiments/mnist_lenet5.toml", [], cli.LATEST),
    (["train", "--resume", "experiments/mnist_lenet5.toml", "train.epochs=3", "seed=7"],
     "experiments/mnist_lenet5.toml", ["train.epochs=3", "seed=7"], cli.LATEST),
    (["train", "experiments/mnist_lenet5.toml", "--resume"], "experiments/mnist_lenet5.toml", [], cli.LATEST),
    (["train", "experiments/mnist_lenet5.toml", "train.epochs=3", "--runs-dir", "r", "--resume", "--report"],  # make mnist
     "experiments/mnist_lenet5.toml", ["train.epochs=3"], cli.LATEST),
    (["train", "experiments/mnist_lenet5.toml", "--resume", "runs/mnist_lenet5/run-003"],
     "experiments/mnist_lenet5.toml", [], "runs/mnist_lenet5/run-003"),
    (["train", "--resume", "runs/mnist_lenet5/run-003"], None, [], "runs/mnist_lenet5/run-003"),
    (["train", "experiments/mnist_lenet5.toml"], "experiments/mnist_lenet5.toml", [], None),
])
def test_resume_parses_an_experiment_file_as_the_experiment_and_a_run_dir_as_the_run(argv, experiment, overrides, resume):
    args = cli.parse_args(argv)
    assert (args.experiment, args.overrides, args.resume) == (
        None if experiment is None else Path(experiment), overrides, resume)


def test_resume_experiment_file_reaches_train_as_resume_latest(monkeypatch, capsys):
    from lenet_keras import train

    calls = []
    monkeypatch.setattr(train, "run", lambda experiment, **kwargs: calls.append((experiment, kwargs)))  # returns None
    assert cli.main(["train", "--resume", EXPERIMENT, "train.epochs=2"]) == 0
    (experiment, kwargs), = calls
    assert experiment.name == "mnist_lenet5" and experiment.train.epochs == 2 and kwargs["resume"] is True
    assert cli.main(["train", "--resume", EXPERIMENT, EXPERIMENT]) == 2
    assert "two experiment files" in capsys.readouterr().err


def test_shipped_experiments_load_by_bare_name_and_a_user_file_still_works(tmp_path):
    from lenet_keras import config
    from lenet_keras.errors import ConfigError

    assert config.find_experiment_file("mnist_lenet5") == config.experiments_dir() / "mnist_lenet5.toml"
    assert config.load("mnist_lenet5").name == config.load(REPO / "experiments/mnist_lenet5.toml").name
    assert config.load("cifar_fast.toml").model.name == "cifar_fast"
    own = tmp_path / "mine.toml"
    own.write_text('name = "mine"\nseed = 5\n')
    assert config.load(own).seed == 5
    with pytest.raises(ConfigError, match="no_such_experiment"):
        config.load("no_such_experiment")
    from lenet_keras import sweep_study

    assert sweep_study.load("mnist_lenet5_grid").name == "mnist_lenet5_grid"


def test_list_prints_every_shipped_experiment_and_sweep(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line.split()[1] for line in lines}
    assert set(listed) == {p.stem for p in (REPO / "experiments").glob("*.toml")}
    assert listed["mnist_lenet5"] == "experiment" and listed["mnist_lenet5_grid"] == "sweep"
    assert any("deck's recipe" in line for line in lines if line.startswith("mnist_lenet5 "))


def test_usage_names_the_console_script_and_version(monkeypatch, capsys):
    import lenet_keras

    monkeypatch.setattr(sys, "argv", ["/somewhere/bin/lenet-keras"])
    assert cli.parser().format_usage().startswith("usage: lenet-keras ")
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"lenet-keras {lenet_keras.__version__}"
    monkeypatch.setattr(sys, "argv", ["/x/lenet_keras/__main__.py"])
    assert cli.program_name() == "python -m lenet_keras"


def test_ctrl_c_prints_one_line_naming_the_run_to_resume_and_exits_130(monkeypatch, tmp_path, capsys):
    from lenet_keras import resume, train

    run_dir = tmp_path / "runs" / "mnist_lenet5" / "run-001"
    (run_dir / resume.BACKUP_DIR).mkdir(parents=True)

    def interrupted(*args, **kwargs):
        error = KeyboardInterrupt()
        error.run_dir = run_dir
        raise error

    monkeypatch.setattr(train, "run", interrupted)
    monkeypatch.setattr(resume, "backup_epoch", lambda path: 3 if path == run_dir else 0)
    monkeypatch.setattr(sys, "argv", ["lenet-keras"])
    assert cli.main(["train", "mnist_lenet5", "--runs-dir", str(tmp_path / "runs")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"interrupted after epoch 3; continue with: lenet-keras train --resume {run_dir}"]
