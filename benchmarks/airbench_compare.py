"""Side by side: airbench94 (PyTorch, the peer) and `experiments/cifar_fast.toml` (Keras), same data,
same machine, one invocation.

    python -m benchmarks.airbench_compare --seeds 0 1 2 [--data-dir ../shared/datasets/cifar10-jpeg]
    make cifar-fast-bench SEEDS="0 1 2" [ARGS="--experiment experiments/cifar_fast_muon.toml"]

A development tool of the repository (not part of the installed package): run it from the
repository root. Before anything runs (`benchmarks.preflight`) it checks the image folder, the
peers' folder (`--peers-dir`, default ../shared/peers; make: `PEERS=DIR`) with
`airbench94_cpu.py`, and that `--peer-python` has torch and airbench; a missing one stops it
with one line saying how to get it (exit 2). `--check` checks all but the interpreter and exits
(`make cifar-fast-bench` runs it before it creates .venv-peers).

For each seed, the peer (`../shared/peers/airbench94_cpu.py`, unmodified airbench94 training moved
to the CPU in bfloat16; `make peers-venv` installs torch, pillow and airbench) and then ours
(`python -m lenet_keras train experiments/cifar_fast.toml seed=S`, or the `--experiment` file, on
the same image folder) run
one after the other in fresh processes, alternating. The peer is seeded by replacing its
`torch.manual_seed(0)` with the seed; its file is not changed. Each peer run is also recorded as a
run directory `RUNS_DIR/peer_airbench94/run-NNN/` (engine "airbench94", `benchmarks.peer_runs`;
its path is the peer row's "run_dir"), beside ours in `RUNS_DIR/airbench_compare/`, so `compare`
can draw both.

Printed per seed and as medians (min-max): test accuracy without and with test-time
augmentation (percent), training seconds, wall seconds, and ours/peer ratios, then notes on what
is not like for like. Training seconds count the same work for both: the peer's
`total_time_seconds` (whitening init, training, final TTA evaluation; not its per-epoch
evaluation), ours the sum of `epoch_seconds` less the per-epoch validation
(`speed.validation_seconds` in the manifest), plus the TTA evaluation (whitening init is outside
ours: about 0.1 s). Wall seconds ("wall s incl. decoding") are timed here, the same way for both:
the whole command, from start to exit (Python and library imports, decoding the JPEG folder,
training, evaluation). Ours decodes the folder on every run; the peer caches the decoded images
(a `.pt` file), so each peer run gets a fresh, empty cache directory and decodes too. The peer's
own `wall_s` (which starts after its decoding) is kept as `peer_wall_seconds_after_decoding`, and
our manifest's `wall_seconds` (from inside `train.run`, decoding included, imports partly) as
`manifest_wall_seconds`; neither is compared. Precision differs: the peer trains bfloat16
weights (airbench's `.half()` made bfloat16; no float32 master copy), ours keeps float32 master
weights and computes in bfloat16 (`train.precision = "mixed_bfloat16"`). The epochs of our
experiments were chosen with seeds 0-2 and 100 (cifar_fast.toml's 8 first on test accuracy): seeds
3 and up give test accuracies that chose nothing. Peak RSS is
each process's peak resident memory (MiB). Results, with these notes, go to
`runs/bench/airbench-NNN.json`/`.csv`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import peer_runs, preflight
from lenet_keras import data as data_lib
from lenet_keras import manifest as manifest_lib
from lenet_keras import rundir

REPO = Path(__file__).resolve().parent.parent
DEFAULT_EXPERIMENT = REPO / "experiments" / "cifar_fast.toml"
PEER_SCRIPT = "airbench94_cpu.py"
"""The peer, in the peers' folder (`--peers-dir`; `preflight.DEFAULT_PEERS_DIR` when not given)."""
PEER_REFERENCE = {"tta_accuracy": 89.68, "accuracy": 88.59, "training_seconds": 661.0,
                  "peer_wall_seconds_after_decoding": 706.0}
"""The issue's measurement of the peer on the JPEG copy, 2 cores (percent and seconds; the peer's own
`wall_s`, which excludes decoding the images, so not comparable with the "wall s incl. decoding" column)."""

SEED_WRAPPER = peer_runs.SEED_WRAPPER
"""The seed wrapper (`benchmarks.peer_runs.SEED_WRAPPER`): the peer's `torch.manual_seed(0)` seeded with the run's seed."""

