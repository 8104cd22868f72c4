"""Benchmark: how fast LeNet-5/MNIST and the CIFAR CNN train and predict here.

    python -m lenet_keras bench                         # our workloads, fp32 and bf16
    python -m lenet_keras bench --workloads lenet5 --repeats 3
    python -m lenet_keras bench --workloads lenet5_tiny --precisions fp32 --out-dir /tmp/b   # smoke test, seconds
    make bench [ARGS="--repeats 3"]

The experiments are the shipped files (`config.find_experiment_file`: `lenet_keras/experiments/`
of an installed wheel, `experiments/` of a checkout), so the command runs from any folder. A
workload whose data is not there is skipped before anything is measured, with one line saying
which data and how to get it (`runnable_workloads`); none left is an error (exit 2). The CPU's
ISA class (`hardware.describe_isa`) is printed and recorded ("isa_class", "isa").

Against the seeds' own scripts (a development tool of the repository, not part of the package):
`make bench ARGS="--peers --repeats 3"`, i.e. `python -m benchmarks.bench_peers --repeats 3`
from a checkout (`benchmarks/bench_peers.py`, which uses this module's public functions for our
side and `run_bench`'s `companion` hook for the peer runs between ours).

Each measurement runs in a fresh Python process (so thread pools, the mixed-precision policy
and peak memory are its own) and reports, for one workload and precision:

- `train_images_per_s`: training images/s through our real `tf.data` pipeline (augmentation
  included) over the timed steps: steps 4 to the last of the (last) epoch, i.e. all but the
  first `WARMUP_STEPS` = 3 (tracing). Images are the ones those steps really had: the last
  batch of an epoch is partial (`batch_images`); `timed_steps`, `timed_images` say how many;
- `compute_images_per_s`: as many steps on one full batch held in memory (the model's compute
  alone; the peer CIFAR script times exactly this), and `input_wait_fraction` =
  1 - train images/s / compute images/s: the share of a step spent waiting for input (not
  floored: slightly negative when the pipeline's steps happened to run faster, i.e. noise);
- `epoch_seconds`: LeNet-5: the wall time of a whole second epoch (training + validation,
  as the deck's script prints it); CIFAR CNN: projected from the measured rates for 45,000
  training and 5,000 validation images (marked `epoch_seconds_projected`);
- `inference_images_per_s`: `model.predict` on the validation set (second pass);
- `train_gflop_per_s`: training FLOPs per image x training images/s, with training FLOPs =
  3 x the forward FLOPs counted by TensorFlow's profiler on the inference graph (backward
  costs about twice the forward); `peak_fraction` divides it by a 4096x4096 matmul's GFLOP/s
  measured in the same process at the same precision (a ratio per measurement);
- `peak_rss_mib`: the process's peak resident memory, MiB.

The models run as `train.run` runs them (`TRAIN_DIFFERENCES` says what is not the same): same
seed, TensorFlow op determinism on, `train.compiled_model` under the experiment's distribution
strategy, `pipeline.pipelines`, and the callbacks that change what training computes.

Ratios are taken per measurement, then summarised (min / median / max over the repeats): the
median of the ratios, never the ratio of two medians. Printed and in the JSON
(`per_measurement_ratios`): train GFLOP/s / matmul GFLOP/s per workload and precision, and bf16 /
fp32 train and compute images/s per workload (same repeat).

Results go to `runs/bench/bench-NNN.json` (everything) and `.csv` (one row per measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORKLOADS = {
    "lenet5": {"experiment": "mnist_lenet5", "overrides": [], "epochs": 2},
    "cifar_cnn": {
        "experiment": "cifar_cnn_notebook",
        "overrides": ["data.dataset=image_folder", "data.path=cifar10-jpeg", "data.train_subset=1664",
                      "data.test_subset=128", "train.batch_size=128"],
    },
    "cifar_fast": {
        "experiment": "cifar_fast",
        "overrides": ["data.dataset=image_folder", "data.path=cifar10-jpeg", "data.train_subset=7168",
                      "data.test_subset=1024"],
    },
    "cifar_fast_silu": {
        "experiment": "cifar_fast",
        "overrides": ["data.dataset=image_folder", "data.path=cifar10-jpeg", "data.train_subset=7168",
                      "data.test_subset=1024", "model.name=cifar_fast_silu"],
    },
    "lenet5_tiny": {"experiment": "mnist_lenet5", "overrides": ["data.train_subset=2560", "data.test_subset=512"],
                    "epochs": 2, "matmul_size": 1024},
}
"""What each workload trains (a shipped experiment's name and overrides), and how many of its
steps are timed (`timed_window`):

- LeNet-5 with the deck's recipe (batch 512) on all of MNIST: 48,000 training images = 94
  steps, 91 timed steps (46,464 images; the last batch has 384);
- the CIFAR notebook's recipe (AdamW, clipping, AutoAugment, MixUp; batch 128 as the peer) on
  the first 1,664 images of the JPEG copy of CIFAR-10: 1,498 training images after its 10%
  validation split = 12 steps, 9 timed steps (1,114 images; the last batch has 90);
- airbench94's recipe (`experiments/cifar_fast.toml`, batch 1024, no validation split) on the
  first 7,168: 7 steps, 4 timed steps (4,096 images); `cifar_fast_silu` the same with SiLU in
  the conv groups (`model.name = "cifar_fast_silu"`);
- `lenet5_tiny`, a smoke test of seconds (not in the default set): LeNet-5 as `lenet5` on the
  first 2,560 MNIST images, 2,048 after the validation split = 4 steps, 1 timed step (512 images),
  and a 1024x1024 matmul for the peak.

`"epochs": 2` (LeNet-5): two real epochs with validation, the second timed as `epoch_seconds`;
otherwise one epoch and `epoch_seconds_projected` for a CIFAR-10 epoch (`CIFAR_EPOCH`)."""

DEFAULT_WORKLOADS = ("lenet5", "cifar_cnn", "cifar_fast", "cifar_fast_silu")
"""The workloads run when `--workloads` is not given (all but the smoke test)."""

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}
"""Bench precision names -> `train.precision` (Keras dtype policies)."""

CIFAR_EPOCH = (45_000, 5_000)
"""Training and validation images of a CIFAR-10 epoch (the 90/10 split of the 50,000)."""

WARMUP_STEPS = 3
"""Training steps at the start of each epoch left out of the timing (tracing, first allocations)."""

LEFT_OUT_CALLBACKS = ("Throughput", "EpochLogs", "ChanceLevel", "ModelGraph", "HistoryCSV", "TensorBoard",
                      "BestCheckpoint", "CrashSafeBackup")
"""The callbacks of `train.run` (class names) that the bench leaves out: they log, warn and save,
and change nothing that training computes. `train.algorithm_callbacks` builds the others."""

TRAIN_DIFFERENCES = (
    "differs from `train`: its logging and checkpoint callbacks are left out (history.csv, "
    "TensorBoard with weight histograms, graph, best.keras, backup, throughput and epoch-time logs, "
    "chance-level warning), "
    "so no per-epoch file writes are timed; verbose=0")
"""One line, printed and in the results: how the bench's training differs from `train.run`'s."""


def batch_images(n_images: int, batch_size: int, batch: int) -> int:
    """Images in batch `batch` (0-based) of an epoch over `n_images` at `batch_size`: `batch_size`,
    or the remainder in the last batch.

    Raises:
        ValueError: `batch` is not one of the epoch's ceil(n_images / batch_size) batches.
    """
    steps = -(-n_images // batch_size)
    if not 0 <= batch < steps:
        raise ValueError(f"batch {batch} is not in 0..{steps - 1} ({n_images} images at batch size {batch_size})")
    return min(batch_size, n_images - batch * batch_size)


def timed_window(n_images: int, batch_size: int, warmup: int = WARMUP_STEPS) -> tuple[int, int]:
    """(timed steps, timed images) of one epoch over `n_images` at `batch_size`: every step but the
    first `warmup`, with the images each step really has."""
    steps = -(-n_images // batch_size)
    return steps - warmup, sum(batch_images(n_images, batch_size, b) for b in range(warmup, steps))


def matmul_gflops(dtype: str = "float32", size: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of a `size` x `size` matmul in TensorFlow at `dtype` (median of `repeats`)."""
    import tensorflow as tf

    a = tf.random.uniform((size, size), dtype=tf.float32, seed=0)
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


def _step_timer(images_of, record: dict, warmup: int = WARMUP_STEPS, clock=time.perf_counter):
    import keras

    class StepTimer(keras.callbacks.Callback):
        """Times each epoch's steps after the first `warmup`; `record` holds the last epoch's:
        `steps`, `images` (`images_of(batch)` summed over the timed batches) and `seconds` (wall)."""

        def on_train_batch_end(self, batch, logs=None):
            """Start the clock when step `warmup` ends; afterwards count steps, images and seconds."""
            if batch == warmup - 1:
                self.start, self.steps, self.images = clock(), 0, 0
            elif batch >= warmup:
                self.steps += 1
                self.images += images_of(batch)
                record.update(steps=self.steps, images=self.images, seconds=clock() - self.start)

    return StepTimer()


def rates(train_flops_per_image: float, pipeline: dict, in_memory: dict, inference_images_per_s: float,
          peak_gflop_per_s: float) -> dict:
    """The reported rates of one measurement (module docstring) from its timings.

    `pipeline` and `in_memory` are `_step_timer` records: images (count) and seconds (wall) of
    the timed steps; `train_flops_per_image` in FLOPs; `peak_gflop_per_s` the matmul's GFLOP/s.
    """
    train = pipeline["images"] / pipeline["seconds"]
    compute = in_memory["images"] / in_memory["seconds"]
    gflop_per_s = train_flops_per_image * train / 1e9
    return {
        "timed_steps": pipeline["steps"], "timed_images": pipeline["images"],
        "train_images_per_s": round(train, 1),
        "compute_images_per_s": round(compute, 1),
        "input_wait_fraction": round(1 - train / compute, 3),
        "inference_images_per_s": round(inference_images_per_s, 1),
        "train_mflop_per_image": round(train_flops_per_image / 1e6, 2),
        "train_gflop_per_s": round(gflop_per_s, 1),
        "matmul_peak_gflop_per_s": round(peak_gflop_per_s, 1),
        "peak_fraction": round(gflop_per_s / peak_gflop_per_s, 3),
    }


def _epoch_timer(epoch_times: list):
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Appends each epoch's wall seconds (training + validation) to `epoch_times`."""

        def on_epoch_begin(self, epoch, logs=None):
            """Start the epoch's clock."""
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            """Record the epoch's wall seconds."""
            epoch_times.append(time.perf_counter() - self.start)

    return EpochTimer()


def experiment_file(workload: str) -> Path:
    """The shipped experiment file `workload` trains (`config.find_experiment_file`: inside the
    installed package, or `experiments/` of the checkout)."""
    from lenet_keras import config

    return config.find_experiment_file(WORKLOADS[workload]["experiment"])


def experiment_of(workload: str, precision: str | None = None):
    """The `config.Experiment` of `workload` (its overrides; `train.precision` of bench's
    `precision` name when given)."""
    from lenet_keras import config

    overrides = [*WORKLOADS[workload]["overrides"], *([f"train.precision={POLICIES[precision]}"] if precision else [])]
    return config.load(experiment_file(workload), overrides)


def _places(roots) -> str:
    return ", ".join(str(root) for root in roots)


def data_missing(data_config, data_dir: str | None = None) -> str | None:
    """Why the dataset of `data_config` (a `config.DataConfig`) cannot be read from the data folder
    (`data.search_dirs`), in one line with how to get it; None when it is there, or when nothing is
    named and it would be downloaded (MNIST, CIFAR-10). Looks at folders only (reads no image)."""
    from lenet_keras import data
    from lenet_keras.errors import DataNotFoundError

    try:
        roots, named = data.search_dirs(data_dir), data.named_data_dir(data_dir)
    except DataNotFoundError as error:
        return str(error)
    if data_config.dataset == "mnist":
        if data.find_mnist(roots) is not None or named is None:
            return None
        named_as = f"{named[0]} {named[1]}" if named[0] == "--data-dir" else f"{named[0]}={named[1]}"
        return (f"MNIST (the four official IDX files, raw or .gz) is not in {named_as} nor its mnist/: "
                f"put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
                f"t10k-labels-idx1-ubyte.gz into {named[1]}/mnist/, or name neither --data-dir nor "
                f"${data.DATA_ENV_VAR} to download them")
    if data_config.dataset != "image_folder" or not data_config.path:
        return None
    if find_image_folder(data_config.path, data_dir) is not None:
        return None
    return (f"the image folder {data_config.path}/ (train/<class>/*, test/<class>/*) is in none of "
            f"{_places(roots)}: give --data-dir DIR or set {data.DATA_ENV_VAR}=DIR with DIR/{data_config.path}/ "
            f"(cifar10-jpeg: a JPEG copy of CIFAR-10 in those sub-folders; image folders are never downloaded)")


def find_image_folder(path: str | Path, data_dir: str | None = None) -> Path | None:
    """An image folder as `data.path` finds it: an absolute `path` as given, a relative one under
    each data folder (`data.search_dirs`); the first with train/ and test/, None if none has both.

    Raises:
        DataNotFoundError: `data_dir` or `$LENET_KERAS_DATA` names no folder.
    """
    from lenet_keras import data

    return data.find_image_folder(path, data.search_dirs(data_dir))


def runnable_workloads(workloads, data_dir: str | None = None) -> tuple[list[str], dict[str, str]]:
    """(the `workloads` whose data is there, {skipped workload: why, `data_missing`'s line})."""
    runnable, skipped = [], {}
    for workload in workloads:
        why = data_missing(experiment_of(workload).data, data_dir)
        if why is None:
            runnable.append(workload)
        else:
            skipped[workload] = why
    return runnable, skipped


def measure(workload: str, precision: str, data_dir: str | None = None) -> dict:
    """One workload at one precision ("fp32" or "bf16" = `train.precision = "mixed_bfloat16"`), in this process.

    Turns TensorFlow op determinism on for this process (as `train.run`). Returns the figures
    described in the module docstring (a JSON-able dict).
    """
    import resource

    import keras
    import tensorflow as tf

    from lenet_keras import data, distribute, hardware, train
    from lenet_keras import pipeline as inputs

    spec = WORKLOADS[workload]
    experiment = experiment_of(workload, precision)
    strategy = distribute.strategy_for(experiment.distribution)
    dataset = data.load(experiment.data, data_dir)
    keras.utils.set_random_seed(experiment.seed)
    tf.config.experimental.enable_op_determinism()
    peak = matmul_gflops("bfloat16" if precision == "bf16" else "float32", size=spec.get("matmul_size", 4096))
    keras.utils.set_random_seed(experiment.seed)  # as train.run: seeded right before the model is built
    model = train.compiled_model(experiment, dataset, strategy)
    batch_size, n_train = experiment.train.batch_size, len(dataset.train_images)
    steps = inputs.steps_per_epoch(dataset, batch_size)
    epochs = spec.get("epochs", 1)  # LeNet-5: two real epochs with validation; the second is timed
    pipeline, validation, _ = inputs.pipelines(dataset, batch_size, experiment.seed, experiment.data.mean,
                                               experiment.data.std, experiment.augment, epochs=epochs)
    timed, epoch_times = {}, []
    model.fit(pipeline, validation_data=validation if epochs == 2 else None, epochs=epochs, steps_per_epoch=steps,
              verbose=0, shuffle=False,
              callbacks=[*train.algorithm_callbacks(experiment, steps, dataset), _epoch_timer(epoch_times),
                         _step_timer(lambda b: batch_images(n_train, batch_size, b), timed)])
    held = next(iter(pipeline))
    held_images = int(held[0].shape[0])
    in_memory: dict = {}
    model.fit(tf.data.Dataset.from_tensors(held).repeat(), epochs=1, steps_per_epoch=timed["steps"] + WARMUP_STEPS,
              verbose=0, shuffle=False,
              callbacks=[*train.algorithm_callbacks(experiment, steps, dataset), _step_timer(lambda b: held_images, in_memory)])
    model.predict(validation, verbose=0)
    start = time.perf_counter()
    model.predict(validation, verbose=0)
    inference = len(dataset.val_images) / (time.perf_counter() - start)
    result = {"workload": workload, "precision": precision, "batch_size": batch_size,
              "experiment": spec["experiment"], "overrides": [*spec["overrides"], f"train.precision={POLICIES[precision]}"],
              "train_images": n_train, "isa_class": hardware.isa_class(),
              **rates(3 * forward_flops(model, dataset.image_shape), timed, in_memory, inference, peak),
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                          "inter_op": tf.config.threading.get_inter_op_parallelism_threads(), "cpus": os.cpu_count()},
              "op_determinism": True, "differs_from_train": TRAIN_DIFFERENCES}
    if epochs == 2:
        result["epoch_seconds"] = round(epoch_times[-1], 3)
    else:
        train_count, val_count = CIFAR_EPOCH
        train_seconds = train_count * timed["seconds"] / timed["images"]
        result["epoch_seconds_projected"] = round(train_seconds + val_count / inference, 1)
    return result


