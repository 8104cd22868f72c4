"""Crash drill: SIGKILL a real training command at random moments, resume it, compare with an uninterrupted run.

A development tool of the repository (not part of the installed package); run it from the
repository root:

    python -m benchmarks.crash_drill --kills 5            # `make mnist`, 5 random kills
    python -m benchmarks.crash_drill --command "make mnist EPOCHS=3 RUNS={runs} REPORTS={runs}/reports" --kills 3
    python -m benchmarks.crash_drill --at 1.5 47                 # during start-up, during the test/report
    make crash-drill [ARGS="--kills 3"]

First the command runs once uninterrupted (the reference). Then, for each kill, it starts the
command in a fresh runs folder, kills its whole process group with SIGKILL after a random
number of seconds (uniform between 0 and the reference's wall time, from `--seed`; or the
`--at` moments), runs the
same command again (`make mnist` resumes the unfinished run), and compares the completed run
with the reference: `history.csv` without the timing column, the test metrics and the digest
of the final weights and optimizer state (`lenet_keras.resume.weights_digest`). Prints one line
per kill and exits 1 if any differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lenet_keras import rerun, run_index


def _completed_run(runs: Path) -> Path:
    """The one completed run directory under `runs` (any experiment)."""
    done = [r.path for r in run_index.scan(runs, depth=2) if r.status == "completed"]
    if len(done) != 1:
        raise RuntimeError(f"expected one completed run under {runs}, found {len(done)}")
    return done[0]


def _run(command: str, runs: Path, log: Path, kill_after: float | None = None) -> tuple[float, bool]:
    """Run `command` with {runs} filled in; with `kill_after`, SIGKILL its process group then.

    Returns (wall seconds, whether it was killed).
    """
    start = time.perf_counter()
    with log.open("a") as out:
        process = subprocess.Popen(shlex.split(command.format(runs=runs)), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return time.perf_counter() - start, True
    if process.returncode != 0:
        raise RuntimeError(f"{command!r} exited with {process.returncode}; see {log}")
    return time.perf_counter() - start, False


def _state_at_kill(runs: Path) -> str:
    """What the killed attempt left: how many epochs its backup held, or why there is none."""
    records = run_index.scan(runs, depth=2)
    if not records:
        return "killed before any manifest was written"
    metadata = records[-1].path / "backup" / "training_metadata.json"
    status = records[-1].status
    if metadata.exists():
        return f"status {status}, backup after epoch {json.loads(metadata.read_text())['epoch']}"
    return f"status {status}, no epoch completed yet"


def main(argv: list[str] | None = None) -> int:
    """Run the drill (see the module docstring); returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crash_drill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--command", default="make mnist RUNS={runs} REPORTS={runs}/reports",
                        help="training command; {runs} is replaced by a fresh runs folder (default: %(default)s)")
    parser.add_argument("--kills", type=int, default=5, help="number of killed-and-resumed runs (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill moments (default 0)")
    parser.add_argument("--at", type=float, nargs="+", default=None, metavar="SECONDS",
                        help="kill at these moments (seconds after the start) instead of --kills random ones")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the runs folders go (default: a temp folder)")
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="crash-drill-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "drill.log"
    reference_runs = work / "reference"
    wall, _ = _run(args.command, reference_runs, log)
    reference = _completed_run(reference_runs)
    print(f"reference: {args.command.format(runs=reference_runs)} -> {reference} in {wall:.1f} s", flush=True)
    moments = random.Random(args.seed)
    failures = 0
    kill_moments = args.at or [moments.uniform(0.0, wall) for _ in range(args.kills)]
    for number, kill_after in enumerate(kill_moments, start=1):
        runs = work / f"kill-{number}"
        _, killed = _run(args.command, runs, log, kill_after=kill_after)
        state = _state_at_kill(runs) if killed else "finished before the kill"
        if killed and "status completed" in state:  # killed while rendering the report: `make report` redoes it
            resumed_wall = 0.0
        else:
            resumed_wall, _ = _run(args.command, runs, log)
        run_dir = _completed_run(runs)
        comparison = rerun.compare(reference, run_dir)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        resumed = [entry["from_epoch"] for entry in manifest.get("resumed", [])]
        failures += not comparison.identical
        print(f"kill {number}: SIGKILL after {kill_after:.1f} s ({state}); second command "
              f"{f'{resumed_wall:.1f} s' if resumed_wall else 'not needed'}, "
              f"resumed from epoch {resumed or 'none (new run)'}; "
              f"{'identical' if comparison.identical else 'DIFFERENT: ' + comparison.difference}; "
              f"test accuracy {manifest['test']['accuracy']:.4f}", flush=True)
    print(f"{len(kill_moments) - failures} of {len(kill_moments)} killed runs ended identical to the reference (logs: {log})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