PEER_DTYPES = {"bf16": ("bfloat16", "bfloat16"), "fp32": ("float32", "float32")}
"""The peer's precision argument -> (weights, compute): airbench's `.half()` becomes `.to(dtype)`,
so with bf16 the weights themselves, their gradients and SGD updates are bfloat16."""

OUR_DTYPES = {"float32": ("float32", "float32"), "mixed_bfloat16": ("float32", "bfloat16"),
              "mixed_float16": ("float32", "float16")}
"""Our `train.precision` (a Keras dtype policy) -> (weights, compute): mixed policies keep float32
master weights."""

WALL_COLUMN = "wall s incl. decoding"
EPOCHS_NOTE = ("epochs: train.epochs = 8 in experiments/cifar_fast.toml was first chosen by looking at test accuracy "
               "with seeds 0-2, then re-checked on a held-out split with seed 100 (the file says how; "
               "cifar_fast_muon.toml's too): ours' test accuracy is an unbiased estimate for seeds 3 and up only.")
WALL_NOTE = (f"{WALL_COLUMN}: the whole command for both, timed by this tool from start to exit (imports, decoding "
             "the JPEG folder, training, evaluation); each peer run gets a fresh cache directory, so it decodes as "
             "ours does. The peer's own wall_s (after decoding) is peer_wall_seconds_after_decoding in the "
             ".json/.csv, ours' manifest figure manifest_wall_seconds; neither is compared.")


def parse_peer(output: str) -> dict:
    """Accuracies (percent) and seconds from airbench94's printed table and the peer's last line,
    read by `peer_runs.parse_airbench_output` (the one parser of that output).

    `training_seconds` is the eval row's `total_time_seconds` (whitening init, training and the
    TTA evaluation, as ours are counted here); `wall_seconds_after_decoding` is the peer's own
    `wall_s`: it starts after the images are decoded (into its cache), so it is not the whole
    command's time (`run_peer` measures that).

    Raises:
        ValueError: the output has no table, epoch rows 0, 1, ... or final "eval" row (the peer failed).
    """
    rows, figures = peer_runs.parse_airbench_output(output)
    return {
        "accuracy": 100 * figures["test"]["accuracy"],
        "tta_accuracy": 100 * figures["test"]["tta_accuracy"],
        "training_seconds": figures["total_time_seconds"],
        "wall_seconds_after_decoding": figures.get("wall_seconds_after_decoding"),
        "peak_rss_mib": figures.get("peak_rss_mib"),
        "epochs": len(rows),
    }


