"""The seeds' own training scripts (../shared/peers) recorded as run directories, so that
`compare` and the reports read them like our runs.

    python -m benchmarks.peer_runs deck-keras --runs 3 --epochs 20
    python -m benchmarks.peer_runs torch-lenet5 --runs 3 --epochs 20        # seeds 0 1 2
    python -m benchmarks.peer_runs airbench94 --runs 3 --data-dir ../shared/datasets/cifar10-jpeg

A development tool of the repository (not part of the installed package): run it from the
repository root. The scripts are read from `--peers-dir DIR` (default ../shared/peers beside the
checkout); the folder, the script, the PyTorch interpreter and the data are checked before the
first run (`benchmarks.preflight`: one line and exit 2 when one is missing). Each run is one fresh process of the peer script; its printed output is parsed
(`parse_lenet_output`, `parse_airbench_output`) and recorded with
`lenet_keras.external_run.record_external_run` as `RUNS_DIR/<experiment>/run-NNN/`:

    peer               script                   experiment folder        engine      interpreter
    deck-keras         seed002_keras_lenet.py   peer_deck_keras_lenet5   keras-deck  ours (TensorFlow)
    torch-lenet5       seed000_torch_lenet.py   peer_torch_lenet5        pytorch     --peer-python
    airbench94         airbench94_cpu.py        peer_airbench94          airbench94  --peer-python

`benchmarks.bench_peers` and `benchmarks.airbench_compare` record the peer runs they make into
the same folders. The deck's script sets no seed (its runs record `seed: null`); the PyTorch
scripts call `torch.manual_seed(0)`, which `SEED_WRAPPER` replaces with the run's seed (the
script file is not changed). `seed004_torch_cifar.py` is not recorded: it measures throughput
on synthetic images and reports no accuracy, so it makes no run to compare.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from benchmarks import preflight
from lenet_keras import data as data_lib
from lenet_keras import dataformats
from lenet_keras import external_run
from lenet_keras import manifest as manifest_lib
from lenet_keras.errors import LenetKerasError

REPO = Path(__file__).resolve().parent.parent
PEERS_DIR = preflight.DEFAULT_PEERS_DIR
"""The seeds' scripts when no folder is given (../shared/peers next to the repository; `preflight`)."""

PEER_PYTHON = preflight.PEER_PYTHON
"""The interpreter with PyTorch and airbench (`make peers-venv`)."""

