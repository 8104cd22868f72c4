"""`bench` against the seeds' own scripts: our measurements (`lenet_keras.bench`) alternating with the peers'.

    python -m benchmarks.bench_peers --repeats 3                          # from the repository root
    python -m benchmarks.bench_peers --workloads lenet5 cifar_cnn --repeats 3 --data-dir ../shared/datasets
    make bench ARGS="--peers --repeats 3"                                 # the same through make

Takes `python -m lenet_keras bench`'s options (our side is exactly that command's, through
`lenet_keras.bench.run_bench`) plus `--peers-dir`, `--peer-python` and `--peer-epochs`. Each
repeat runs ours and the peers of `--peers-dir` (default `../shared/peers`; make: `PEERS=DIR`)
one after another (A B A B ...): `seed002_keras_lenet.py`
(the deck's Keras code) and `seed000_torch_lenet.py` against our LeNet-5 epoch time,
`seed004_torch_cifar.py` (fp32 and bf16 autocast) against our CIFAR CNN's in-memory images/s.
Ratios are ours / peer in speed (>1: ours faster), printed as min / median / max over the
repeats (the median of the ratios). PyTorch peers run with `--peer-python` (default
`.venv-peers/bin/python`; `make peers-venv` creates it); without it they are skipped with a note.

Before anything is measured (`check`, through `benchmarks.preflight`): our workloads without
their data are skipped with a line each (as `bench` does); the peers' folder and every script
the remaining runs need, the PyTorch interpreter's torch (when it exists) and the MNIST .gz
files of the LeNet peers must be there, else one line says what is missing and how to get it
(exit 2).

Results go, with ours, to `runs/bench/bench-NNN.json` ("peers", "ratios") and `.csv` (side = peer).
Every LeNet peer run is also recorded as a run directory (`benchmarks.peer_runs`), under
`--runs-dir` (default: the folder above `--out-dir`, i.e. `runs/`): `seed002_keras_lenet.py` in
`peer_deck_keras_lenet5/`, `seed000_torch_lenet.py` in `peer_torch_lenet5/` (its "run_dir" in the
peer's figures), so `compare` can draw them. `seed004_torch_cifar.py` is not recorded: it times
synthetic images and prints no accuracy, so there is no run to compare (only its images/s).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks import peer_runs, preflight
from lenet_keras import bench
from lenet_keras.errors import LenetKerasError

REPO = Path(__file__).resolve().parent.parent
PEERS_DIR = peer_runs.PEERS_DIR
"""The seeds' scripts when no `--peers-dir` is given (../shared/peers next to the repository)."""


