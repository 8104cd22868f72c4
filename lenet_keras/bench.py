"""Benchmark: how fast LeNet-5/MNIST and the CIFAR CNN train and predict here, optionally against the seeds' code.

    python -m lenet_keras bench                         # our two workloads, fp32 and bf16
    python -m lenet_keras bench --peers --repeats 3     # alternating with the peer scripts
    make bench [ARGS="--peers"]

Each measurement runs in a fresh Python process (so thread pools, the mixed-precision policy
and peak memory are its own) and reports, for one workload and precision:

- `train_images_per_s`: training images/s through our real `tf.data` pipeline (augmentation
  included), timed from the 3rd step on (after tracing);
- `compute_images_per_s`: the same steps on one batch held in memory (the model's compute
  alone; the peer CIFAR script times exactly this), and `input_wait_fraction` =
  1 - pipeline step time / in-memory step time, floored at 0: the share of a step spent
  waiting for input;
- `epoch_seconds`: LeNet-5: the wall time of a whole second epoch (training + validation,
  as the deck's script prints it); CIFAR CNN: projected from the measured rates for 45,000
  training and 5,000 validation images (marked `epoch_seconds_projected`);
- `inference_images_per_s`: `model.predict` on the validation set (second pass);
- `train_gflop_per_s`: training FLOPs per image x training images/s, with training FLOPs =
  3 x the forward FLOPs counted by TensorFlow's profiler on the inference graph (backward
  costs about twice the forward); `peak_fraction` divides it by a 4096x4096 matmul's GFLOP/s
  measured in the same process at the same precision;
- `peak_rss_mib`: the process's peak resident memory, MiB.

With `--peers`, each repeat runs ours and the peers one after another (A B A B ...):
`seed002_keras_lenet.py` (the deck's Keras code) and `seed000_torch_lenet.py` against our
LeNet-5 epoch time, `seed004_torch_cifar.py` (fp32 and bf16 autocast) against our CIFAR CNN's
in-memory images/s. Ratios are ours / peer in speed (>1: ours faster), printed as
min / median / max over the repeats. PyTorch peers run with `--peer-python` (default
`.venv-peers/bin/python`; `make peers-venv` creates it).

Results go to `runs/bench/bench-NNN.json` (everything) and `.csv` (one row per measurement).
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
PEERS_DIR = REPO.parent / "shared" / "peers"
WORKLOADS = {
    "lenet5": {"experiment": "experiments/mnist_lenet5.toml", "overrides": []},
    "cifar_cnn": {
        "experiment": "experiments/cifar_cnn_notebook.toml",
        "overrides": ["data.dataset=image_folder", "data.path=cifar10-jpeg", "data.train_subset=1664",
                      "data.test_subset=128", "train.batch_size=128"],
    },
    "cifar_fast": {
        "experiment": "experiments/cifar_fast.toml",
        "overrides": ["data.dataset=image_folder", "data.path=cifar10-jpeg", "data.train_subset=7168",
                      "data.test_subset=1024"],
    },
}
"""What each workload trains: LeNet-5 with the deck's recipe (batch 512) on all of MNIST, and the
CIFAR notebook's recipe (AdamW, clipping, AutoAugment, MixUp; batch 128 as the peer) on the first
1,664 images of the JPEG copy of CIFAR-10 (enough for 11 timed steps), and airbench94's recipe
(`experiments/cifar_fast.toml`, batch 1024) on the first 7,168 (4 timed steps)."""

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}
"""Bench precision names -> `train.precision` (Keras dtype policies)."""

CIFAR_EPOCH = (45_000, 5_000)
"""Training and validation images of a CIFAR-10 epoch (the 90/10 split of the 50,000)."""


def matmul_gflops(dtype: str = "float32", size: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of a `size` x `size` matmul in TensorFlow at `dtype` (median of `repeats`)."""
    import tensorflow as tf

    a = tf.random.uniform((size, size), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
    tf.linalg.matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def forward_flops(model, image_shape) -> int:
    """Floating-point operations of one image's forward pass (inference graph), as counted by
    TensorFlow's profiler (convolutions and matmuls: 2 per multiply-add)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from lenet_keras import fast_layers

    forward = tf.function(lambda x: model(x, training=False))
    with fast_layers.without_xla():  # an XLA-compiled call hides the shapes after it from the profiler
        concrete = forward.get_concrete_function(tf.TensorSpec([1, *image_shape], tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def _step_timer(first: int, record: list):
    import keras

    class StepTimer(keras.callbacks.Callback):
        """Records (steps, seconds) of the training steps after step `first`."""

        def on_train_batch_end(self, batch, logs=None):
            """Start the clock after step `first`; afterwards record steps and seconds since."""
            if batch == first:
                self.start = time.perf_counter()
            elif batch > first:
                record[:] = [batch - first, time.perf_counter() - self.start]

    return StepTimer()


def measure(workload: str, precision: str, data_dir: str | None = None) -> dict:
    """One workload at one precision ("fp32" or "bf16" = `train.precision = "mixed_bfloat16"`), in this process.

    Returns the figures described in the module docstring (a JSON-able dict).
    """
    import resource

    import keras
    import tensorflow as tf

    from lenet_keras import config, data, train

    spec = WORKLOADS[workload]
    overrides = [*spec["overrides"], f"train.precision={POLICIES[precision]}"]
    experiment = config.load(REPO / spec["experiment"], overrides)
    dataset = data.load(experiment.data, data_dir)
    peak = matmul_gflops("bfloat16" if precision == "bf16" else "float32")
    keras.utils.set_random_seed(experiment.seed)
    model = train.compiled_model(experiment, dataset)
    batch_size = experiment.train.batch_size
    steps = data.steps_per_epoch(dataset, batch_size)
    pipeline, validation, _ = data.pipelines(dataset, batch_size, experiment.seed, experiment.data.mean,
                                             experiment.data.std, experiment.augment, epochs=2)
    first = 2
    result = {"workload": workload, "precision": precision, "batch_size": batch_size,
              "experiment": spec["experiment"], "overrides": overrides, "train_images": len(dataset.train_images)}

    timed: list = []
    epoch_times: list = []

    class EpochTimer(keras.callbacks.Callback):
        """Appends each epoch's wall seconds (training + validation) to `epoch_times`."""

        def on_epoch_begin(self, epoch, logs=None):
            """Start the epoch's clock."""
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            """Record the epoch's wall seconds."""
            epoch_times.append(time.perf_counter() - self.start)

    if workload == "lenet5":  # two real epochs with validation; the second is timed
        model.fit(pipeline, validation_data=validation, epochs=2, steps_per_epoch=steps, verbose=0, shuffle=False,
                  callbacks=[EpochTimer(), _step_timer(first, timed)])
        result["epoch_seconds"] = round(epoch_times[-1], 3)
    else:
        model.fit(pipeline, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False,
                  callbacks=[_step_timer(first, timed)])
    pipeline_step = timed[1] / timed[0]
    held = next(iter(pipeline))
    in_memory = tf.data.Dataset.from_tensors(held).repeat()
    model.fit(in_memory, epochs=1, steps_per_epoch=timed[0] + first + 1, verbose=0, shuffle=False,
              callbacks=[_step_timer(first, timed)])
    memory_step = timed[1] / timed[0]
    model.predict(validation, verbose=0)
    start = time.perf_counter()
    model.predict(validation, verbose=0)
    inference = len(dataset.val_images) / (time.perf_counter() - start)
    train_ips = batch_size / pipeline_step
    flops = 3 * forward_flops(model, dataset.image_shape)
    result.update(
        train_images_per_s=round(train_ips, 1),
        compute_images_per_s=round(batch_size / memory_step, 1),
        input_wait_fraction=round(max(0.0, 1 - memory_step / pipeline_step), 3),
        inference_images_per_s=round(inference, 1),
        train_mflop_per_image=round(flops / 1e6, 2),
        train_gflop_per_s=round(flops * train_ips / 1e9, 1),
        matmul_peak_gflop_per_s=round(peak, 1),
        peak_fraction=round(flops * train_ips / 1e9 / peak, 3),
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        threads={"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                 "inter_op": tf.config.threading.get_inter_op_parallelism_threads(), "cpus": os.cpu_count()},
    )
    if workload != "lenet5":
        train_count, val_count = CIFAR_EPOCH
        result["epoch_seconds_projected"] = round(train_count / train_ips + val_count / inference, 1)
    return result


def _ours(workload: str, precision: str, data_dir: str | None) -> dict:
    """`measure` in a fresh process; returns its figures."""
    command = [sys.executable, "-m", "lenet_keras.bench", "--measure", workload, "--precision", precision]
    if data_dir:
        command += ["--data-dir", str(data_dir)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise RuntimeError(f"bench {workload} {precision} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peer(python: str, script: str, args: list[str], mnist_dir: str | None) -> dict:
    """Run a peer script; parse its epoch times (median of epochs 2+) or its images/s."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if mnist_dir:
        env["MNIST_DIR"] = mnist_dir
    done = subprocess.run([python, str(PEERS_DIR / script), *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"peer {script} failed:\n{done.stderr[-3000:]}")
    epochs = [float(s) for s in re.findall(r"^epoch \d+ ([\d.]+)s", done.stdout, re.M)]
    found = re.search(r"images_per_s=([\d.]+)", done.stdout)
    accuracy = re.search(r"test_acc=([\d.]+)", done.stdout)
    return {"peer": script, "args": args,
            **({"epoch_seconds": statistics.median(epochs[1:] or epochs), "epoch_seconds_all": epochs} if epochs else {}),
            **({"images_per_s": float(found.group(1))} if found else {}),
            **({"test_accuracy": float(accuracy.group(1))} if accuracy else {})}


def _mnist_gz_dir(data_dir: str | None) -> str | None:
    """The folder of the gzip MNIST files the peer scripts read, if there is one."""
    from lenet_keras import data

    folder = data.find_mnist(data.search_dirs(data_dir))
    return str(folder) if folder and (folder / "train-images-idx3-ubyte.gz").exists() else None


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def run_bench(precisions: list[str], workloads: list[str], repeats: int, peers: bool, peer_python: str,
              peer_epochs: int, data_dir: str | None, out_dir: Path) -> Path:
    """Run the benchmark (module docstring), print the table and ratios, write JSON + CSV; return the JSON path."""
    import pandas as pd

    from lenet_keras import manifest

    mnist_gz = _mnist_gz_dir(data_dir)
    torch_ok = Path(peer_python).exists()
    if peers and not torch_ok:
        print(f"note: {peer_python} not found (make peers-venv): PyTorch peers skipped", flush=True)
    ours, theirs, ratios = [], [], {}
    for repeat in range(1, repeats + 1):
        for workload in workloads:
            for precision in precisions:
                result = _ours(workload, precision, data_dir) | {"repeat": repeat}
                ours.append(result)
                print(f"[{repeat}] ours {workload} {precision}: " + ", ".join(
                    f"{k}={v}" for k, v in result.items() if k.endswith(("_per_s", "seconds", "fraction", "projected", "rss_mib"))),
                    flush=True)
                if not peers:
                    continue
                jobs = []
                if workload == "lenet5" and precision == "fp32":
                    jobs.append(("deck keras lenet5", sys.executable, "seed002_keras_lenet.py", [str(peer_epochs)], "epoch"))
                    if torch_ok:
                        jobs.append(("torch lenet5", peer_python, "seed000_torch_lenet.py", [str(peer_epochs)], "epoch"))
                if workload == "cifar_cnn" and torch_ok:
                    jobs.append((f"torch cifar {precision}", peer_python, "seed004_torch_cifar.py",
                                 ["10", "128", precision], "images"))
                for name, python, script, args, kind in jobs:
                    peer = _peer(python, script, args, mnist_gz) | {"repeat": repeat, "name": name}
                    theirs.append(peer)
                    if kind == "epoch":
                        ratio = peer["epoch_seconds"] / result["epoch_seconds"]
                    else:
                        ratio = result["compute_images_per_s"] / peer["images_per_s"]
                    ratios.setdefault(f"ours {workload} {precision} vs {name}", []).append(round(ratio, 3))
                    print(f"[{repeat}] {name}: {peer.get('epoch_seconds', peer.get('images_per_s'))} "
                          f"({'s per epoch' if kind == 'epoch' else 'images/s'}); speed ratio ours/peer {ratio:.2f}", flush=True)
    table = pd.DataFrame(ours)
    numeric = [c for c in table.columns if c.endswith(("_per_s", "seconds", "fraction", "projected", "rss_mib"))]
    medians = table.groupby(["workload", "precision"])[numeric].median()
    print("\nmedians over repeats:\n" + medians.to_string())
    if ratios:
        print("\nspeed ratios ours / peer (min / median / max; >1 = ours faster):")
        for name, values in ratios.items():
            print(f"  {name}: {_spread(values)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in out_dir.glob("bench-*.json") if (m := re.fullmatch(r"bench-(\d+)\.json", p.name))]
    path = out_dir / f"bench-{max(numbers, default=0) + 1:03d}.json"
    manifest.write_json_atomic(path, {
        "command": manifest.command_line(), "utc": manifest.utc_now(), "versions": manifest.versions(),
        "machine": manifest.machine(), "ours": ours, "peers": theirs,
        "ratios": {k: {"values": v, "min": min(v), "median": statistics.median(v), "max": max(v)} for k, v in ratios.items()},
        "medians": json.loads(medians.reset_index().to_json(orient="records")),
    })
    rows = pd.concat([table.assign(side="ours"), pd.DataFrame(theirs).assign(side="peer")], ignore_index=True)
    manifest.write_text_atomic(path.with_suffix(".csv"), rows.drop(columns=["threads", "overrides", "args"], errors="ignore").to_csv(index=False))
    print(f"\nwritten: {path} and {path.with_suffix('.csv').name}")
    return path


def parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m lenet_keras bench` (also `python -m lenet_keras.bench`)."""
    p = argparse.ArgumentParser(prog="python -m lenet_keras bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=list(WORKLOADS))
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=1, help="times to run everything (default 1)")
    p.add_argument("--peers", action="store_true", help="also run the seeds' own scripts, alternating with ours")
    p.add_argument("--peer-python", default=str(REPO / ".venv-peers" / "bin" / "python"),
                   help="Python with PyTorch for the PyTorch peers (default: .venv-peers/bin/python)")
    p.add_argument("--peer-epochs", type=int, default=3, help="epochs of the LeNet peers (default 3; epochs 2+ are timed)")
    p.add_argument("--data-dir", default=None, help="look for the datasets here first")
    p.add_argument("--out-dir", type=Path, default=Path("runs/bench"), help="where results go (default runs/bench)")
    p.add_argument("--measure", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark, or (internal `--measure`) one measurement printed as JSON."""
    args = parser().parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.precision, args.data_dir)))
        return 0
    run_bench(args.precisions, args.workloads, args.repeats, args.peers, args.peer_python, args.peer_epochs,
              args.data_dir, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
