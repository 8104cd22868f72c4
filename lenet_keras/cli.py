"""The command line: `python -m lenet_keras [--verbose] COMMAND ...` (`--help` lists the commands, each has its own).

Exit codes: 0 success; 2 a problem with the user's input (bad experiment file or override,
data missing or corrupted, run directory clash), printed as one clear message; 1 a bug
(traceback).

TensorFlow's C++ start-up lines (CPU instruction notes, oneDNN, CUDA probing) are hidden:
`main` sets `TF_CPP_MIN_LOG_LEVEL` to `QUIET_TF_LOG_LEVEL` before any command imports
TensorFlow, unless the user set it or passed `--verbose` (`tensorflow_log_level`). TensorFlow
writes its oneDNN note before that level applies (absl logging not yet initialized), so the
commands that train or load models import it through `import_tensorflow_quietly`, which drops
the start-up lines the level asks to hide. Nothing this module imports at its top loads
TensorFlow (tests/test_cli.py checks).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
from pathlib import Path

import lenet_keras
from lenet_keras.data import DATA_DIR_HELP
from lenet_keras.errors import LenetKerasError

LATEST = "latest"
"""`--resume` without a run directory: the last unfinished run of the experiment."""

TF_LOG_ENV_VAR = "TF_CPP_MIN_LOG_LEVEL"
QUIET_TF_LOG_LEVEL = "2"
"""TensorFlow's C++ log level of a command without --verbose: errors only (no info, no warnings)."""
VERBOSE_TF_LOG_LEVEL = "0"
"""With --verbose: everything (TensorFlow's own default), also in the processes a command starts."""
VERBOSE_HELP = "show TensorFlow's C++ log lines (hidden by default: $TF_CPP_MIN_LOG_LEVEL=2 unless already set)"


TENSORFLOW_COMMANDS = ("train", "sweep", "reproduce", "rerun", "predict", "export", "bench")
"""The commands that import TensorFlow, through `import_tensorflow_quietly` (`train --seeds` does
not: its runs are `python -m lenet_keras train` subprocesses)."""

START_UP_LINE = re.compile(r"^(?P<absl>WARNING: All log messages before absl::InitializeLog\(\) is called)|"
                           r"^(?P<level>[IW])\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] |"
                           r"^(?P<instructions>To enable the following instructions: )")
"""TensorFlow's start-up log lines below ERROR: absl's preface, an info (I) or warning (W) line
(`I0000 00:00:1796284055.607623   16077 port.cc:153] oneDNN custom operations are on. ...`), and
the second line of the CPU-instructions note (info)."""


def minimum_log_level(level: str) -> int:
    """`TF_CPP_MIN_LOG_LEVEL`'s value as TensorFlow reads it: 0 info, 1 warnings, 2 errors, 3 fatal
    (anything but a number: 0)."""
    return int(level) if level.strip().isdigit() else 0


def without_start_up_lines(text: str, level: str) -> str:
    """`text` without the `START_UP_LINE`s that `TF_CPP_MIN_LOG_LEVEL` = `level` hides (>= 1: info
    lines and absl's preface, >= 2: warning lines too); every other line is kept as it was."""
    minimum = minimum_log_level(level)
    kept = []
    for line in text.splitlines(keepends=True):
        match = START_UP_LINE.match(line)
        if not match or minimum < 1 or match["level"] == "W" and minimum < 2:
            kept.append(line)
    return "".join(kept)


def import_tensorflow_quietly(level: str) -> None:
    """Import Keras (so TensorFlow) with stderr (file descriptor 2) captured, then write the
    captured text back `without_start_up_lines(text, level)`. No-op when `level` hides nothing or
    Keras is already imported.
    """
    if minimum_log_level(level) < 1 or "keras" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(without_start_up_lines(captured.read().decode(errors="replace"), level))


def tensorflow_log_level(verbose: bool) -> str:
    """Set `$TF_CPP_MIN_LOG_LEVEL` for this process and those it starts (seeds, sweep workers),
    unless the user set it: errors only, or everything with `verbose`. Returns the value in force.

    It must run before TensorFlow is imported: TensorFlow reads the variable once, when it loads.
    """
    return os.environ.setdefault(TF_LOG_ENV_VAR, VERBOSE_TF_LOG_LEVEL if verbose else QUIET_TF_LOG_LEVEL)


