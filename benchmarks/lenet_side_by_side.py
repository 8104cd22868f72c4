"""LeNet-5 recipes against the deck's own code, as whole commands, alternating: the ratios of
the MNIST speed targets, on this CPU's ISA class.

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
wall time, and >= 99.5% at <= 1x (medians). Results depend on the CPU's ISA class
(`lenet_keras.hardware.isa_class`: "amx", "avx2", ...; the fast recipes' `train.precision =
"auto"` runs bfloat16 only on "amx" and "avx512_bf16"), so each class has its own folders: runs go
to `RUNS_DIR/<class>/<experiment>/` and `RUNS_DIR/<class>/peer_deck_keras_lenet5/` (default
RUNS_DIR: runs/side-by-side, so other runs do not mix into the report), the results to
`RUNS_DIR/<class>/bench/lenet-side-NNN.json` (with the class), and `compare` over the runs
renders `reports/compare-lenet-side-by-side-<class>/`.

The deck's script is read from `--peers-dir DIR` (default ../shared/peers beside the checkout;
make: `PEERS=DIR`). Before anything runs, the experiments, their data, the script and the MNIST
.gz files it reads are checked (`benchmarks.preflight`): a missing one stops it with one line
(exit 2). Without a peers' folder (`--peers-dir none`, or no ../shared/peers) ours still run and
are reported (accuracy, wall seconds), with one line saying that the deck's code, and so the
ratios and targets, were left out.

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

from benchmarks import peer_runs, preflight
from lenet_keras import bench, hardware, manifest, rundir

TARGETS = ((0.990, 0.2), (0.995, 1.0))
"""(test accuracy at least, wall time at most this multiple of the deck code's): the MNIST speed targets."""
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


def run_deck(runs_dir: Path, mnist: str, peers_dir: Path | None = None) -> dict:
    """One run of the deck's script of `peers_dir` (20 epochs) on the MNIST .gz files of `mnist`,
    recorded: {"wall_seconds", "test_accuracy", "run_dir"}.

    Raises:
        RuntimeError: the script failed (`peer_runs.run_and_record`).
    """
    run_dir, _, seconds = peer_runs.run_and_record(peer_runs.PEERS["deck-keras"], sys.executable, [str(DECK_EPOCHS)],
                                                   runs_dir, mnist_dir=mnist, source=Path(mnist), peers_dir=peers_dir)
    accuracy = manifest.read_json(run_dir / rundir.MANIFEST)["test"]["accuracy"]
    return {"wall_seconds": seconds, "test_accuracy": accuracy, "run_dir": str(run_dir)}


def summary(rows: list[dict], experiments: list[str]) -> dict:
    """Per experiment: test accuracy (median, min, max), wall seconds (median), the ours / deck wall
    ratio per seed (`bench.spread`) and whether each of `TARGETS` is met (medians); the ratios and
    targets (and the "deck code" entry) only when the rows have the deck's runs.

    `rows` hold {"seed", ["deck": {...},] <experiment>: {...}} as `run_ours` / `run_deck` give them."""
    out = {}
    with_deck = all("deck" in row for row in rows)
    for experiment in experiments:
        accuracy = [row[experiment]["test_accuracy"] for row in rows]
        median = statistics.median(accuracy)
        out[experiment] = {
            "test_accuracy": {"median": median, "min": min(accuracy), "max": max(accuracy)},
            "wall_seconds_median": statistics.median(row[experiment]["wall_seconds"] for row in rows),
        }
        if with_deck:
            ratio = bench.spread([row[experiment]["wall_seconds"] / row["deck"]["wall_seconds"] for row in rows])
            out[experiment]["wall_ratio_ours_over_deck"] = ratio
            out[experiment]["targets"] = {f">= {100 * acc:.1f}% at <= {limit}x": median >= acc and ratio["median"] <= limit
                                          for acc, limit in TARGETS}
    if not with_deck:
        return out
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
    preflight.add_peers_dir(p)
    return p


def check(args: argparse.Namespace) -> tuple[Path | None, str | None]:
    """(peers' folder, folder of the MNIST .gz files the deck's script reads), both None without
    peers, after checking everything the run needs (`benchmarks.preflight`).

    Raises:
        preflight.Missing: an experiment or its data, the peers' folder named, the deck's script
            in it, or the MNIST .gz files.
    """
    preflight.our_data(args.experiments, args.data_dir, "--experiments")
    return preflight.beside_peer_script(args.peers_dir, peer_runs.PEERS["deck-keras"].script, args.data_dir)


def main(argv: list[str] | None = None) -> int:
    """Alternate the deck code and ours per seed; print and write the ratios; render the comparison.
    Exit 2 (one line) when something the run needs is missing, before anything runs."""
    args = parser().parse_args(argv)
    try:
        peers_dir, mnist = check(args)
    except preflight.Missing as error:
        return preflight.refuse(error)
    isa = hardware.isa_class()
    print(f"CPU ISA class: {hardware.describe_isa()}", flush=True)
    runs_dir = args.runs_dir / isa
    if peers_dir is None:
        print(preflight.left_out(args.peers_dir, "the deck's code (seed002_keras_lenet.py), so the wall ratios and "
                                 "targets, are"), flush=True)
    rows = []
    for seed in args.seeds:
        row = {"seed": seed}
        if peers_dir is not None:
            row["deck"] = run_deck(runs_dir, mnist, peers_dir)
            print(f"seed {seed}: deck code {row['deck']['wall_seconds']:.1f} s, {row['deck']['test_accuracy']:.4f}",
                  flush=True)
        for experiment in args.experiments:
            row[experiment] = run_ours(experiment, seed, runs_dir, args.data_dir)
            print(f"seed {seed}: {experiment} {row[experiment]['wall_seconds']:.1f} s, "
                  f"{row[experiment]['test_accuracy']:.4f}", flush=True)
        rows.append(row)
    result = summary(rows, args.experiments)
    print_summary(result)
    path = rundir.next_numbered_path(runs_dir / "bench", "lenet-side", ".json")
    manifest.write_json_atomic(path, {"isa_class": isa, "isa": hardware.describe_isa(), "rows": rows, "summary": result,
                                      "machine": manifest.machine()})
    print(f"results: {path}")
    from lenet_keras import compare  # matplotlib and pandas: after the checks, so a refusal is quick

    deck = [peer_runs.PEERS["deck-keras"].experiment] if peers_dir is not None else []
    index = compare.build([*args.experiments, *deck], runs_dir=runs_dir, reports_dir=args.reports_dir,
                          label=f"lenet-side-by-side-{isa}")
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
