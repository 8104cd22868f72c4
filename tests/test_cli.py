"""The command line: --help, and exit code 2 with a clear message for the user's mistakes."""

import os
import re
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


TF_LOG_LINE = re.compile(r"cpu_feature_guard|oneDNN custom operations are on|cuInit|absl::InitializeLog|"
                         r"^[IWEF]\d{4} \d\d:\d\d:\d\d|^[IWEF] (tensorflow|external)/", re.MULTILINE)
"""A line of TensorFlow's C++ logging: its start-up notes (CPU instructions, oneDNN, CUDA probing)."""


def test_tensorflow_start_up_lines_are_hidden_unless_verbose(tmp_path):
    """`predict` of a run whose checkpoint is broken imports Keras, so TensorFlow, then fails (exit 2)."""
    run_dir = tmp_path / "run-001"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text('{"config": {}}')
    (run_dir / "best.keras").write_text("not a checkpoint")
    (tmp_path / "digit.png").write_bytes(b"")
    env = {key: value for key, value in os.environ.items() if key != cli.TF_LOG_ENV_VAR}  # as a user has it

    def predict(*flags):
        return subprocess.run([sys.executable, "-m", "lenet_keras", *flags, "predict", str(run_dir), str(tmp_path / "digit.png"),
                               "--weights", "best"],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)

    quiet = predict()
    assert quiet.returncode == 2 and "cannot load the weights" in quiet.stderr, quiet.stderr  # TensorFlow loaded
    assert TF_LOG_LINE.search(quiet.stderr) is None, quiet.stderr
    verbose = predict("--verbose")
    assert verbose.returncode == 2 and "cannot load the weights" in verbose.stderr, verbose.stderr
    assert TF_LOG_LINE.search(verbose.stderr) is not None, verbose.stderr


@pytest.mark.parametrize("argv,level", [
    (["list"], "2"), (["--verbose", "list"], "0"), (["list", "--verbose"], "0"),
    (["--verbose", "bench", "--help"], "0"), (["bench", "--help"], "2"),
])
def test_the_tensorflow_log_level_is_set_before_the_command_and_a_users_own_value_wins(monkeypatch, capsys, argv, level):
    monkeypatch.delenv(cli.TF_LOG_ENV_VAR, raising=False)
    try:
        assert cli.main(argv) == 0
    except SystemExit as stop:  # bench --help
        assert stop.code == 0
    assert os.environ[cli.TF_LOG_ENV_VAR] == level
    monkeypatch.setenv(cli.TF_LOG_ENV_VAR, "1")
    assert cli.main(["list"]) == 0 and cli.main(["--verbose", "list"]) == 0
    assert os.environ[cli.TF_LOG_ENV_VAR] == "1"


def test_the_command_line_imports_no_tensorflow_before_a_command_needs_it():
    """`python -m lenet_keras` (its __main__, cli and what they import) parses, lists and helps without
    TensorFlow or Keras: else TensorFlow would load before `main` sets its log level."""
    for args in (["list"], ["--help"], ["train", "--help"]):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "lenet_keras", *args], capture_output=True,
                                text=True, cwd=REPO, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
        assert "lenet_keras.cli" in imported
        assert [name for name in imported if name.split(".")[0] in ("tensorflow", "keras")] == [], args
    seeds_only = ("import sys\nfrom lenet_keras import cli, seeds\n"
                  "seeds.train_seeds = lambda *args, **kwargs: []  # the runs: `python -m lenet_keras train` each\n"
                  "assert cli.main(['train', 'mnist_lenet5', '--seeds', '1']) == 0\n"
                  "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')], 'train --seeds'\n")
    result = subprocess.run([sys.executable, "-c", seeds_only], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


ISSUE = re.compile(r"\bissues?\b", re.IGNORECASE)


def description_comment(path: Path) -> list[str]:
    """The comment lines at the top of an experiment or sweep file (up to the first other line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[:next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))]


def test_descriptions_say_what_a_recipe_is_and_reaches_not_which_issue_asked_for_it(capsys):
    assert cli.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert ISSUE.findall(listed) == [], [line for line in listed.splitlines() if ISSUE.search(line)]
    comments = {f"{path.name}:{number}": line for path in sorted((REPO / "experiments").glob("*.toml"))
                for number, line in enumerate(description_comment(path), 1) if ISSUE.search(line)}
    assert comments == {}
    from lenet_keras import bench

    top = cli.parser().format_help()
    names = re.findall(r"^    (\w+)", top, re.MULTILINE)  # the COMMAND list
    assert {"train", "list", "bench", "export"} <= set(names)
    helps = [top, bench.parser().format_help()]
    for name in set(names) - {"bench"}:
        with pytest.raises(SystemExit):
            cli.parser().parse_args([name, "--help"])
        helps.append(capsys.readouterr().out)
    assert [text for text in helps if ISSUE.search(text)] == []


STDERR_AT_IMPORT = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796284055.607623   16077 port.cc:153] oneDNN custom operations are on. You may see ...\n"
    "I0000 00:00:1796284055.645934   16077 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...\n"
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, ...\n"
    "W0000 00:00:1796284055.700000   16077 gpu_device.cc:2344] Cannot dlopen some GPU libraries.\n"
    "E0000 00:00:1796284055.800000   16077 cuda_executor.cc:1309] failed call to cuInit: UNKNOWN ERROR (303)\n"
    "/site-packages/x.py:3: DeprecationWarning: a Python warning\n"
)


@pytest.mark.parametrize("level, kept", [
    ("0", slice(0, 7)), ("1", slice(4, 7)), ("2", slice(5, 7)), ("3", slice(5, 7)), ("x", slice(0, 7)),
])
def test_start_up_lines_are_dropped_by_their_level_and_nothing_else(level, kept):
    lines = STDERR_AT_IMPORT.splitlines(keepends=True)
    assert cli.without_start_up_lines(STDERR_AT_IMPORT, level) == "".join(lines[kept])