def run_peer(python: str, script: str, args: list[str], mnist_dir: str | None, runs_dir: Path | None = None,
             peers_dir: Path | None = None) -> dict:
    """Run a peer script of `peers_dir` (default `PEERS_DIR`); parse its epoch times (median of
    epochs 2+) or its images/s.

    With `runs_dir`, a LeNet peer (`peer_runs.BY_SCRIPT`) is recorded as a run directory under
    it (`peer_runs.run_and_record`; the script's own seed), whose path is the figures' "run_dir".

    Raises:
        RuntimeError: the script exited with a non-zero status (the end of its stderr in the message).
        ValueError: a recorded peer's output cannot be parsed (no run directory is made).
    """
    if runs_dir is not None and script in peer_runs.BY_SCRIPT:
        run_dir, output, _ = peer_runs.run_and_record(peer_runs.BY_SCRIPT[script], python, args, Path(runs_dir),
                                                      mnist_dir=mnist_dir, source=Path(mnist_dir) if mnist_dir else None,
                                                      peers_dir=peers_dir)
        return parse_peer_output(output, script, args) | {"run_dir": str(run_dir)}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if mnist_dir:
        env["MNIST_DIR"] = mnist_dir
    done = subprocess.run([python, str(Path(peers_dir or PEERS_DIR) / script), *args], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        raise RuntimeError(f"peer {script} failed:\n{done.stderr[-3000:]}")
    return parse_peer_output(done.stdout, script, args)


def parse_peer_output(output: str, script: str, args: list[str]) -> dict:
    """A peer's figures from its printed output: `epoch N S.SSs` lines (median of epochs 2+, or of
    all when there is one), `images_per_s=`, `test_acc=`; each key only when printed."""
    epochs = [float(s) for s in re.findall(r"^epoch \d+ ([\d.]+)s", output, re.M)]
    found = re.search(r"images_per_s=([\d.]+)", output)
    accuracy = re.search(r"test_acc=([\d.]+)", output)
    return {"peer": script, "args": args,
            **({"epoch_seconds": statistics.median(epochs[1:] or epochs), "epoch_seconds_all": epochs} if epochs else {}),
            **({"images_per_s": float(found.group(1))} if found else {}),
            **({"test_accuracy": float(accuracy.group(1))} if accuracy else {})}


def peer_jobs(workload: str, precision: str, peer_epochs: int, peer_python: str, torch_ok: bool) -> list[tuple]:
    """The peer runs that go with one of our measurements: (name, python, script, args, "epoch" | "images")."""
    jobs = []
    if workload == "lenet5" and precision == "fp32":
        jobs.append(("deck keras lenet5", sys.executable, "seed002_keras_lenet.py", [str(peer_epochs)], "epoch"))
        if torch_ok:
            jobs.append(("torch lenet5", peer_python, "seed000_torch_lenet.py", [str(peer_epochs)], "epoch"))
    if workload == "cifar_cnn" and torch_ok:
        jobs.append((f"torch cifar {precision}", peer_python, "seed004_torch_cifar.py", ["10", "128", precision], "images"))
    return jobs


def speed_ratio(ours: dict, peer: dict, kind: str) -> float:
    """Ours / peer in speed (>1: ours faster): epoch seconds peer / ours ("epoch"), or our in-memory
    images/s / the peer's ("images")."""
    if kind == "epoch":
        return peer["epoch_seconds"] / ours["epoch_seconds"]
    return ours["compute_images_per_s"] / peer["images_per_s"]


class PeerRuns:
    """`lenet_keras.bench.run_bench`'s companion: the peers after each of our measurements.

    `runs` collects the peers' figures (with "repeat" and "name"), `ratios()` the ours / peer
    speed ratios as `bench.spread`s, one per (our workload and precision, peer). `mnist_dir`: the
    folder of the MNIST .gz files the LeNet peers read (`preflight.mnist_gz`); `peers_dir`: the
    scripts' folder (default `PEERS_DIR`). With `runs_dir`, the LeNet peers are recorded as run
    directories under it (`run_peer`)."""

    def __init__(self, peer_python: str, peer_epochs: int, mnist_dir: str | None, run=run_peer,
                 runs_dir: Path | None = None, peers_dir: Path | None = None):
        self.peer_python, self.peer_epochs, self.run, self.runs_dir = peer_python, peer_epochs, run, runs_dir
        self.peers_dir = peers_dir
        self.torch_ok = Path(peer_python).exists()
        self.mnist_gz = mnist_dir
        self.note = None if self.torch_ok else f"note: {peer_python} not found (make peers-venv): PyTorch peers skipped"
        self.runs: list[dict] = []
        self.values: dict[str, list[float]] = {}

    def after(self, repeat: int, workload: str, precision: str, result: dict) -> None:
        """Run the peers that go with our `result` (`peer_jobs`); record and print each one's speed ratio."""
        for name, python, script, args, kind in peer_jobs(workload, precision, self.peer_epochs, self.peer_python,
                                                          self.torch_ok):
            peer = self.run(python, script, args, self.mnist_gz, runs_dir=self.runs_dir, peers_dir=self.peers_dir) | {
                "repeat": repeat, "name": name}
            self.runs.append(peer)
            ratio = speed_ratio(result, peer, kind)
            self.values.setdefault(f"ours {workload} {precision} vs {name}", []).append(ratio)
            print(f"[{repeat}] {name}: {peer.get('epoch_seconds', peer.get('images_per_s'))} "
                  f"({'s per epoch' if kind == 'epoch' else 'images/s'}); speed ratio ours/peer {ratio:.2f}", flush=True)

    def ratios(self) -> dict:
        """{"ours <workload> <precision> vs <peer>": `bench.spread` of the ratios over the repeats}."""
        return {key: bench.spread(values) for key, values in self.values.items()}


def parser():
    """`python -m lenet_keras bench`'s parser plus the peer options."""
    p = bench.parser()
    p.prog = "python -m benchmarks.bench_peers"
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--peer-python", default=str(REPO / ".venv-peers" / "bin" / "python"),
                   help="Python with PyTorch for the PyTorch peers (default: .venv-peers/bin/python)")
    p.add_argument("--peer-epochs", type=int, default=3, help="epochs of the LeNet peers (default 3; epochs 2+ are timed)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="the LeNet peers' runs are recorded in RUNS_DIR/peer_deck_keras_lenet5/ and "
                   "RUNS_DIR/peer_torch_lenet5/ (default: the folder above --out-dir, e.g. runs)")
    preflight.add_peers_dir(p)
    return p


def check(args) -> tuple[list[str], dict, PeerRuns]:
    """Everything the command line `args` needs, before anything runs: (our workloads with their
    data, {skipped workload: why}, the companion that runs the peers).

    Raises:
        LenetKerasError: no workload has its data (`bench.checked_workloads`).
        preflight.Missing: the peers' folder, a script the runs need, torch in an existing
            `--peer-python`, or the MNIST .gz files of the LeNet peers.
    """
    workloads, skipped = bench.checked_workloads(args.workloads, args.data_dir, args.out_dir)
    folder = preflight.peers_dir(args.peers_dir)
    torch_ok = Path(args.peer_python).exists()  # absent: the PyTorch peers are skipped with a note
    if torch_ok:
        preflight.peer_python(args.peer_python)
    jobs = [job for workload in workloads for precision in args.precisions
            for job in peer_jobs(workload, precision, args.peer_epochs, args.peer_python, torch_ok)]
    for script in dict.fromkeys(job[2] for job in jobs):
        preflight.peer_script(folder, script, args.peers_dir)
    mnist = preflight.mnist_gz(args.data_dir) if any(job[4] == "epoch" for job in jobs) else None
    runs_dir = args.runs_dir if args.runs_dir is not None else args.out_dir.parent
    return workloads, skipped, PeerRuns(args.peer_python, args.peer_epochs, mnist, runs_dir=runs_dir, peers_dir=folder)


def main(argv: list[str] | None = None) -> int:
    """Command line: our benchmark with the peers between our measurements; writes bench-NNN.json/.csv.
    Exit 2 (one line) when something it needs is missing, before anything runs; 1 when a run fails."""
    args = parser().parse_args(argv)
    if args.measure:  # one of our measurements printed as JSON, as `python -m lenet_keras.bench --measure`
        print(json.dumps(bench.measure(args.measure, args.precision, args.data_dir)))
        return 0
    try:
        workloads, skipped, companion = check(args)
    except (LenetKerasError, preflight.Missing) as error:
        return preflight.refuse(error)
    try:
        bench.run_bench(args.precisions, workloads, args.repeats, args.data_dir, args.out_dir, companion=companion,
                        skipped=skipped)
    except RuntimeError as error:  # a measurement or a peer failed: the end of its output in the message
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