SEED_WRAPPER = (
    "import atexit, resource, runpy, sys, torch\n"
    "atexit.register(lambda: print(f'peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}'))\n"
    "seed = int(sys.argv.pop(1)); real = torch.manual_seed\n"
    "torch.manual_seed = lambda _: real(seed)\n"
    "sys.argv[0] = sys.argv[1]; del sys.argv[1]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)
"""`python -c SEED_WRAPPER SEED SCRIPT ARGS...`: runs SCRIPT with its `torch.manual_seed(...)` calls
seeded with SEED instead, and prints the process's peak resident memory (`peak_rss_mib=`) at exit."""

AIRBENCH_EPOCHS = 9.9
"""airbench==0.1.8's `hyp["opt"]["train_epochs"]`: 10 epoch rows, the last one 0.9 of an epoch."""

MNIST_SPLIT = {"train_images": 48000, "val_images": 12000, "test_images": 10000}


@dataclass(frozen=True)
class Peer:
    """One peer script as recorded: its command-line name, script file, experiment folder, engine,
    whether it needs the PyTorch interpreter, and its own seed (None: it sets none)."""

    name: str
    script: str
    experiment: str
    engine: str
    torch: bool
    own_seed: int | None


PEERS = {
    "deck-keras": Peer("deck-keras", "seed002_keras_lenet.py", "peer_deck_keras_lenet5", "keras-deck", False, None),
    "torch-lenet5": Peer("torch-lenet5", "seed000_torch_lenet.py", "peer_torch_lenet5", "pytorch", True, 0),
    "airbench94": Peer("airbench94", "airbench94_cpu.py", "peer_airbench94", "airbench94", True, 0),
}
BY_SCRIPT = {peer.script: peer for peer in PEERS.values()}


def parse_lenet_output(output: str, script: str = "seed002_keras_lenet.py") -> tuple[list[dict], dict]:
    """The LeNet peers' output (`epoch N S.SSs val_acc=X` lines, then `params=... train_s=...
    test_acc=... [test_loss=...] [threads=...]`) -> (per-epoch rows {epoch_seconds, val_accuracy},
    figures {test: {accuracy[, loss]}, training_seconds None (train_s includes validation), train_s,
    params[, threads]}).

    Raises:
        ValueError: no epoch line, epochs not numbered 1, 2, ... in order, or no final
            `test_acc=` line (names `script` and shows the output's end).
    """
    epochs = re.findall(r"^epoch (\d+) ([\d.]+)s val_acc=([\d.]+)\s*$", output, re.M)
    final = re.search(r"^params=(\d+) train_s=([\d.]+) test_acc=([\d.]+)(?: test_loss=([\d.]+))?"
                      r"(?: threads=(\d+))?\s*$", output, re.M)
    where = f"{script} output"
    if not epochs:
        raise ValueError(f"{where}: no 'epoch N S.SSs val_acc=X' line (no completed epoch):\n{output[-1500:]}")
    if [int(n) for n, _, _ in epochs] != list(range(1, len(epochs) + 1)):
        raise ValueError(f"{where}: epochs numbered {[int(n) for n, _, _ in epochs]}, expected 1, 2, ...")
    if not final:
        raise ValueError(f"{where}: no final 'params=... train_s=... test_acc=...' line (did it finish?):\n"
                         f"{output[-1500:]}")
    rows = [{"epoch_seconds": float(s), "val_accuracy": float(v)} for _, s, v in epochs]
    params, train_s, accuracy, loss, threads = final.groups()
    figures = {"test": {"accuracy": float(accuracy), **({"loss": float(loss)} if loss else {})},
               "training_seconds": None, "train_s": float(train_s), "params": int(params),
               **({"threads": int(threads)} if threads else {})}
    return rows, figures


def airbench_table(output: str) -> list[dict]:
    """The rows of airbench's `print_training_details` table (`| run | epoch | train_loss | ... |`)
    as dicts of stripped strings, keyed by the header's column names."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in output.splitlines()
            if line.strip().startswith("|") and line.count("|") >= 7]
    header = next((row for row in rows if "total_time_seconds" in row), [])
    return [dict(zip(header, row)) for row in rows if row != header] if header else []


def parse_airbench_output(output: str) -> tuple[list[dict], dict]:
    """airbench94's output (its per-epoch table, the final `eval` row, the wrapper's
    `precision= threads= wall_s=` and `peak_rss_mib=` lines) -> (per-epoch rows, figures).

    Rows: {epoch_seconds, loss, accuracy, val_accuracy} from train_loss, train_acc, val_acc; the
    table's `total_time_seconds` is cumulative (whitening init, then training; the per-epoch
    evaluation is not timed), so epoch_seconds are its differences (epoch 0 includes the whitening
    init). Figures: test {accuracy: the last epoch's val_acc (on the test set, no TTA),
    tta_accuracy: the eval row's tta_val_acc}, training_seconds (the last epoch row's total:
    whitening init and training, no evaluation), total_time_seconds (the eval row's: and the TTA
    evaluation), tta_seconds, and precision, threads, wall_seconds_after_decoding,
    peak_rss_mib when printed.

    Raises:
        ValueError: no table header, no epoch row, epoch rows not numbered 0, 1, ... in order, or no
            final `eval` row (the run did not finish).
    """
    table = airbench_table(output)
    epochs = [row for row in table if row.get("epoch", "").isdigit()]
    final = [row for row in table if row.get("epoch") == "eval"]
    if not table or not epochs or not final:
        missing = "table header" if not table else "epoch row" if not epochs else "final 'eval' row"
        raise ValueError(f"airbench94 output: no {missing} (did it finish?):\n{output[-1500:]}")
    if [int(row["epoch"]) for row in epochs] != list(range(len(epochs))):
        raise ValueError(f"airbench94 output: epoch rows {[row['epoch'] for row in epochs]}, expected 0, 1, ... "
                         "(a row is missing: the cumulative times cannot be split into epochs)")
    totals = [float(row["total_time_seconds"]) for row in epochs]
    rows = [{"epoch_seconds": round(total - before, 4), "loss": float(row["train_loss"]),
             "accuracy": float(row["train_acc"]), "val_accuracy": float(row["val_acc"])}
            for row, total, before in zip(epochs, totals, [0.0] + totals[:-1])]
    total = float(final[-1]["total_time_seconds"])
    figures = {"test": {"accuracy": float(epochs[-1]["val_acc"]), "tta_accuracy": float(final[-1]["tta_val_acc"])},
               "training_seconds": totals[-1], "total_time_seconds": total, "tta_seconds": round(total - totals[-1], 4)}
    if wrapper := re.search(r"precision=(\w+) threads=(\d+) wall_s=([\d.]+)", output):
        figures.update(precision=wrapper.group(1), threads=int(wrapper.group(2)),
                       wall_seconds_after_decoding=float(wrapper.group(3)))
    if rss := re.search(r"peak_rss_mib=([\d.]+)", output):
        figures["peak_rss_mib"] = float(rss.group(1))
    return rows, figures


def recipe(peer: Peer, args: list[str], folder: Path | None = None) -> dict:
    """The config of a peer run: what makes two runs the same recipe (script, epochs, batch size,
    precision, data; never the seed), in our experiments' sections and key names (`train.epochs`,
    `train.batch_size`, `train.precision`, `data.dataset`, `model.name`, `optimizer.name`, ...) so
    `compare`'s config table and `--where` line them up with our runs. `args` are the script's
    arguments after the script."""
    if peer.name == "airbench94":
        return {"script": peer.script, "model": {"name": "airbench94 (airbench==0.1.8)"},
                "data": {"dataset": (folder or Path(args[0])).name},
                "train": {"epochs": AIRBENCH_EPOCHS, "batch_size": 1024,
                          "precision": args[1] if len(args) > 1 else "bf16", "tta_level": 2}}
    batch = int(args[1]) if peer.name == "torch-lenet5" and len(args) > 1 else 512
    return {"script": peer.script, "args": list(args), "model": {"name": "LeNet-5 (tanh, average pooling)"},
            "data": {"dataset": "mnist", "validation_split": 0.2},
            "optimizer": {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9},
            "schedule": {"name": "exponential_decay", "decay_steps": 10000, "decay_rate": 0.98},
            "train": {"epochs": int(args[0]) if args else 20, "batch_size": batch, "precision": "float32"}}


def count_images(folder: Path) -> int | None:
    """Files in `folder`/<class>/ (an image folder split), or None when `folder` is missing."""
    if not folder.is_dir():
        return None
    return sum(1 for c in folder.iterdir() if c.is_dir() for f in c.iterdir() if not f.name.startswith("."))


def data_block(peer: Peer, source: Path | None) -> dict:
    """The manifest's `data` block of a peer run: the data, where it came from (relative to the
    working directory) and what the script's validation set is."""
    shown = os.path.relpath(source) if source else None
    if peer.name == "airbench94":
        counts = {"train_images": count_images(source / "train"), "test_images": count_images(source / "test")} \
            if source else {}
        return {"dataset": "image_folder", "description": "CIFAR-10 image folder (train/<class>/, test/<class>/), "
                "decoded by the script", "source": shown, **{k: v for k, v in counts.items() if v is not None},
                "val_images": 0, "validation": "the test set (airbench94 evaluates val_acc on the test images "
                "after every epoch; there is no held-out split)", "validation_is_test": True}
    how = ("Keras validation_split=0.2 takes the last 20% before shuffling" if peer.name == "deck-keras"
           else "n_train = int(0.8 * 60000), the same split as the deck's validation_split=0.2")
    return {"dataset": "mnist", "description": "MNIST (the official IDX files, gz, read from $MNIST_DIR)",
            "source": shown, **MNIST_SPLIT,
            "validation": f"the last 12,000 of the 60,000 official training images ({how})", "validation_is_test": False}