def _resume_experiment(args: argparse.Namespace) -> None:
    """`train --resume EXPERIMENT.toml [KEY=VALUE ...]` means EXPERIMENT with a bare `--resume`.

    `--resume` takes an optional RUN_DIR, so argparse gives it the experiment file that follows it
    (and the next word, the first override, to `experiment`): put them back in place. A value
    ending in `.toml` is an experiment file (run directories are `run-NNN` folders).

    Raises:
        LenetKerasError: `--resume EXPERIMENT` together with another experiment file.
    """
    if args.command != "train" or args.resume in (None, LATEST) or Path(args.resume).suffix != ".toml":
        return
    if args.experiment is not None and "=" not in str(args.experiment):
        raise LenetKerasError(f"train: two experiment files ({args.resume}, {args.experiment}); --resume takes "
                              "a run directory, or nothing (the last unfinished run of the experiment)")
    args.overrides = ([str(args.experiment)] if args.experiment is not None else []) + args.overrides
    args.experiment, args.resume = Path(args.resume), LATEST


def parse_args(argv: list[str]) -> argparse.Namespace:
    """`parser().parse_args(argv)`, with `train --resume EXPERIMENT.toml` read as EXPERIMENT + `--resume`.

    Raises:
        SystemExit: argparse's usage errors (exit code 2).
        LenetKerasError: `--resume EXPERIMENT` together with another experiment file.
    """
    args = parser().parse_args(argv)
    _resume_experiment(args)
    return args


def _train(args: argparse.Namespace) -> None:
    from lenet_keras import config

    resume = args.resume
    if resume is not None and resume != LATEST:
        resume = Path(resume)
    if args.experiment is None:
        if not isinstance(resume, Path):
            raise LenetKerasError("train: give an experiment file, or --resume RUN_DIR to continue a run")
        from lenet_keras import train

        experiment = train.recorded_experiment(resume)
        if args.overrides:
            raise LenetKerasError("train --resume RUN_DIR without an experiment file takes no KEY=VALUE overrides")
    else:
        experiment = config.load(args.experiment, args.overrides)
    if args.run_id is not None and resume is not None:
        raise LenetKerasError("train: --run-id names a new run; it cannot be combined with --resume")
    if args.seeds:  # each seed trains in a process of its own: no TensorFlow here
        _train_seeds(args, experiment.name, resume)
        return
    from lenet_keras import train

    run_dir = train.run(experiment, runs_dir=args.runs_dir, data_dir=args.data_dir, run_id=args.run_id,
                        resume=True if resume == LATEST else resume)
    if run_dir is None:  # a multi-worker job's non-chief worker: the chief writes the run and report
        return
    _print_run_and_report(args, run_dir, experiment.name)


def _train_seeds(args: argparse.Namespace, experiment_name: str, resume) -> None:
    """`train EXPERIMENT --seeds S ...`: one run per seed (`lenet_keras.seeds`), then the report."""
    from lenet_keras import seeds

    if args.run_id is not None or isinstance(resume, Path):
        raise LenetKerasError("train --seeds makes one run per seed: it takes neither --run-id nor --resume RUN_DIR")
    outcomes = seeds.train_seeds(args.experiment, args.overrides, args.seeds, args.runs_dir, args.data_dir,
                                 resume=resume == LATEST)
    print(seeds.summary_line(outcomes))
    if args.report:
        from lenet_keras import report

        print(f"report: {report.build(experiment_name, runs_dir=args.runs_dir, reports_dir=args.reports_dir)}")


def _seed(text: str) -> int:
    """argparse type of a --seeds value: a non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer seed (put KEY=VALUE overrides before --seeds)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed {value} is negative")
    return value


def _print_run_and_report(args: argparse.Namespace, run_dir: Path, experiment_name: str) -> None:
    """Print the run directory; with --report, render the experiment's report and print its path."""
    print(f"run directory: {run_dir}")
    if args.report:
        from lenet_keras import report

        print(f"report: {report.build(experiment_name, runs_dir=args.runs_dir, reports_dir=args.reports_dir)}")


def _raise_keyboard_interrupt(signum, frame):
    """SIGTERM handler: stop training as Ctrl-C does (the run records "interrupted", resumable)."""
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def program_name() -> str:
    """How the user started this command: `lenet-keras` (the console script) or `python -m lenet_keras`."""
    name = Path(sys.argv[0]).name
    return "python -m lenet_keras" if name in ("__main__.py", "-c", "") or name.startswith("python") else name


