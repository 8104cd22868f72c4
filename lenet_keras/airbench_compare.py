"""Side by side: airbench94 (PyTorch, the peer) and `experiments/cifar_fast.toml` (Keras), same data,
same machine, one invocation.

    python -m lenet_keras.airbench_compare --seeds 0 1 2 [--data-dir ../shared/datasets/cifar10-jpeg]
    make cifar-fast-bench SEEDS="0 1 2"

For each seed, the peer (`../shared/peers/airbench94_cpu.py`, unmodified airbench94 training moved
to the CPU in bfloat16; `make peers-venv` installs torch, pillow and airbench) and then ours
(`python -m lenet_keras train experiments/cifar_fast.toml seed=S` on the same image folder) run
one after the other in fresh processes, alternating. The peer is seeded by replacing its
`torch.manual_seed(0)` with the seed; its file is not changed.

Printed per seed and as medians (min-max): test accuracy without and with test-time
augmentation (percent), training seconds, wall seconds, and ours/peer ratios. Training seconds
count the same work for both: the peer's `total_time_seconds` (whitening init, training, final
TTA evaluation; not its per-epoch evaluation), ours the sum of `epoch_seconds` less the
per-epoch validation (`speed.validation_seconds` in the manifest), plus the TTA evaluation
(whitening init is outside ours: about 0.1 s). Wall seconds are whole commands, data loading
included; peak RSS is each process's peak resident memory (MiB). Results go to `runs/bench/airbench-NNN.json`/`.csv`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEER = REPO.parent / "shared" / "peers" / "airbench94_cpu.py"
PEER_REFERENCE = {"tta_accuracy": 89.68, "accuracy": 88.59, "training_seconds": 661.0, "wall_seconds": 706.0}
"""The issue's measurement of the peer on the JPEG copy, 2 cores (percent and seconds)."""

SEED_WRAPPER = (
    "import atexit, resource, runpy, sys, torch\n"
    "atexit.register(lambda: print(f'peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}'))\n"
    "seed = int(sys.argv.pop(1)); real = torch.manual_seed\n"
    "torch.manual_seed = lambda _: real(seed)\n"
    "sys.argv[0] = sys.argv[1]; del sys.argv[1]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def parse_peer(output: str) -> dict:
    """Accuracies (percent) and seconds from airbench94's printed table and the peer's last line.

    Raises:
        ValueError: the output has no final "eval" row (the peer failed).
    """
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in output.splitlines()
            if line.strip().startswith("|") and line.count("|") >= 7]
    header = next(row for row in rows if "tta_val_acc" in row)
    table = [dict(zip(header, row)) for row in rows if row != header]
    final = [row for row in table if row.get("epoch") == "eval"]
    epochs = [row for row in table if row.get("epoch", "").isdigit()]
    if not final or not epochs:
        raise ValueError("no final 'eval' row in the peer's output:\n" + output[-2000:])
    wall = re.search(r"wall_s=([0-9.]+)", output)
    rss = re.search(r"peak_rss_mib=([0-9.]+)", output)
    return {
        "accuracy": 100 * float(epochs[-1]["val_acc"]),
        "tta_accuracy": 100 * float(final[-1]["tta_val_acc"]),
        "training_seconds": float(final[-1]["total_time_seconds"]),
        "wall_seconds": float(wall.group(1)) if wall else None,
        "peak_rss_mib": float(rss.group(1)) if rss else None,
        "epochs": len(epochs),
    }


def run_peer(python: str, folder: Path, seed: int, precision: str) -> dict:
    """Run the peer once with `seed`; returns `parse_peer`'s dict plus the command."""
    command = [python, "-c", SEED_WRAPPER, str(seed), str(PEER), str(folder), precision]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"peer failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result = parse_peer(done.stdout)
    result.update(command=" ".join(command[:2] + ["<seed wrapper>"] + command[3:]),
                  measured_wall_seconds=round(time.perf_counter() - start, 1))
    return result