NOTES = {
    "deck-keras": ["history: the script prints val_acc per epoch only (no training loss or accuracy, no val_loss); "
                   "epoch_seconds is its own per-epoch timer (training and validation)",
                   "training_seconds: none apart; the script's train_s (printed.train_s) is model.fit's time, "
                   "all epochs, validation included"],
    "torch-lenet5": ["history: the script prints val_acc per epoch only (no training loss or accuracy, no val_loss); "
                     "epoch_seconds is its own per-epoch timer (training and validation)",
                     "training_seconds: none apart; the script's train_s (printed.train_s) is all epochs, "
                     "validation included"],
    "airbench94": ["history: accuracy and loss are airbench's train_acc and train_loss of the last training batch "
                   "of each epoch (loss with label smoothing 0.2, divided by the batch size), not epoch means; "
                   "val_accuracy is accuracy on the test set without TTA",
                   "epoch_seconds: differences of airbench's cumulative total_time_seconds (training only, the "
                   "per-epoch evaluation untimed; epoch 0 includes the whitening init); the last epoch is 0.9 "
                   "of an epoch (train_epochs 9.9)",
                   "test: accuracy is the last epoch's val_acc (no TTA), tta_accuracy the final eval row "
                   "(tta_level 2); training_seconds is the last epoch row's total_time_seconds (whitening "
                   "init and training; the per-epoch evaluation is untimed, so validation_seconds is null); "
                   "printed.total_time_seconds, the eval row's, adds the TTA evaluation (printed.tta_seconds)"],
}
"""What each peer's history and figures are, recorded in the manifest's `notes`."""