def interrupted_message(error: KeyboardInterrupt) -> str:
    """The one line printed for Ctrl-C or SIGTERM: the epochs the run keeps and how to continue it
    (`train.run` names its run directory on the exception as `run_dir`)."""
    run_dir = getattr(error, "run_dir", None)
    if run_dir is None:
        return "interrupted"
    from lenet_keras import resume

    epochs = resume.backup_epoch(run_dir)
    kept = f"after epoch {epochs}" if epochs else "before the first epoch ended"
    return f"interrupted {kept}; continue with: {program_name()} train --resume {run_dir}"


def _list(args: argparse.Namespace) -> None:
    """Print the shipped experiments and sweeps, one line each with their purpose."""
    from lenet_keras import config

    for name, kind, purpose in config.shipped_files():
        print(f"{name:<24} {kind:<10} {purpose}")


def _scratch(args: argparse.Namespace) -> None:
    from lenet_keras import config
    from lenet_keras.scratch import train as scratch_train

    experiment = config.load(args.experiment, args.overrides)
    run_dir = scratch_train.run(experiment, runs_dir=args.runs_dir, data_dir=args.data_dir)
    _print_run_and_report(args, run_dir, experiment.name)


def _report(args: argparse.Namespace) -> None:
    from lenet_keras import report

    index = report.build(args.experiment, runs_dir=args.runs_dir, reports_dir=args.reports_dir)
    print(f"report: {index} (and {index.with_suffix('.md').name} beside it)")


def _rerun(args: argparse.Namespace) -> None:
    from lenet_keras import rerun

    new_dir, comparison = rerun.rerun(args.run_dir, data_dir=args.data_dir)
    print(f"rerun of {args.run_dir}: {new_dir}")
    print("\n".join(comparison.lines()))


def _sweep(args: argparse.Namespace) -> None:
    from lenet_keras import sweep, sweep_report, sweep_study

    plan = sweep_study.load(args.sweep, storage=args.storage or os.environ.get(sweep_study.STORAGE_ENV_VAR) or None)
    if not args.report_only:
        csv = sweep.run_sweep(plan, runs_dir=args.runs_dir, data_dir=args.data_dir, workers=args.workers,
                              worker_only=args.worker_only)
        if args.worker_only:
            return
        print(f"trials: {csv}")
    index = sweep_report.build(plan, runs_dir=args.runs_dir, reports_dir=args.reports_dir)
    print(f"report: {index}")
    print(f"TensorBoard HParams: make tensorboard RUNS={args.runs_dir / plan.name}")


def _predict(args: argparse.Namespace) -> None:
    from lenet_keras import predict

    predictions = predict.predict_files(args.run_dir, args.images, top=args.top, weights=args.weights)
    for prediction in predictions:
        print(predict.format_prediction(prediction))
    if args.out is not None:
        print(f"predictions: {predict.write_csv(predictions, args.out)}")


def _export(args: argparse.Namespace) -> None:
    from lenet_keras import predict

    print(f"exported: {predict.export(args.run_dir, args.out, weights=args.weights)}")


def _add_predict(commands) -> None:
    """The `predict` command."""
    predict = commands.add_parser(
        "predict",
        help="classify image files with a run's final (or best) weights",
        description="Load the run's final weights (those of its reported test accuracy; --weights best: "
        "best.keras), scale each PNG/JPEG image as the run's pipelines did "
        "(manifest.json's config.data.mean/std) and print its top-K classes (names from the manifest) "
        "with probabilities. Images must already have the model's size and channels (e.g. 28x28 "
        "grayscale for LeNet-5 on MNIST, 32x32 RGB for CIFAR): there is no automatic resize, and no "
        "conversion between grayscale and RGB; another size or channel count is an error (exit 2).",
    )
    predict.add_argument("run_dir", type=Path, help="a run directory, e.g. runs/mnist_lenet5/run-001")
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE_OR_FOLDER",
                         help="PNG/JPEG files, or folders (their .png/.jpg/.jpeg files, sorted by name)")
    _add_weights_option(predict)
    predict.add_argument("--top", type=int, default=3, metavar="K", help="classes printed per image (default 3)")
    predict.add_argument("--out", type=Path, default=None, metavar="FILE.csv",
                         help="also write a CSV: columns path,rank,class,probability, one row per image and rank")
    predict.set_defaults(handler=_predict)