def run_ours(folder: Path, seed: int, runs_dir: Path, overrides: list[str]) -> dict:
    """Train experiments/cifar_fast.toml once with `seed` on `folder`; figures from its manifest."""
    command = [sys.executable, "-m", "lenet_keras", "train", str(REPO / "experiments/cifar_fast.toml"),
               "data.dataset=image_folder", f"data.path={folder}", f"seed={seed}", *overrides,
               "--runs-dir", str(runs_dir)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ours failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    run_dir = Path(re.search(r"run directory: (.+)", done.stdout).group(1).strip())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    import csv

    with open(run_dir / "history.csv", newline="") as file:
        epoch_seconds = sum(float(row["epoch_seconds"]) for row in csv.DictReader(file))
    test = manifest["test"]
    return {
        "accuracy": 100 * test["accuracy"],
        "tta_accuracy": 100 * test.get("tta_accuracy", float("nan")),
        "training_seconds": round(epoch_seconds - manifest["speed"].get("validation_seconds", 0.0)
                                  + test.get("tta_seconds", 0.0), 1),
        "validation_seconds": manifest["speed"].get("validation_seconds"),
        "wall_seconds": manifest["wall_seconds"],
        "peak_rss_mib": manifest["speed"].get("peak_rss_mib"),
        "epochs": manifest["epochs_completed"],
        "run_dir": str(run_dir),
        "command": " ".join(["python"] + command[1:]),
        "measured_wall_seconds": round(time.perf_counter() - start, 1),
    }


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def compare(seeds: list[int], folder: Path, peer_python: str | None, runs_dir: Path, overrides: list[str],
            precision: str = "bf16") -> dict:
    """Run both for every seed (peer first when `peer_python` is given); print and return the table."""
    results: dict = {"folder": str(folder), "seeds": seeds, "overrides": overrides, "peer": [], "ours": [],
                     "peer_reference": PEER_REFERENCE}
    for seed in seeds:
        if peer_python:
            print(f"seed {seed}: airbench94 (peer) ...", flush=True)
            results["peer"].append({"seed": seed, **run_peer(peer_python, folder, seed, precision)})
            print("  ", {k: results["peer"][-1][k] for k in ("accuracy", "tta_accuracy", "training_seconds")}, flush=True)
        print(f"seed {seed}: cifar_fast (ours) ...", flush=True)
        results["ours"].append({"seed": seed, **run_ours(folder, seed, runs_dir / "airbench_compare", overrides)})
        print("  ", {k: results["ours"][-1][k] for k in ("accuracy", "tta_accuracy", "training_seconds")}, flush=True)
    lines = ["| who | seed | test accuracy % | with TTA % | training s | wall s | peak RSS MiB |",
             "|---|---|---|---|---|---|---|"]
    for who in ("peer", "ours"):
        for row in results[who]:
            lines.append(f"| {who} | {row['seed']} | {row['accuracy']:.2f} | {row['tta_accuracy']:.2f} | "
                         f"{row['training_seconds']:.1f} | {row['wall_seconds'] or float('nan'):.1f} | "
                         f"{row.get('peak_rss_mib') or float('nan'):.0f} |")
    for who in ("peer", "ours"):
        rows = results[who]
        if rows:
            lines.append(f"| {who} median (min-max) | {len(rows)} seeds | {_summary([r['accuracy'] for r in rows])} | "
                         f"{_summary([r['tta_accuracy'] for r in rows])} | "
                         f"{_summary([r['training_seconds'] for r in rows])} | "
                         f"{_summary([r['wall_seconds'] or 0 for r in rows])} | "
                         f"{max((r.get('peak_rss_mib') or 0) for r in rows):.0f} (max) |")
    peer = results["peer"] or None
    reference = [PEER_REFERENCE] if peer is None else peer
    ratio = statistics.median(r["training_seconds"] for r in results["ours"]) / statistics.median(
        r["training_seconds"] for r in reference)
    results["training_seconds_ratio_ours_over_peer"] = round(ratio, 3)
    lines.append(f"\nours/peer training seconds (medians): {ratio:.2f}"
                 + ("" if peer else " (peer: the issue's reference figures, not run here)"))
    results["table"] = "\n".join(lines)
    print(results["table"], flush=True)
    return results


def parser() -> argparse.ArgumentParser:
    """Arguments of `python -m lenet_keras.airbench_compare`."""
    p = argparse.ArgumentParser(prog="python -m lenet_keras.airbench_compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds, each run by both (default 0 1 2)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="image folder with train/ and test/ (default: cifar10-jpeg under $LENET_KERAS_DATA)")
    p.add_argument("--peer-python", default=str(REPO / ".venv-peers/bin/python"),
                   help="Python with torch, pillow and airbench (make peers-venv); 'none' = only ours")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"), help="the peer's precision (default bf16)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="our runs go to RUNS_DIR/airbench_compare/")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for ours, e.g. train.epochs=8")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write runs/bench/airbench-NNN.json and .csv."""
    args = parser().parse_args(argv)
    folder = args.data_dir or Path(os.environ.get("LENET_KERAS_DATA", "data")) / "cifar10-jpeg"
    if not (folder / "train").is_dir():
        print(f"error: {folder} has no train/ folder (give --data-dir IMAGE_FOLDER)", file=sys.stderr)
        return 2
    peer_python = None if args.peer_python == "none" else args.peer_python
    if peer_python and not Path(peer_python).exists():
        print(f"error: {peer_python} not found: run `make peers-venv`, or --peer-python none", file=sys.stderr)
        return 2
    results = compare(args.seeds, folder.resolve(), peer_python, args.runs_dir, args.overrides, args.precision)
    out = args.runs_dir / "bench"
    out.mkdir(parents=True, exist_ok=True)
    number = 1 + max((int(p.stem.split("-")[1]) for p in out.glob("airbench-*.json")), default=0)
    path = out / f"airbench-{number:03d}.json"
    path.write_text(json.dumps(results, indent=2))
    import pandas as pd

    pd.DataFrame([{"who": who, **row} for who in ("peer", "ours") for row in results[who]]).to_csv(
        path.with_suffix(".csv"), index=False)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
