"""The README's MNIST comparison: the deck recipe, the fast recipe, the deck's own Keras code and
the NumPy network on one page, each seed's runs made side by side, then `compare`.

    python -m benchmarks.mnist_comparison --seeds 0 1 2            # what `make figures` runs
    python -m benchmarks.mnist_comparison --seeds 0 1 2 3 4 --numpy-epochs 3   # more seeds, a shorter NumPy run

For each seed in turn: `train mnist_lenet5 --seeds S`, `train mnist_lenet5_fast --seeds S`
(both skip a seed whose config already completed) and one run of the deck's script
`../shared/peers/seed002_keras_lenet.py 20` (`benchmarks.peer_runs`, recorded in
`runs/peer_deck_keras_lenet5/`; skipped while that folder already holds as many completed
20-epoch runs as seeds done so far) - so the recipes alternate and a slow spell of the machine
hits them alike. Then one NumPy run of the deck recipe (`scratch mnist_lenet5`, 20 epochs by
default; skipped when one with that config completed) and `compare mnist_lenet5 mnist_lenet5_fast peer_deck_keras_lenet5 --label mnist`, which
writes `reports/compare-mnist/` (kept in git). Rerunning trains nothing new and re-renders.

The deck's script is read from `--peers-dir DIR` (default ../shared/peers beside the checkout;
make: `PEERS=DIR`). Before anything trains, the data, the script and the MNIST .gz files it reads
are checked (`benchmarks.preflight`): a missing one stops it with one line (exit 2). Without a
peers' folder (`--peers-dir none`, or no ../shared/peers) our recipes and the NumPy run are still
trained and compared, with one line saying that the deck's code was left out.

A development tool of the repository (it runs the seeds' scripts): run it from the repository root.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from benchmarks import peer_runs, preflight
from lenet_keras import config, run_index, rundir, seeds

RECIPES = ("mnist_lenet5", "mnist_lenet5_fast")
"""Our experiments in the comparison; the first is the baseline (the deck recipe)."""
DECK_EPOCHS = 20
"""The deck's 20 epochs (seed 002), for both the deck recipe and the deck's code."""


def completed(folder: Path, epochs: int) -> list[Path]:
    """Completed run directories of `folder` (any engine) whose config has `train.epochs` = `epochs`,
    in `run_index.run_order`."""
    return [r.path for r in run_index.scan(folder)
            if r.status == "completed" and ((r.config or {}).get("train") or {}).get("epochs") == epochs]


def deck_code_run(runs_dir: Path, mnist: str, wanted: int, peers_dir: Path | None = None) -> None:
    """One run of the deck's script of `peers_dir` on the MNIST .gz files of `mnist`, unless
    `runs_dir/peer_deck_keras_lenet5` has `wanted` completed 20-epoch runs.

    Raises:
        RuntimeError, ValueError: the script failed or printed what cannot be parsed (`peer_runs`).
    """
    peer = peer_runs.PEERS["deck-keras"]
    if len(completed(runs_dir / peer.experiment, DECK_EPOCHS)) >= wanted:
        print(f"{peer.experiment}: {wanted} run(s) there already", flush=True)
        return
    print(f"{peer.experiment}: running {peer.script} {DECK_EPOCHS}", flush=True)
    run_dir, _, seconds = peer_runs.run_and_record(peer, sys.executable, [str(DECK_EPOCHS)], runs_dir,
                                                   mnist_dir=mnist, source=Path(mnist), peers_dir=peers_dir)
    print(f"{peer.experiment}: {run_dir} ({seconds:.0f} s)", flush=True)


def numpy_run(runs_dir: Path, data_dir: str | None, epochs: int) -> None:
    """One NumPy-engine run of the deck recipe with `epochs` epochs, unless one with that config completed.

    Raises:
        RuntimeError: the scratch command failed.
    """
    want = rundir.config_block(config.load(Path(RECIPES[0]), [f"train.epochs={epochs}"]))
    done = run_index.completed_run(runs_dir / RECIPES[0], want, engine="numpy")
    if done:
        print(f"NumPy run: {done} has this config already", flush=True)
        return
    command = [sys.executable, "-m", "lenet_keras", "scratch", RECIPES[0], f"train.epochs={epochs}",
               "--runs-dir", str(runs_dir), *(["--data-dir", data_dir] if data_dir else [])]
    if subprocess.run(command).returncode:
        raise RuntimeError("NumPy run failed: " + " ".join(command))


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.mnist_comparison", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of our recipes (default 0 1 2); "
                   "the deck's script is unseeded and runs as many times")
    p.add_argument("--numpy-epochs", type=int, default=20, help="epochs of the NumPy run (default 20, the deck recipe's)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="default runs")
    p.add_argument("--reports-dir", type=Path, default=Path("reports"), help="default reports")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST (default: $LENET_KERAS_DATA, then data/)")
    preflight.add_peers_dir(p)
    return p


def check(args: argparse.Namespace) -> tuple[Path | None, str | None]:
    """(peers' folder, folder of the MNIST .gz files the deck's script reads), both None without
    peers, after checking everything the run needs (`benchmarks.preflight`).

    Raises:
        preflight.Missing: our data, the peers' folder named, the deck's script in it, or the MNIST .gz files.
    """
    preflight.our_data(list(RECIPES), args.data_dir)
    return preflight.beside_peer_script(args.peers_dir, peer_runs.PEERS["deck-keras"].script, args.data_dir)


def main(argv: list[str] | None = None) -> int:
    """Train what is missing (seeds alternating between recipes), then render `reports/compare-mnist/`.
    Exit 2 (one line) when something the run needs is missing, before anything trains."""
    args = parser().parse_args(argv)
    try:
        peers_dir, mnist = check(args)
    except preflight.Missing as error:
        return preflight.refuse(error)
    if peers_dir is None:
        print(preflight.left_out(args.peers_dir, "the deck's own code (seed002_keras_lenet.py) is"), flush=True)
    data_dir = Path(args.data_dir) if args.data_dir else None
    for number, seed in enumerate(args.seeds, 1):
        for experiment in RECIPES:
            seeds.train_seeds(Path(experiment), [], [seed], args.runs_dir, data_dir)
        if peers_dir is not None:
            deck_code_run(args.runs_dir, mnist, number, peers_dir)
    numpy_run(args.runs_dir, args.data_dir, args.numpy_epochs)
    from lenet_keras import compare  # matplotlib and pandas: after the checks, so a refusal is quick

    deck = [peer_runs.PEERS["deck-keras"].experiment] if peers_dir is not None else []
    index = compare.build([*RECIPES, *deck], runs_dir=args.runs_dir, reports_dir=args.reports_dir, label="mnist")
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