def _add_weights_option(command: argparse.ArgumentParser) -> None:
    """--weights final|best (`predict.WEIGHTS`), shared by `predict` and `export`."""
    from lenet_keras.predict import WEIGHTS  # NumPy only: no TensorFlow at start-up

    command.add_argument(
        "--weights", choices=list(WEIGHTS), default=WEIGHTS[0],
        help="final (default): final.weights.h5, the weights of the manifest's test accuracy and of "
        "predictions.npz; best: best.keras, the epoch of best validation accuracy (with "
        "data.validation_split = 0 that epoch was chosen on the test set)")


def _add_export(commands) -> None:
    """The `export` command."""
    export = commands.add_parser(
        "export",
        help="export a run's final (or best) weights as a TensorFlow SavedModel",
        description="Write the run's model with its final weights (--weights best: best.keras) as a TensorFlow SavedModel (Keras model.export, endpoint "
        "`serve`: float32 images scaled as in training -> class probabilities) into a new folder; "
        "an existing folder is not overwritten (exit 2).",
    )
    export.add_argument("run_dir", type=Path, help="a run directory, e.g. runs/mnist_lenet5/run-001")
    _add_weights_option(export)
    export.add_argument("--format", choices=["savedmodel"], default="savedmodel", help="artifact format (savedmodel)")
    export.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder (default: RUN_DIR/export/savedmodel); must not exist")
    export.set_defaults(handler=_export)


def _add_run_options(command: argparse.ArgumentParser) -> None:
    """--runs-dir, --data-dir, --report and --reports-dir, shared by the commands that train a run."""
    command.add_argument("--runs-dir", type=Path, default=Path("runs"), help="parent of run directories (default: runs)")
    command.add_argument("--data-dir", type=Path, default=None, help=DATA_DIR_HELP)
    command.add_argument("--report", action="store_true", help="then render the experiment's report (all its runs)")
    command.add_argument("--reports-dir", type=Path, default=Path("reports"), help="with --report: output parent")


def _add_train(commands) -> None:
    """The `train` command."""
    train = commands.add_parser(
        "train",
        help="train one run of an experiment file",
        description="Train one run of EXPERIMENT into RUNS_DIR/<experiment>/run-NNN/ "
        "(TensorBoard logs, history.csv, best.keras, predictions.npz, manifest.json).",
    )
    train.add_argument("experiment", type=Path, nargs="?", default=None,
                       help="experiment file or shipped name, e.g. experiments/mnist_lenet5.toml or mnist_lenet5 (optional with --resume RUN_DIR)")
    train.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="override experiment keys, e.g. train.epochs=3 seed=7"
    )
    _add_run_options(train)
    train.add_argument("--run-id", default=None, help="name of the run directory (default: run-NNN, the next number)")
    train.add_argument("--seeds", type=_seed, nargs="+", default=None, metavar="SEED",
                       help="train one run per seed (each `train ... seed=S` in a fresh process), skipping seeds whose "
                       "config already has a completed run; put KEY=VALUE overrides before --seeds")
    train.add_argument(
        "--resume", nargs="?", const=LATEST, default=None, metavar="RUN_DIR",
        help="continue a killed or interrupted run from its last completed epoch (same final weights as an "
        "uninterrupted run); with no RUN_DIR: the last unfinished run of EXPERIMENT with the same config, "
        "else a new run. Forms: train EXPERIMENT --resume; train --resume EXPERIMENT (the same: a .toml "
        "after --resume is the experiment, not a run directory); train --resume RUN_DIR (config from its "
        "manifest); train EXPERIMENT --resume RUN_DIR",
    )
    train.set_defaults(handler=_train)


def _add_sweep(commands) -> None:
    """The `sweep` command."""
    sweep = commands.add_parser(
        "sweep",
        help="run (or continue) a grid or Optuna hyperparameter sweep",
        description="Run every trial of SWEEP (a sweep file: base experiment, fixed overrides, search "
        "space) as a normal run in RUNS_DIR/<sweep>/trial-NNN/, with the Optuna study in "
        "RUNS_DIR/<sweep>/study.db (or --storage), then write trials.csv, TensorBoard HParams "
        "summaries and REPORTS_DIR/<sweep>/. Running it again continues: finished trials are kept.",
    )
    sweep.add_argument("sweep", type=Path, help="sweep file or shipped name, e.g. experiments/mnist_lenet5_grid.toml or mnist_lenet5_grid")
    sweep.add_argument("--workers", type=int, default=1, help="worker processes sharing the study (default 1)")
    sweep.add_argument("--storage", default=None,
                       help="database URL of the study, e.g. postgresql://user:password@host/db (default: "
                       "$LENET_KERAS_SWEEP_STORAGE, else the file's, else sqlite in the sweep folder); passwords "
                       "are masked in manifests")
    sweep.add_argument("--runs-dir", type=Path, default=Path("runs"), help="parent of the sweep folder (default: runs)")
    sweep.add_argument("--data-dir", type=Path, default=None, help=DATA_DIR_HELP)
    sweep.add_argument("--reports-dir", type=Path, default=Path("reports"), help="report parent (default: reports)")
    sweep.add_argument("--report-only", action="store_true", help="only re-render the report from trials.csv")
    sweep.add_argument("--worker-only", action="store_true",
                       help="only claim and run queued trials (an extra worker, e.g. on another machine "
                       "with the same --storage); no report")
    sweep.set_defaults(handler=_sweep)