versions_of = lru_cache(maxsize=None)(external_run.interpreter_versions)
"""`external_run.interpreter_versions`, asked once per interpreter."""


def record_peer_output(peer: Peer, output: str, runs_dir: Path, *, args: list[str], command: str,
                       wall_seconds: float, seed: int | None, versions: dict, source: Path | None = None,
                       started_utc: str | None = None, extra: dict | None = None, peers_dir: Path | None = None) -> Path:
    """Record one finished peer run from its printed `output` as RUNS_DIR/<peer.experiment>/run-NNN/.

    `args`: the script's arguments; `command`: as run (relative paths); `wall_seconds`: the whole
    command; `seed`: the seed it ran with (None: unseeded); `versions`: its interpreter's
    (`versions_of`); `source`: the data folder read; `peers_dir`: the scripts' folder (default
    `PEERS_DIR`), for the script's SHA-256. Returns the run directory.

    Raises:
        ValueError: the output cannot be parsed (then no run directory is made).
    """
    if peer.name == "airbench94":
        rows, figures = parse_airbench_output(output)
    else:
        rows, figures = parse_lenet_output(output, peer.script)
    figures = dict(figures)
    test, training_seconds, threads = figures.pop("test"), figures.pop("training_seconds"), figures.pop("threads", None)
    script = Path(peers_dir or PEERS_DIR) / peer.script
    script_block = {"file": peer.script, **({"sha256": dataformats.sha256_of_file(script)} if script.is_file() else {})}
    return external_run.record_external_run(
        runs_dir, peer.experiment, engine=peer.engine, config=recipe(peer, args, source), seed=seed,
        command=command, history=rows, test=test, wall_seconds=wall_seconds, versions=versions,
        data=data_block(peer, source), training_seconds=training_seconds, notes=NOTES[peer.name],
        started_utc=started_utc, machine_extra={"threads": threads} if threads else None,
        extra={"script": script_block, "printed": figures, **(extra or {})})


