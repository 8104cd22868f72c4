"""Where the wall time of one `lenet_keras train` command goes: seconds per stage of the runner.

    python -m benchmarks.train_phases [TRAIN ARGUMENTS ...]
    python -m benchmarks.train_phases experiments/mnist_lenet5_quick.toml --runs-dir /tmp/phases

A development tool of the repository (not part of the installed package): run it from the
repository root. It runs `python -m lenet_keras train TRAIN ARGUMENTS` in this process (the
same code path, the same run directory) with a timer around each stage of `lenet_keras.train.run`
(`STAGES`), and prints, in order: importing `lenet_keras.train` (Keras and TensorFlow), each
stage's seconds, each epoch's seconds from the run's history.csv (`epoch_seconds`: the first
includes tracing the training step), and the whole command's seconds from the start of this
module to the end of the run. Unlike `python -m cProfile`, the timers do not slow the work they
time. Issue 19 used it to find what bounds `mnist_lenet5_quick` (README, "Speed").
"""

from __future__ import annotations

import csv
import functools
import sys
import time

START = time.perf_counter()

STAGES = ("prepare", "input_pipelines", "callbacks_for", "fit", "evaluate", "write_artifacts")
"""The functions of `lenet_keras.train` timed, in the order `train.run` calls them."""


def timed_stages(train_module, seconds: dict) -> None:
    """Wrap each of `STAGES` in `train_module` so that its wall seconds go to `seconds[name]`
    (float, summed over calls); the run's own result is unchanged."""
    for name in STAGES:
        function = getattr(train_module, name)

        @functools.wraps(function)
        def timed(*args, _function=function, _name=name, **kwargs):
            begin = time.perf_counter()
            try:
                return _function(*args, **kwargs)
            finally:
                seconds[_name] = seconds.get(_name, 0.0) + time.perf_counter() - begin

        setattr(train_module, name, timed)


def epoch_seconds(run_dir) -> list[float]:
    """The `epoch_seconds` column of `run_dir/history.csv` (one float per epoch)."""
    with open(f"{run_dir}/history.csv", newline="") as f:
        return [float(row["epoch_seconds"]) for row in csv.DictReader(f)]


def main(argv: list[str] | None = None) -> int:
    """Run `lenet_keras train` with `argv` (default `sys.argv[1:]`) timed by stage; print the
    seconds; return the command's exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    begin = time.perf_counter()
    from lenet_keras import cli, train

    seconds = {"import lenet_keras.train (Keras, TensorFlow)": time.perf_counter() - begin}
    timed_stages(train, seconds)
    run_dirs = []
    run = train.run
    train.run = lambda *args, **kwargs: run_dirs.append(run(*args, **kwargs)) or run_dirs[-1]
    try:
        code = cli.main(["train", *argv])
    finally:
        train.run = run
    total = time.perf_counter() - START
    print("\nseconds by stage of one train command:")
    for name, value in seconds.items():
        print(f"  {name:<45} {value:7.2f}")
    if run_dirs and run_dirs[-1] is not None:
        print(f"  {'epochs (history.csv epoch_seconds)':<45} " + " ".join(f"{s:.2f}" for s in epoch_seconds(run_dirs[-1])))
    print(f"  {'whole command (this module start to end)':<45} {total:7.2f}")
    return code


if __name__ == "__main__":
    sys.exit(main())