def measure_in_subprocess(workload: str, precision: str, data_dir: str | None) -> dict:
    """`measure` in a fresh process (`python -m lenet_keras.bench --measure ...`); returns its figures.

    Raises:
        RuntimeError: the measuring process failed (the end of its stderr in the message).
    """
    command = [sys.executable, "-m", "lenet_keras.bench", "--measure", workload, "--precision", precision]
    if data_dir:
        command += ["--data-dir", str(data_dir)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise RuntimeError(f"bench {workload} {precision} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> dict:
    """{"values", "min", "median", "max"} of a list of per-measurement figures (3 decimals)."""
    values = [round(v, 3) for v in values]
    return {"values": values, "min": min(values), "median": statistics.median(values), "max": max(values)}


def per_measurement_ratios(ours: list[dict]) -> dict:
    """Ratios taken within each measurement (or each repeat), summarised by `spread`.

    `ours` are `measure` results with "repeat". Returns {name: spread + "ratio" (what is divided)}:
    per workload and precision `peak_fraction` (train GFLOP/s / matmul GFLOP/s, each measurement's
    own); per workload and repeat with both precisions, bf16 / fp32 train images/s and compute images/s.
    """
    groups: dict = {}
    for row in ours:
        groups.setdefault((row["workload"], row["precision"]), []).append(row)
    out = {}
    for (workload, precision), rows in groups.items():
        out[f"{workload} {precision} peak_fraction (GFLOP/s of matmul peak)"] = {
            "ratio": "peak_fraction = train GFLOP/s / matmul GFLOP/s of the same measurement",
            **spread([r["peak_fraction"] for r in rows])}
    for workload in dict.fromkeys(row["workload"] for row in ours):
        fp32 = {r["repeat"]: r for r in groups.get((workload, "fp32"), [])}
        bf16 = {r["repeat"]: r for r in groups.get((workload, "bf16"), [])}
        repeats = [k for k in bf16 if k in fp32]
        for key in ("train_images_per_s", "compute_images_per_s") if repeats else ():
            out[f"{workload} bf16 / fp32 {key}"] = {
                "ratio": f"{key} bf16 / fp32, same repeat", **spread([bf16[k][key] / fp32[k][key] for k in repeats])}
    return out


def print_spreads(title: str, spreads: dict) -> None:
    """Print `spreads` ({name: `spread` dict}) under `title`, one line each: min / median / max and the values."""
    print(f"\n{title} (min / median / max; the median of the ratios, not a ratio of medians):")
    for name, s in spreads.items():
        print(f"  {name}: {s['min']:.3f} / {s['median']:.3f} / {s['max']:.3f}  (values {s['values']})")


def write_results(out_dir: Path, ours: list[dict], theirs: list[dict], peer_ratios: dict, medians,
                  extra: dict | None = None) -> Path:
    """Print the summaries; write bench-NNN.json (everything) and .csv (one row per measurement); return the JSON path.

    `ours` are the `measure` results (with "repeat"), `theirs` the peer runs and `peer_ratios`
    their ours / peer `spread`s (both empty without peers: `benchmarks/bench_peers.py` fills
    them), `medians` the table of medians (a pandas DataFrame indexed by workload, precision),
    `extra` more top-level keys of the JSON (`run_bench`'s "isa_class", "isa", "skipped").
    """
    import pandas as pd

    from lenet_keras import manifest, rundir

    ratios = per_measurement_ratios(ours)
    print_spreads("per-measurement ratios", ratios)
    if peer_ratios:
        print_spreads("speed ratios ours / peer (>1 = ours faster)", peer_ratios)
    path = rundir.next_numbered_path(out_dir, "bench", ".json")
    manifest.write_json_atomic(path, {
        "command": manifest.command_line(), "utc": manifest.utc_now(), "versions": manifest.versions(),
        "machine": manifest.machine(), **(extra or {}), "op_determinism": True, "differs_from_train": TRAIN_DIFFERENCES,
        "ours": ours, "peers": theirs, "ratios": peer_ratios, "per_measurement_ratios": ratios,
        "medians": json.loads(medians.reset_index().to_json(orient="records")),
    })
    frames = [pd.DataFrame(ours).assign(side="ours"), *([pd.DataFrame(theirs).assign(side="peer")] if theirs else [])]
    rows = pd.concat(frames, ignore_index=True)
    manifest.write_text_atomic(path.with_suffix(".csv"), rows.drop(
        columns=["threads", "overrides", "args", "differs_from_train"], errors="ignore").to_csv(index=False))
    print(f"\nwritten: {path} and {path.with_suffix('.csv').name}")
    return path


REPORTED = ("_per_s", "seconds", "fraction", "projected", "rss_mib", "timed_steps", "timed_images")
"""Endings of the result keys printed per measurement and summarised as medians."""


def run_bench(precisions: list[str], workloads: list[str], repeats: int, data_dir: str | None, out_dir: Path,
              companion=None, skipped: dict | None = None) -> Path:
    """Run the benchmark (module docstring), print the table and ratios, write JSON + CSV; return the JSON path.

    `companion` (optional) runs other programs between our measurements (`benchmarks/bench_peers.py`'s
    peer scripts): its `note` (a line or None) is printed after ours, `companion.after(repeat,
    workload, precision, result)` is called after each of our measurements, and its `runs` (list
    of dicts) and `ratios()` ({name: `spread` dict}) go into the results as "peers" and "ratios".
    The CPU's ISA class is printed and recorded; `skipped` ({workload: why}, `runnable_workloads`)
    is recorded.
    """
    import pandas as pd

    from lenet_keras import hardware

    isa = {"isa_class": hardware.isa_class(), "isa": hardware.describe_isa()}
    print(f"CPU ISA class: {isa['isa']}", flush=True)
    print(f"note: ours run with train's seed, op determinism, model and pipelines; {TRAIN_DIFFERENCES}", flush=True)
    if companion is not None and companion.note:
        print(companion.note, flush=True)
    ours = []
    for repeat in range(1, repeats + 1):
        for workload in workloads:
            for precision in precisions:
                result = measure_in_subprocess(workload, precision, data_dir) | {"repeat": repeat}
                ours.append(result)
                print(f"[{repeat}] ours {workload} {precision}: "
                      + ", ".join(f"{k}={v}" for k, v in result.items() if k.endswith(REPORTED)), flush=True)
                if companion is not None:
                    companion.after(repeat, workload, precision, result)
    table = pd.DataFrame(ours)
    medians = table.groupby(["workload", "precision"])[[c for c in table.columns if c.endswith(REPORTED)]].median()
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print("\nmedians over repeats (each column separately):\n" + medians.to_string())
    theirs, peer_ratios = (companion.runs, companion.ratios()) if companion is not None else ([], {})
    return write_results(out_dir, ours, theirs, peer_ratios, medians, {**isa, "skipped": skipped or {}})


def _at_least_one(text: str) -> int:
    """argparse type of `--repeats`: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


def parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m lenet_keras bench` (also `python -m lenet_keras.bench`)."""
    from lenet_keras.data import DATA_DIR_HELP

    p = argparse.ArgumentParser(prog="python -m lenet_keras bench", description=__doc__.split("\n\n")[0],
                                epilog="Smoke test (seconds): --workloads lenet5_tiny --precisions fp32 --repeats 1. "
                                "A workload without its data is skipped with a line saying why; none left: exit 2.")
    p.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=list(DEFAULT_WORKLOADS),
                   help=f"default: {' '.join(DEFAULT_WORKLOADS)}; lenet5_tiny: a few LeNet-5 steps, a smoke test")
    p.add_argument("--precisions", nargs="+", choices=list(POLICIES), default=list(POLICIES),
                   help="fp32 (float32) and/or bf16 (mixed_bfloat16) (default both)")
    p.add_argument("--repeats", type=_at_least_one, default=1, help="times to run everything (default 1)")
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument("--out-dir", type=Path, default=Path("runs/bench"), help="where results go (default runs/bench)")
    p.add_argument("--measure", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    return p


def checked_workloads(workloads: list[str], data_dir: str | None, out_dir: Path) -> tuple[list[str], dict]:
    """The workloads to run and the skipped ones ({workload: why}), each skipped one printed as one
    line, before anything is measured.

    Raises:
        LenetKerasError: no workload has its data, `--out-dir` is a file, or `ONEDNN_MAX_CPU_ISA`
            holds a value oneDNN does not know.
    """
    from lenet_keras import hardware
    from lenet_keras.errors import LenetKerasError

    if out_dir.exists() and not out_dir.is_dir():
        raise LenetKerasError(f"--out-dir {out_dir}: a file, expected a folder (results go there)")
    try:
        hardware.isa_class()
    except ValueError as error:
        raise LenetKerasError(str(error)) from None
    runnable, skipped = runnable_workloads(workloads, data_dir)
    for workload, why in skipped.items():
        print(f"skipped {workload}: {why}", flush=True)
    if not runnable:
        raise LenetKerasError(f"no workload to run: none of {', '.join(skipped)} has its data (the 'skipped' lines "
                              "above say what is missing)")
    return runnable, skipped


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark, or (internal `--measure`) one measurement printed as JSON.

    Exit 2 (one line on stderr) on input a user can fix, before anything is measured; exit 1 when a
    measurement fails (the end of its output in the message)."""
    from lenet_keras.errors import LenetKerasError

    args = parser().parse_args(argv)
    try:
        if args.measure:
            print(json.dumps(measure(args.measure, args.precision, args.data_dir)))
            return 0
        workloads, skipped = checked_workloads(args.workloads, args.data_dir, args.out_dir)
    except LenetKerasError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        run_bench(args.precisions, workloads, args.repeats, args.data_dir, args.out_dir, skipped=skipped)
    except RuntimeError as error:  # `measure_in_subprocess`: a measurement failed; its process said why
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