def _compare(args: argparse.Namespace) -> None:
    from lenet_keras import compare

    index = compare.build(args.names, runs_dir=args.runs_dir, reports_dir=args.reports_dir, label=args.label,
                          baseline=args.baseline, where=args.where)
    print(f"report: {index} (and {index.with_suffix('.md').name} beside it)")


def _add_compare(commands) -> None:
    """The `compare` command."""
    compare = commands.add_parser(
        "compare",
        help="one report over the runs of several experiments, engines and seeds",
        description="Group the completed runs of RUNS_DIR/<NAME>/ for each NAME (experiments, sweeps, peers' "
        "folders) by config except the seed, and render REPORTS_DIR/compare-<label>/index.html and index.md: "
        "test accuracy and training seconds per group (mean with 95% confidence interval, median, min-max), "
        "each group's difference from the baseline (Welch's t-test, seeds needed), the config keys that differ, "
        "validation curves against epochs and training seconds, and every run.",
    )
    compare.add_argument("names", nargs="+", metavar="NAME",
                         help="experiment name or file, or a folder of RUNS_DIR, e.g. mnist_lenet5 mnist_lenet5_fast")
    compare.add_argument("--label", default=None, help="names the report folder compare-LABEL (default: the NAMEs joined by -vs-)")
    compare.add_argument("--baseline", default=None,
                         help="reference group: its letter (A), label or experiment name (default: the first group)")
    compare.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                         help="keep only runs with this value (repeatable): a config key such as train.batch_size, "
                         "or engine, seed, status, experiment, run; e.g. --where engine=keras")
    compare.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where the runs are (default: runs)")
    compare.add_argument("--reports-dir", type=Path, default=Path("reports"), help="output parent (default: reports)")
    compare.set_defaults(handler=_compare)


REPRODUCE_HELP = """Rows: one per number the seeds (the project's source documents) and papers publish (the deck's validation
curve, the LeNet paper seed's 98.722% and NumPy 90.27%, LeCun et al.'s 99.05%, the CIFAR-10
notebook's 94.48%, airbench94's 94.01%, ...), each with its source, the experiment that
reproduces it, our median and intervals over --seeds, a verdict and the command that
regenerates it. Missing runs are trained first (completed seeds are reused).
Verdicts: reproduced (the published value lies between our seeds' values or in the 95%
confidence interval of our mean); consistent, more seeds needed (outside those, but inside
the 95% range of one run of ours, as a published number is one run); differs (outside that
range too, or one seed; by our median minus the published value, in points);
not measurable here (why: the official CIFAR-10,
a GPU, data or code that is not here). Output: REPORTS_DIR/reproduction/index.html + index.md."""
"""The `reproduce` command's description (`lenet_keras.reproduce` is imported only when it runs: scipy and
matplotlib would slow every other command's start)."""


def _reproduce(args: argparse.Namespace) -> None:
    from lenet_keras import reproduce

    reproduce.handle(args)


def _add_reproduce(commands) -> argparse.ArgumentParser:
    """The `reproduce` command (the scorecard, `lenet_keras.reproduce`); returns its parser."""
    parser = commands.add_parser(
        "reproduce", help="render the reproduction scorecard (published numbers vs our runs over seeds)",
        description="Train what is missing and render the reproduction scorecard.\n\n" + REPRODUCE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/reproduction"),
                        help="parent of the scorecard's run directories (default: runs/reproduction, its own "
                             "folder, so its short runs do not mix into other experiments' reports)")
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"),
                        help="parent of the report folder reproduction/ (default: reports)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder holding the datasets (default: $LENET_KERAS_DATA, ./data, the Keras cache)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                        help="seeds of every measured row (default: 0 1 2, reproduce.DEFAULT_SEEDS)")
    parser.set_defaults(handler=_reproduce)
    return parser


