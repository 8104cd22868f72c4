"""LeNet-5 recipes against the deck's own code, as whole commands, alternating: the ratios of
issue 19's MNIST targets.

    python -m benchmarks.lenet_side_by_side --seeds 0 1 2             # mnist_lenet5_quick mnist_lenet5_wide
    python -m benchmarks.lenet_side_by_side --seeds 0 1 2 --experiments mnist_lenet5_fast mnist_lenet5
    make lenet-side-by-side [SEEDS="0 1 2"] [ARGS="--experiments ..."]

For each seed in turn: one run of the deck's script `../shared/peers/seed002_keras_lenet.py 20`
(recorded as a run directory by `benchmarks.peer_runs`), then `python -m lenet_keras train
EXPERIMENT seed=S` for each experiment, each timed from start to exit by the same timer (Python
and TensorFlow start-up, data loading, training, evaluation and the run directory's files
included: what a user waits for). Prints, per experiment, the test accuracy (median, min-max)
and the ratio of its wall seconds to the deck code's of the same seed (min / median / max of
the per-seed ratios), and the two targets: test accuracy >= 99.0% at <= 0.2x the deck code's
wall time, and >= 99.5% at <= 1x (medians). Writes `RUNS_DIR/bench/lenet-side-NNN.json` and
renders `compare` over the runs (`reports/compare-lenet-side-by-side/`). Runs go to
`RUNS_DIR/<experiment>/` and `RUNS_DIR/peer_deck_keras_lenet5/` (default RUNS_DIR:
runs/side-by-side, so other runs do not mix into the report).

A development tool of the repository (it runs the seeds' scripts): run it from the repository root.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import peer_runs
from lenet_keras import bench, compare, manifest, rundir

TARGETS = ((0.990, 0.2), (0.995, 1.0))
"""(test accuracy at least, wall time at most this multiple of the deck code's): issue 19's MNIST targets."""
DECK_EPOCHS = 20


def run_ours(experiment: str, seed: int, runs_dir: Path, data_dir: str | None) -> dict:
    """`train EXPERIMENT seed=S` as a whole command: {"wall_seconds", "test_accuracy", "run_dir"}.

    Raises:
        RuntimeError: the command failed or printed no run directory.
    """
    command = [sys.executable, "-m", "lenet_keras", "train", experiment, f"seed={seed}", "--runs-dir", str(runs_dir),
               *(["--data-dir", data_dir] if data_dir else [])]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    found = re.search(r"^run directory: (.+)$", done.stdout, re.M)
    if done.returncode or not found:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    run_dir = Path(found.group(1))
    accuracy = manifest.read_json(run_dir / rundir.MANIFEST)["test"]["accuracy"]
    return {"wall_seconds": round(seconds, 2), "test_accuracy": accuracy, "run_dir": str(run_dir)}


def run_deck(runs_dir: Path, data_dir: str | None) -> dict:
    """One run of the deck's script (20 epochs), recorded: {"wall_seconds", "test_accuracy", "run_dir"}.

    Raises:
        ValueError: no MNIST .gz files; RuntimeError: the script failed (`peer_runs.run_and_record`).
    """
    mnist = peer_runs.mnist_gz_dir(data_dir)
    if mnist is None:
        raise ValueError(f"no MNIST .gz files found from --data-dir {data_dir!r}")
    run_dir, _, seconds = peer_runs.run_and_record(peer_runs.PEERS["deck-keras"], sys.executable, [str(DECK_EPOCHS)],
                                                   runs_dir, mnist_dir=mnist, source=Path(mnist))
    accuracy = manifest.read_json(run_dir / rundir.MANIFEST)["test"]["accuracy"]
    return {"wall_seconds": seconds, "test_accuracy": accuracy, "run_dir": str(run_dir)}


def summary(rows: list[dict], experiments: list[str]) -> dict:
    """Per experiment: test accuracy (median, min, max), wall seconds (median), the ours / deck wall
    ratio per seed (`bench.spread`) and whether each of `TARGETS` is met (medians).

    `rows` hold {"seed", "deck": {...}, <experiment>: {...}} as `run_ours` / `run_deck` give them."""
    out = {}
    for experiment in experiments:
        accuracy = [row[experiment]["test_accuracy"] for row in rows]
        ratios = [row[experiment]["wall_seconds"] / row["deck"]["wall_seconds"] for row in rows]
        ratio = bench.spread(ratios)
        median = statistics.median(accuracy)
        out[experiment] = {
            "test_accuracy": {"median": median, "min": min(accuracy), "max": max(accuracy)},
            "wall_seconds_median": statistics.median(row[experiment]["wall_seconds"] for row in rows),
            "wall_ratio_ours_over_deck": ratio,
            "targets": {f">= {100 * acc:.1f}% at <= {limit}x": median >= acc and ratio["median"] <= limit
                        for acc, limit in TARGETS},
        }
    deck = [row["deck"]["test_accuracy"] for row in rows]
    out["deck code"] = {"test_accuracy": {"median": statistics.median(deck), "min": min(deck), "max": max(deck)},
                        "wall_seconds_median": statistics.median(row["deck"]["wall_seconds"] for row in rows)}
    return out


def print_summary(result: dict) -> None:
    """One line per experiment: accuracy, wall seconds, ratio and the targets."""
    print("\nwhole commands, medians over seeds (ratio: min / median / max of per-seed ratios ours / deck code):")
    for name, s in result.items():
        acc = s["test_accuracy"]
        line = (f"  {name}: test accuracy {100 * acc['median']:.2f}% ({100 * acc['min']:.2f}-{100 * acc['max']:.2f}), "
                f"wall {s['wall_seconds_median']:.1f} s")
        if "wall_ratio_ours_over_deck" in s:
            r = s["wall_ratio_ours_over_deck"]
            line += f", wall ratio {r['min']:.3f} / {r['median']:.3f} / {r['max']:.3f}; targets: " + ", ".join(
                f"{target} {'met' if met else 'not met'}" for target, met in s["targets"].items())
        print(line)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.lenet_side_by_side", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of ours, one deck run each (default 0 1 2)")
    p.add_argument("--experiments", nargs="+", default=["mnist_lenet5_quick", "mnist_lenet5_wide", "mnist_lenet5_wide_bn"],
                   help="ours (default mnist_lenet5_quick mnist_lenet5_wide mnist_lenet5_wide_bn: the 99.0%% target's recipe, the 99.5%% target's recipe and the one it adds to)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/side-by-side"), help="default runs/side-by-side")
    p.add_argument("--reports-dir", type=Path, default=Path("reports"), help="default reports")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST (default: $LENET_KERAS_DATA, then data/)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Alternate the deck code and ours per seed; print and write the ratios; render the comparison."""
    args = parser().parse_args(argv)
    rows = []
    for seed in args.seeds:
        row = {"seed": seed, "deck": run_deck(args.runs_dir, args.data_dir)}
        print(f"seed {seed}: deck code {row['deck']['wall_seconds']:.1f} s, {row['deck']['test_accuracy']:.4f}", flush=True)
        for experiment in args.experiments:
            row[experiment] = run_ours(experiment, seed, args.runs_dir, args.data_dir)
            print(f"seed {seed}: {experiment} {row[experiment]['wall_seconds']:.1f} s, "
                  f"{row[experiment]['test_accuracy']:.4f}", flush=True)
        rows.append(row)
    result = summary(rows, args.experiments)
    print_summary(result)
    path = rundir.next_numbered_path(args.runs_dir / "bench", "lenet-side", ".json")
    manifest.write_json_atomic(path, {"rows": rows, "summary": result, "machine": manifest.machine()})
    print(f"results: {path}")
    index = compare.build([*args.experiments, peer_runs.PEERS["deck-keras"].experiment], runs_dir=args.runs_dir,
                          reports_dir=args.reports_dir, label="lenet-side-by-side")
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