def peer_command(peer: Peer, python: str, args: list[str], seed: int | None,
                 wrap: bool | None = None, peers_dir: Path | None = None) -> tuple[list[str], str]:
    """(argv, the command as shown) for one run: the script itself, or through `SEED_WRAPPER` when
    `wrap` (default: when `seed` is given and differs from the script's own seed). The shown
    command has paths relative to the working directory and `<seed wrapper>` for the wrapper's code.
    `peers_dir`: the scripts' folder (default `PEERS_DIR`)."""
    script = str(Path(peers_dir or PEERS_DIR) / peer.script)
    if not (wrap if wrap is not None else seed is not None and seed != peer.own_seed):
        argv = [python, script, *args]
        return argv, external_run.relative_command(argv)
    argv = [python, "-c", SEED_WRAPPER, str(seed), script, *args]
    shown = external_run.relative_command([python, "-c", "SEED_WRAPPER", str(seed), script, *args])
    return argv, shown.replace("SEED_WRAPPER", "<seed wrapper>", 1)


def run_and_record(peer: Peer, python: str, args: list[str], runs_dir: Path, *, seed: int | None = None,
                   mnist_dir: str | None = None, source: Path | None = None,
                   peers_dir: Path | None = None) -> tuple[Path, str, float]:
    """Run `peer`'s script once (a fresh process; airbench94 with a fresh, empty image cache given as
    its last argument) and record it. `seed`: None runs the script as it is (its own seed);
    `peers_dir`: the scripts' folder (default `PEERS_DIR`).
    Returns (run directory, the script's stdout, wall seconds of the whole command).

    Raises:
        RuntimeError: the script exited with a non-zero status (the end of its output in the message).
        ValueError: its output cannot be parsed (no run directory is made).
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **({"MNIST_DIR": mnist_dir} if mnist_dir else {})}
    argv, shown = peer_command(peer, python, args, seed, peers_dir=peers_dir)
    if mnist_dir:
        shown = f"MNIST_DIR={os.path.relpath(mnist_dir)} {shown}"
    started, start = manifest_lib.utc_now(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="peer-cache-") as cache:
        cached = argv + [cache] if peer.name == "airbench94" else argv
        done = subprocess.run(cached, capture_output=True, text=True, env=env)
    seconds = round(time.perf_counter() - start, 3)
    if done.returncode:
        raise RuntimeError(f"peer {peer.script} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n"
                           f"{done.stderr[-3000:]}")
    shown += " <fresh cache dir>" if peer.name == "airbench94" else ""
    run_dir = record_peer_output(
        peer, done.stdout, runs_dir, args=args, command=shown, wall_seconds=seconds,
        seed=peer.own_seed if seed is None else seed, versions=versions_of(python), source=source,
        started_utc=started, extra={"seed_wrapper": SEED_WRAPPER} if "<seed wrapper>" in shown else None,
        peers_dir=peers_dir)
    return run_dir, done.stdout, seconds


def parser() -> argparse.ArgumentParser:
    """Arguments of `python -m benchmarks.peer_runs`."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.peer_runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("peer", choices=sorted(PEERS), help="which peer script to run")
    p.add_argument("--runs", type=int, default=1, help="how many runs (default 1)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="PyTorch peers: the seeds, one run each (default 0 .. RUNS-1); the deck's script is unseeded")
    p.add_argument("--epochs", type=int, default=None, help="LeNet peers: epochs (default 20); airbench94: fixed 9.9")
    p.add_argument("--batch-size", type=int, default=None, help="torch-lenet5 only: batch size (default 512)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="airbench94 only (default bf16)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="runs go to RUNS_DIR/<experiment>/ (default runs)")
    p.add_argument("--data-dir", default=None, help="LeNet peers: a folder holding mnist/ or the MNIST .gz files "
                   f"(default: ${data_lib.DATA_ENV_VAR}, then data/); airbench94: the image folder with train/ "
                   "and test/ (default: cifar10-jpeg under the data folder)")
    p.add_argument("--peer-python", default=str(PEER_PYTHON),
                   help="PyTorch peers: the interpreter with torch (and airbench) (default .venv-peers/bin/python)")
    preflight.add_peers_dir(p)
    return p


def plan(args: argparse.Namespace) -> tuple[Peer, str, list[str], list[int | None], dict]:
    """(peer, interpreter, script arguments, one seed per run, keywords of `run_and_record`: data
    and the peers' folder) of the command line `args`, everything the runs need checked
    (`benchmarks.preflight`).

    Raises:
        ValueError: an option that does not apply to the peer.
        preflight.Missing: the peers' folder, the script, the interpreter (with torch) or the data.
    """
    peer = PEERS[args.peer]
    if args.seeds is not None and peer.own_seed is None:
        raise ValueError(f"{peer.name}: {peer.script} sets no seed; --seeds does not apply (give --runs)")
    if peer.name == "airbench94" and args.epochs is not None:
        raise ValueError("airbench94: --epochs does not apply (airbench94 trains 9.9 epochs)")
    if args.batch_size is not None and peer.name != "torch-lenet5":
        raise ValueError(f"{peer.name}: --batch-size applies to torch-lenet5 only")
    seeds = args.seeds if args.seeds is not None else (
        [None] * args.runs if peer.own_seed is None else list(range(args.runs)))
    peers_dir = preflight.peers_dir(args.peers_dir)
    preflight.peer_script(peers_dir, peer.script, args.peers_dir)
    python = args.peer_python if peer.torch else sys.executable
    if peer.torch:
        preflight.peer_python(python, ("torch", "airbench") if peer.name == "airbench94" else ("torch",))
    if peer.name == "airbench94":
        folder = preflight.image_folder(Path(args.data_dir) if args.data_dir else None).resolve()
        return peer, python, [str(folder), args.precision], seeds, {"source": folder, "peers_dir": peers_dir}
    mnist = preflight.mnist_gz(args.data_dir)
    epochs = [str(args.epochs if args.epochs is not None else 20)]
    extra = [str(args.batch_size)] if args.batch_size is not None else []
    return peer, python, epochs + extra, seeds, {"mnist_dir": mnist, "source": Path(mnist), "peers_dir": peers_dir}


def main(argv: list[str] | None = None) -> int:
    """Command line: run the peer once per seed (or `--runs` times) and record each run; prints
    progress per run. Exit 2 on a usage error, 1 when a run fails."""
    args = parser().parse_args(argv)
    try:
        peer, python, script_args, seeds, data = plan(args)
    except (ValueError, LenetKerasError, preflight.Missing) as error:
        return preflight.refuse(error)
    for number, seed in enumerate(seeds, 1):
        print(f"[{number}/{len(seeds)}] {peer.name} ({peer.script} {' '.join(script_args)}"
              f"{'' if seed is None else f', seed {seed}'}) ...", flush=True)
        try:
            run_dir, _, seconds = run_and_record(peer, python, script_args, args.runs_dir, seed=seed, **data)
        except (RuntimeError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        manifest = manifest_lib.read_json(run_dir / "manifest.json")
        print(f"[{number}/{len(seeds)}] {run_dir}: test accuracy {manifest['test']['accuracy']:.4f}, "
              f"{manifest['epochs_completed']} epochs, training {manifest.get('training_seconds') or float('nan'):.1f} s, "
              f"wall {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