def _add_report_and_rerun(commands) -> None:
    """The `report` and `rerun` commands (they read run directories)."""
    report = commands.add_parser(
        "report",
        help="render the report of an experiment's runs",
        description="Render REPORTS_DIR/<experiment>/index.html and index.md from the run "
        "directories RUNS_DIR/<experiment>/*/ (curves, tables, confusion matrices, samples).",
    )
    report.add_argument("experiment", help="experiment file or experiment name, e.g. mnist_lenet5")
    report.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where the runs are (default: runs)")
    report.add_argument("--reports-dir", type=Path, default=Path("reports"), help="output parent (default: reports)")
    report.set_defaults(handler=_report)

    rerun = commands.add_parser(
        "rerun",
        help="reproduce a run from its manifest and compare",
        description="Train RUN_DIR's recorded experiment (config and seed from its manifest.json) again "
        "into a new run directory beside it, then print whether history.csv (timing aside), the test "
        "metrics and the final weights are identical, or the first metric and epoch that differ; warns "
        "when package versions or the machine differ.",
    )
    rerun.add_argument("run_dir", type=Path, help="a run directory, e.g. runs/mnist_lenet5/run-001")
    rerun.add_argument("--data-dir", type=Path, default=None, help=DATA_DIR_HELP)
    rerun.set_defaults(handler=_rerun)


def parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m lenet_keras`."""
    top = argparse.ArgumentParser(
        prog=program_name(),
        description="Reproducible LeNet-5 / CIFAR CNN experiments: train runs, then report on them.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {lenet_keras.__version__}")
    top.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_train(commands)
    _add_compare(commands)
    _add_reproduce(commands)
    commands.add_parser(
        "list", help="list the shipped experiments and sweeps",
        description="Print each experiment and sweep file shipped with the package (usable by bare name, "
        "e.g. `train mnist_lenet5`) with its kind and the first line of its comment.",
    ).set_defaults(handler=_list)

    _add_report_and_rerun(commands)

    scratch = commands.add_parser(
        "scratch",
        help="train the NumPy LeNet-5 (lenet_keras.scratch) with an experiment's recipe",
        description="Train a from-scratch NumPy network with EXPERIMENT's recipe into "
        "RUNS_DIR/<experiment>/numpy-NNN/ (history.csv, manifest.json, predictions.npz), beside the "
        "experiment's Keras runs, so its report overlays both. Two recipes: model lenet5 with SGD + "
        "momentum and exponential decay (e.g. mnist_lenet5), and model lenet5_1998 with the stochastic "
        "diagonal Levenberg-Marquardt optimizer, one update per image (mnist_lenet5_1998). Data, seed, "
        "epochs, batch size and schedule come from the experiment; augmentation is refused.",
    )
    scratch.add_argument("experiment", type=Path, help="experiment file or shipped name, e.g. mnist_lenet5")
    scratch.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override experiment keys")
    _add_run_options(scratch)
    scratch.set_defaults(handler=_scratch)

    commands.add_parser(
        "bench", add_help=False,
        help="measure how fast the LeNet-5 and CIFAR models train and predict here",
        description="See python -m lenet_keras bench --help.",
    ).set_defaults(handler=None)

    _add_sweep(commands)
    _add_predict(commands)
    _add_export(commands)
    for command in commands.choices.values():  # --verbose also after the command (bench: before it)
        if command.add_help:
            command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run the command line with `argv` (default `sys.argv[1:]`) and return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose_flags = next((i for i, word in enumerate(argv) if word != "--verbose"), len(argv))
    if argv[verbose_flags:verbose_flags + 1] == ["bench"]:  # its own parser and --help
        level = tensorflow_log_level(verbose=verbose_flags > 0)
        if not {"-h", "--help"} & set(argv):
            import_tensorflow_quietly(level)
        from lenet_keras import bench

        return bench.main(argv[verbose_flags + 1:])
    try:
        args = parse_args(argv)
        level = tensorflow_log_level(args.verbose)  # before any handler imports TensorFlow
        if args.command in TENSORFLOW_COMMANDS and not (args.command == "train" and args.seeds):  # subprocesses train
            import_tensorflow_quietly(level)
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # recorded as "interrupted", resumable
        args.handler(args)
    except LenetKerasError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:
        print(interrupted_message(error), file=sys.stderr)
        return 130
    return 0