def timed_run(command: list[str], who: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run `command` to its exit; its output and its wall seconds, start to exit (the same timer for both sides).

    Raises:
        RuntimeError: the command exited with a non-zero status (`who` and its output's end in the message).
    """
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = round(time.perf_counter() - start, 1)
    if done.returncode:
        raise RuntimeError(f"{who} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done, seconds


def run_peer(python: str, folder: Path, seed: int, precision: str, runs_dir: Path | None = None,
             peers_dir: Path | None = None) -> dict:
    """Run the peer (`PEER_SCRIPT` of `peers_dir`, default ../shared/peers) once with `seed` and a
    fresh image cache; `parse_peer`'s dict plus the command.

    `wall_seconds` is the whole command (decoding included: the cache directory starts empty);
    the peer's own figure is kept as `peer_wall_seconds_after_decoding`. With `runs_dir`, the run
    is recorded as `runs_dir/peer_airbench94/run-NNN/` (`peer_runs.record_peer_output`, the same
    wall seconds), whose path is "run_dir".

    Raises:
        RuntimeError: the peer exited with a non-zero status.
        ValueError: its output has no final "eval" row (or, recorded, cannot be parsed: no run directory is made).
    """
    started = manifest_lib.utc_now()
    with tempfile.TemporaryDirectory(prefix="airbench-cache-") as cache:
        script = Path(peers_dir or peer_runs.PEERS_DIR) / PEER_SCRIPT
        command = [python, "-c", SEED_WRAPPER, str(seed), str(script), str(folder), precision, cache]
        done, seconds = timed_run(command, "peer")
    result = parse_peer(done.stdout)
    weights, compute = PEER_DTYPES[precision]
    result["peer_wall_seconds_after_decoding"] = result.pop("wall_seconds_after_decoding")
    result.update(wall_seconds=seconds, weights=weights, compute=compute,
                  command=" ".join(command[:2] + ["<seed wrapper>"] + command[3:-1] + ["<fresh cache dir>"]))
    if runs_dir is not None:
        peer = peer_runs.PEERS["airbench94"]
        shown = peer_runs.peer_command(peer, python, [str(folder), precision], seed, wrap=True, peers_dir=peers_dir)[1]
        run_dir = peer_runs.record_peer_output(
            peer, done.stdout, Path(runs_dir), args=[str(folder), precision], command=shown + " <fresh cache dir>",
            wall_seconds=seconds, seed=seed, versions=peer_runs.versions_of(python), source=folder,
            started_utc=started, extra={"seed_wrapper": SEED_WRAPPER}, peers_dir=peers_dir)
        result["run_dir"] = str(run_dir)
    return result


def training_seconds(run_dir: Path) -> float:
    """A finished run's training seconds as the side by side counts them (0.1 s): the sum of
    history.csv's `epoch_seconds`, less the manifest's per-epoch `speed.validation_seconds`, plus
    its test-time augmentation's `test.tta_seconds` (the peer's count: training and final TTA)."""
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    with open(Path(run_dir) / "history.csv", newline="") as file:
        epoch_seconds = sum(float(row["epoch_seconds"]) for row in csv.DictReader(file))
    return round(epoch_seconds - manifest["speed"].get("validation_seconds", 0.0)
                 + manifest["test"].get("tta_seconds", 0.0), 1)


def run_ours(folder: Path, seed: int, runs_dir: Path, overrides: list[str], experiment: Path = DEFAULT_EXPERIMENT) -> dict:
    """Train `experiment` (experiments/cifar_fast.toml) once with `seed` on `folder`; figures from its manifest.

    `wall_seconds` is the whole command (decoding included), timed as the peer's is; the manifest's
    own figure is kept as `manifest_wall_seconds`.

    Raises:
        RuntimeError: the training command exited with a non-zero status.
    """
    command = [sys.executable, "-m", "lenet_keras", "train", str(experiment),
               "data.dataset=image_folder", f"data.path={folder}", f"seed={seed}", *overrides,
               "--runs-dir", str(runs_dir)]
    done, seconds = timed_run(command, "ours")
    run_dir = Path(re.search(r"run directory: (.+)", done.stdout).group(1).strip())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    test = manifest["test"]
    weights, compute = OUR_DTYPES[manifest["config"]["train"]["precision"]]
    return {
        "accuracy": 100 * test["accuracy"],
        "tta_accuracy": 100 * test.get("tta_accuracy", float("nan")),
        "training_seconds": training_seconds(run_dir),
        "validation_seconds": manifest["speed"].get("validation_seconds"),
        "wall_seconds": seconds,
        "manifest_wall_seconds": manifest["wall_seconds"],
        "peak_rss_mib": manifest["speed"].get("peak_rss_mib"),
        "epochs": manifest["epochs_completed"],
        "weights": weights,
        "compute": compute,
        "run_dir": str(run_dir),
        "command": " ".join(["python"] + command[1:]),
    }


def _precision_note(peer: set[tuple[str, str]], ours: set[tuple[str, str]]) -> str:
    """The precision sentence for (weights, compute) pairs seen on each side."""
    if not peer:
        peer_text = "the peer (not run here; the reference figures are bf16) trains bfloat16 weights"
    elif peer == {("bfloat16", "bfloat16")}:
        peer_text = ("the peer trains bfloat16 weights (airbench's .half() becomes .to(bfloat16): weights, "
                     "gradients and SGD updates in bfloat16, no float32 master copy)")
    else:
        peer_text = "the peer trains " + " / ".join(f"{w} weights with {c} compute" for w, c in sorted(peer))
    mixed = sorted(c for w, c in ours if w == "float32" and c != "float32")
    if ours == {("float32", c) for c in mixed} and mixed:
        ours_text = (f"ours keeps float32 master weights and computes in {' / '.join(mixed)} "
                     f"(train.precision = {' / '.join('mixed_' + c for c in mixed)})")
    else:
        ours_text = "ours trains " + " / ".join(f"{w} weights with {c} compute" for w, c in sorted(ours))
    return f"precision: {peer_text}; {ours_text}."


def notes(results: dict) -> list[str]:
    """What is not like for like between the sides of `results` (precision, epochs) and how wall seconds count."""
    peer = {(row["weights"], row["compute"]) for row in results["peer"]}
    ours = {(row["weights"], row["compute"]) for row in results["ours"]}
    return [_precision_note(peer, ours), EPOCHS_NOTE, WALL_NOTE]


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _nan(value) -> float:
    return float("nan") if value is None else value


def table(results: dict) -> str:
    """The printed table of `results` (rows per seed, medians, the training-seconds ratio, the notes).

    Also stores the ratio in `results["training_seconds_ratio_ours_over_peer"]`.
    """
    lines = [f"| who | seed | weights / compute | test accuracy % | with TTA % | training s | {WALL_COLUMN} "
             "| peak RSS MiB |", "|---|---|---|---|---|---|---|---|"]
    for who in ("peer", "ours"):
        for row in results[who]:
            lines.append(f"| {who} | {row['seed']} | {row['weights']} / {row['compute']} | {row['accuracy']:.2f} | "
                         f"{row['tta_accuracy']:.2f} | {row['training_seconds']:.1f} | {_nan(row['wall_seconds']):.1f} | "
                         f"{_nan(row.get('peak_rss_mib')):.0f} |")
    for who in ("peer", "ours"):
        rows = results[who]
        if rows:
            lines.append(f"| {who} median (min-max) | {len(rows)} seeds | | {_summary([r['accuracy'] for r in rows])} | "
                         f"{_summary([r['tta_accuracy'] for r in rows])} | "
                         f"{_summary([r['training_seconds'] for r in rows])} | "
                         f"{_summary([r['wall_seconds'] for r in rows])} | "
                         f"{max((r.get('peak_rss_mib') or 0) for r in rows):.0f} (max) |")
    reference = results["peer"] or [PEER_REFERENCE]
    ratio = statistics.median(r["training_seconds"] for r in results["ours"]) / statistics.median(
        r["training_seconds"] for r in reference)
    results["training_seconds_ratio_ours_over_peer"] = round(ratio, 3)
    lines.append(f"\nours/peer training seconds (medians): {ratio:.2f}"
                 + ("" if results["peer"] else " (peer: the issue's reference figures, not run here)"))
    if results["peer"]:
        wall = statistics.median(r["wall_seconds"] for r in results["ours"]) / statistics.median(
            r["wall_seconds"] for r in results["peer"])
        results["wall_seconds_ratio_ours_over_peer"] = round(wall, 3)
        lines.append(f"ours/peer {WALL_COLUMN} (medians): {wall:.2f}")
    lines.append(f"ours: {results.get('experiment', DEFAULT_EXPERIMENT)}")
    lines += ["", "Notes:"] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines)


def compare(seeds: list[int], folder: Path, peer_python: str | None, runs_dir: Path, overrides: list[str],
            precision: str = "bf16", experiment: Path = DEFAULT_EXPERIMENT, peers_dir: Path | None = None) -> dict:
    """Run both for every seed (peer first when `peer_python` is given; its script in `peers_dir`);
    print and return the table.

    Raises:
        RuntimeError, ValueError: from `run_peer` and `run_ours` (a side failed).
    """
    results: dict = {"folder": str(folder), "seeds": seeds, "experiment": str(experiment), "overrides": overrides,
                     "peer": [], "ours": [], "peer_reference": PEER_REFERENCE}
    for seed in seeds:
        if peer_python:
            print(f"seed {seed}: airbench94 (peer) ...", flush=True)
            results["peer"].append({"seed": seed, **run_peer(peer_python, folder, seed, precision, runs_dir, peers_dir)})
            print("  ", {k: results["peer"][-1][k] for k in ("accuracy", "tta_accuracy", "training_seconds")}, flush=True)
        print(f"seed {seed}: {Path(experiment).stem} (ours) ...", flush=True)
        results["ours"].append({"seed": seed, **run_ours(folder, seed, runs_dir / "airbench_compare", overrides,
                                                         experiment)})
        print("  ", {k: results["ours"][-1][k] for k in ("accuracy", "tta_accuracy", "training_seconds")}, flush=True)
    results["notes"] = notes(results)
    results["table"] = table(results)
    print(results["table"], flush=True)
    return results


def write_results(results: dict, out: Path) -> Path:
    """Write `results` to OUT/airbench-NNN.json (the next free number, reserved by
    `rundir.next_numbered_path`; notes included) and .csv (one row a run, the notes in a
    column), each through `manifest.write_text_atomic` (never half-written).

    Raises:
        OSError: OUT cannot be created or written.
    """
    path = rundir.next_numbered_path(out, "airbench", ".json")
    rows = [{"who": who, **row, "notes": " ".join(results["notes"])} for who in ("peer", "ours") for row in results[who]]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
    writer.writeheader()
    writer.writerows(rows)
    manifest_lib.write_text_atomic(path.with_suffix(".csv"), text.getvalue())
    manifest_lib.write_json_atomic(path, results)  # last: the reserved (empty) JSON fills once the CSV is whole
    return path


def parser() -> argparse.ArgumentParser:
    """Arguments of `python -m benchmarks.airbench_compare`."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.airbench_compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds, each run by both (default 0 1 2)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"image folder with train/ and test/ (default: cifar10-jpeg under the data folder: "
                   f"${data_lib.DATA_ENV_VAR} if set, else ./data, data/ of the repository, the Keras cache)")
    p.add_argument("--peer-python", default=str(REPO / ".venv-peers/bin/python"),
                   help="Python with torch, pillow and airbench (make peers-venv); 'none' = only ours")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"), help="the peer's precision (default bf16)")
    p.add_argument("--experiment", type=Path, default=DEFAULT_EXPERIMENT,
                   help="our experiment file (default experiments/cifar_fast.toml)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="our runs go to RUNS_DIR/airbench_compare/, the peer's to RUNS_DIR/peer_airbench94/")
    p.add_argument("--reports-dir", type=Path, default=Path("reports"),
                   help="the comparison report goes to REPORTS_DIR/compare-cifar-fast/ (default reports)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for ours, e.g. train.epochs=8")
    preflight.add_peers_dir(p)
    p.add_argument("--check", action="store_true",
                   help="only check the image folder, the experiment, the peers' folder and its airbench94_cpu.py, "
                   "then exit (0: there; 2: one line on what is missing); the interpreter is checked by the run")
    return p


def check(args: argparse.Namespace) -> tuple[Path, str | None, Path | None]:
    """(image folder, peer interpreter or None, peers' folder) of the command line `args`, each
    checked (`benchmarks.preflight`); the interpreter (torch and airbench) unless `args.check`.

    Raises:
        preflight.Missing: the image folder, the experiment file, the peers' folder or script, or
            the interpreter is missing.
    """
    folder = preflight.image_folder(args.data_dir)
    if not args.experiment.is_file():
        raise preflight.Missing(f"--experiment {args.experiment}: no such file (give an experiment file, e.g. "
                                f"{DEFAULT_EXPERIMENT.relative_to(REPO)})")
    peer_python = None if args.peer_python == "none" else args.peer_python
    if peer_python is None:
        return folder.resolve(), None, None
    ours_only = "; or --peer-python none (make: ARGS=\"--peer-python none\"): ours only, against the reference figures"
    try:
        peers_dir = preflight.peers_dir(args.peers_dir)
        preflight.peer_script(peers_dir, PEER_SCRIPT, args.peers_dir)
        if not args.check:
            preflight.peer_python(peer_python, ("torch", "airbench"))
    except preflight.Missing as error:
        raise preflight.Missing(f"{error}{ours_only}") from None
    return folder.resolve(), peer_python, peers_dir


def render_report(runs_dir: Path, reports_dir: Path) -> Path:
    """`compare` over every run in RUNS_DIR/airbench_compare/ and RUNS_DIR/peer_airbench94/ (those
    present), the peer the baseline: REPORTS_DIR/compare-cifar-fast/index.html, whose tables
    regenerate from the run directories (`python -m lenet_keras compare airbench_compare
    peer_airbench94 --label cifar-fast --baseline peer_airbench94`)."""
    from lenet_keras import compare as compare_report

    names = [name for name in ("peer_airbench94", "airbench_compare") if (Path(runs_dir) / name).is_dir()]
    return compare_report.build(names, runs_dir=runs_dir, reports_dir=reports_dir, label="cifar-fast")


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write runs/bench/airbench-NNN.json and .csv."""
    args = parser().parse_args(argv)
    try:
        folder, peer_python, peers_dir = check(args)
    except preflight.Missing as error:
        return preflight.refuse(error)
    if args.check:
        print(f"ok: {folder}" + (f", {peers_dir / PEER_SCRIPT}" if peer_python else " (ours only)"), flush=True)
        return 0
    results = compare(args.seeds, folder, peer_python, args.runs_dir, args.overrides, args.precision,
                      args.experiment, peers_dir)
    print(f"results: {write_results(results, args.runs_dir / 'bench')}")
    print(f"report: {render_report(args.runs_dir, args.reports_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
