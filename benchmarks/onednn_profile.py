"""Where a training step's CPU time goes: the oneDNN primitives TensorFlow runs, from ONEDNN_VERBOSE.

    python -m benchmarks.onednn_profile --model cifar_cnn --precision mixed_bfloat16 --batch-size 128
    python -m benchmarks.onednn_profile --model lenet5 --batch-size 32 --steps 3 --json runs/onednn.json
    python -m benchmarks.onednn_profile --model cifar_cnn --env ONEDNN_DEFAULT_FPMATH_MODE=BF16

A child process (this module with --child, ONEDNN_VERBOSE=1 and each --env KEY=VALUE in its
environment) builds the registered model (`lenet_keras.models.build`; input 28x28x1 for names
starting with "lenet5", else 32x32x3; 10 classes) under the Keras dtype policy --precision,
compiles it with SGD and categorical cross-entropy (one-hot labels; --labels sparse: sparse
labels), runs 2 warm-up `train_on_batch` steps on random data, prints a marker, then --steps
timed steps (wall time of each by time.perf_counter). The parent reads the oneDNN verbose lines
after the marker (`parse_line`) and prints one row per (primitive kind, propagation,
implementation, problem) summed over the timed steps: calls, total ms and share of the oneDNN
total (convolutions' problems decoded, e.g. `mb128 ic256->oc256 8x8 k5`); then per propagation
kind (forward_training / backward_data / backward_weights / other) the ms per step, the step's
wall time, and how much of it is outside oneDNN (TensorFlow's own Eigen kernels, the optimizer,
the Python loop). --json OUT also writes it all as JSON.

The verbose output itself (a line printed and timed per primitive) slows the step down a little:
the wall time is that of a step with ONEDNN_VERBOSE=1, not of a plain one. TensorFlow may run
independent ops at once (e.g. a layer's backward_data and backward_weights convolutions on its
inter-op threads), so the primitives' summed milliseconds can exceed the wall time (the last
line then says so instead of attributing the rest to Eigen).

A development tool of the repository: run it from the repository root.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from lenet_keras.config import PRECISIONS

REPO = Path(__file__).resolve().parent.parent
MARKER = "=== onednn_profile: timed steps ==="
"""The child's line between the warm-up steps and the timed ones."""
STEP_PREFIX = "onednn_profile step_seconds="
"""The child's line giving one timed step's wall seconds."""
WARMUP_STEPS = 2
PROPAGATIONS = ("forward_training", "backward_data", "backward_weights")
"""Propagation kinds summarized on their own; any other (undef for reorders and matmuls, ...) is "other"."""
CONV_PROBLEM = re.compile(r"mb(\d+)_?(?:g\d+)?ic(\d+)oc(\d+)_(?:id\d+od\d+kd\d+\D*\d*_)?"
                          r"ih(\d+)oh\d+kh(\d+)(?:.*?iw(\d+))?")
"""A convolution's problem: mb128_ic256oc256_ih8oh8kh5sh1dh0ph2_iw8ow8kw5sw1dw0pw2 (groups "g32" optional)."""


def parse_line(line: str) -> dict | None:
    """One oneDNN primitive execution from a verbose line, or None for any other (or malformed) line.

    `onednn_verbose,v1,primitive,exec,cpu,KIND,IMPLEMENTATION,PROPAGATION,MEMORY,...,PROBLEM,MS`:
    the fields are counted from "exec" (field 3 here: kind = 5, implementation = 6, propagation = 7),
    the problem is the second-to-last field and the milliseconds the last, since the count of fields
    in between varies by oneDNN version. Returns {"kind", "implementation", "propagation", "problem", "ms"}.
    """
    fields = line.strip().split(",")
    if fields[0] not in ("onednn_verbose", "dnnl_verbose") or "exec" not in fields:
        return None
    at = fields.index("exec")
    if len(fields) < at + 8:  # engine, kind, implementation, propagation, memory, problem, ms at least
        return None
    try:
        ms = float(fields[-1])
    except ValueError:
        return None
    if not math.isfinite(ms) or ms < 0 or not fields[at + 2]:
        return None
    return {"kind": fields[at + 2], "implementation": fields[at + 3], "propagation": fields[at + 4],
            "problem": fields[-2], "ms": ms}


def decode_problem(kind: str, problem: str) -> str:
    """A convolution's problem in short: `mb128 ic256->oc256 8x8 k5` (batch, channels in and out,
    input height x width, kernel height); any other primitive's problem, or one that does not
    match `CONV_PROBLEM`, as it is."""
    found = CONV_PROBLEM.match(problem) if kind in ("convolution", "deconvolution") else None
    if not found:
        return problem
    mb, ic, oc, ih, kh, iw = found.groups()
    return f"mb{mb} ic{ic}->oc{oc} {ih}x{iw or ih} k{kh}"


def propagation_group(propagation: str) -> str:
    """forward_training, backward_data, backward_weights, or "other"."""
    return propagation if propagation in PROPAGATIONS else "other"


def summarize(rows: list[dict], steps: int = 1, step_seconds: list[float] | None = None) -> dict:
    """The executions `rows` (`parse_line`'s, over `steps` timed steps) grouped and totalled.

    Returns {"rows": one per (kind, propagation, implementation, problem), largest total first, with
    "calls", "total_ms", "share" (of the oneDNN total) and "problem_short"; "by_propagation":
    {group: {"calls", "total_ms", "ms_per_step", "share"}}; "onednn_ms", "onednn_ms_per_step",
    "steps", and with `step_seconds` "wall_ms_per_step" (their mean) and "onednn_share_of_wall"}.
    """
    groups: dict[tuple, dict] = {}
    for row in rows:
        key = (row["kind"], row["propagation"], row["implementation"], row["problem"])
        group = groups.setdefault(key, {"kind": key[0], "propagation": key[1], "implementation": key[2],
                                        "problem": key[3], "problem_short": decode_problem(key[0], key[3]),
                                        "calls": 0, "total_ms": 0.0})
        group["calls"] += 1
        group["total_ms"] += row["ms"]
    total = sum(g["total_ms"] for g in groups.values())
    table = sorted(groups.values(), key=lambda g: -g["total_ms"])
    by_propagation = {name: {"calls": 0, "total_ms": 0.0} for name in (*PROPAGATIONS, "other")}
    for group in table:
        group["share"] = group["total_ms"] / total if total else 0.0
        bucket = by_propagation[propagation_group(group["propagation"])]
        bucket["calls"] += group["calls"]
        bucket["total_ms"] += group["total_ms"]
    for bucket in by_propagation.values():
        bucket["ms_per_step"] = bucket["total_ms"] / steps
        bucket["share"] = bucket["total_ms"] / total if total else 0.0
    result = {"rows": table, "by_propagation": by_propagation, "onednn_ms": total,
              "onednn_ms_per_step": total / steps, "steps": steps}
    if step_seconds:
        wall_ms = 1000 * sum(step_seconds) / len(step_seconds)
        result |= {"wall_ms_per_step": wall_ms, "onednn_share_of_wall": result["onednn_ms_per_step"] / wall_ms}
    return result


def read_output(stdout: str) -> tuple[list[dict], list[float]]:
    """The primitive executions (`parse_line`) and the timed steps' wall seconds after `MARKER`.

    Raises:
        ValueError: no marker line in `stdout` (the child did not reach the timed steps).
    """
    lines = stdout.splitlines()
    if MARKER not in lines:
        raise ValueError(f"no line {MARKER!r} in the child's output")
    after = lines[lines.index(MARKER) + 1:]
    seconds = [float(line[len(STEP_PREFIX):]) for line in after if line.startswith(STEP_PREFIX)]
    return [row for row in map(parse_line, after) if row is not None], seconds


def format_table(rows: list[dict], steps: int) -> list[str]:
    """`summarize`'s rows as a table, columns as wide as their longest entry."""
    columns = [("kind", "kind"), ("propagation", "propagation"), ("implementation", "implementation"),
               ("problem", "problem_short")]
    widths = [max([len(title)] + [len(row[key] or "-") for row in rows]) for title, key in columns]
    head = "  ".join(f"{title:<{width}}" for (title, _), width in zip(columns, widths))
    lines = [f"oneDNN primitives over {steps} timed step{'s' * (steps != 1)} (largest first):",
             f"  {head}  {'calls':>5}  {'total ms':>9}  {'share':>6}"]
    for row in rows:
        cells = "  ".join(f"{row[key] or '-':<{width}}" for (_, key), width in zip(columns, widths))
        lines.append(f"  {cells}  {row['calls']:>5}  {row['total_ms']:>9.3f}  {100 * row['share']:>5.1f}%")
    return lines


def format_report(result: dict) -> list[str]:
    """The table (`format_table`), the per-propagation summary and the wall-time lines, as printed."""
    lines = format_table(result["rows"], result["steps"])
    lines.append("per propagation kind (ms per step, share of oneDNN):")
    for name, bucket in result["by_propagation"].items():
        lines.append(f"  {name:<17} {bucket['ms_per_step']:>9.3f} ms  {100 * bucket['share']:>5.1f}%  "
                     f"({bucket['calls']} calls)")
    if "wall_ms_per_step" in result:
        lines.append(f"wall time per step: {result['wall_ms_per_step']:.3f} ms (mean of {result['steps']}, "
                     f"with ONEDNN_VERBOSE=1)")
        rest = ("the rest runs in TensorFlow's own (Eigen) kernels" if result["onednn_share_of_wall"] <= 1 else
                "over 100%: independent ops ran at the same time (TensorFlow's inter-op threads), so the sum "
                "exceeds the wall time and says nothing of the time outside oneDNN")
        lines.append(f"oneDNN primitives: {result['onednn_ms_per_step']:.3f} ms of {result['wall_ms_per_step']:.3f} "
                     f"ms wall per step ({100 * result['onednn_share_of_wall']:.1f}%); {rest}")
    if not result["rows"]:
        lines.append("no oneDNN primitive ran in the timed steps (TensorFlow without oneDNN, or "
                     "TF_ENABLE_ONEDNN_OPTS=0?)")
    return lines


def input_shape(model: str) -> tuple[int, int, int]:
    """(28, 28, 1) for the LeNet-5 variants (names starting with "lenet5"), else (32, 32, 3)."""
    return (28, 28, 1) if model.startswith("lenet5") else (32, 32, 3)


def compiled_model(model: str, precision: str, sparse: bool):
    """The registered `model` built under the dtype policy `precision` and compiled with SGD and
    (sparse) categorical cross-entropy; a data-initialized model (`InitializedFromData`) is
    initialized from random images."""
    import keras
    import numpy as np

    from lenet_keras import models
    from lenet_keras.config import ModelConfig

    keras.mixed_precision.set_global_policy(precision)
    net = models.build(ModelConfig(name=model), input_shape(model), 10)
    loss = "sparse_categorical_crossentropy" if sparse else "categorical_crossentropy"
    net.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss=loss)
    if isinstance(net, models.InitializedFromData):
        images = np.random.default_rng(1).random((net.initialization_images, *input_shape(model)), "float32")
        net.initialize_from_data(images)
    return net


def child(model: str, precision: str, batch_size: int, steps: int, sparse: bool) -> None:
    """The child's work: warm-up steps, `MARKER`, then `steps` timed steps, each's seconds printed."""
    import ctypes

    import numpy as np

    net = compiled_model(model, precision, sparse)
    rng = np.random.default_rng(0)
    images = rng.random((batch_size, *input_shape(model)), "float32")
    labels = rng.integers(0, 10, batch_size)
    targets = labels if sparse else np.eye(10, dtype="float32")[labels]
    for _ in range(WARMUP_STEPS):
        net.train_on_batch(images, targets)
    libc = ctypes.CDLL(None)
    libc.fflush(None)  # oneDNN prints through C's stdout: its warm-up lines go out before the marker
    print(MARKER, flush=True)
    for _ in range(steps):
        start = time.perf_counter()
        net.train_on_batch(images, targets)
        seconds = time.perf_counter() - start
        libc.fflush(None)
        print(f"{STEP_PREFIX}{seconds:.6f}", flush=True)


def run_child(args: argparse.Namespace) -> str:
    """Run `child` in a fresh process with ONEDNN_VERBOSE=1 and `args.env`; its stdout.

    Raises:
        RuntimeError: the child failed (the end of its stderr in the message).
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"), "ONEDNN_VERBOSE": "1",
           **dict(pair.split("=", 1) for pair in args.env)}
    command = [sys.executable, "-m", "benchmarks.onednn_profile", "--child", "--model", args.model,
               "--precision", args.precision, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--labels", args.labels]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the profiled child failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.onednn_profile", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", default="cifar_cnn", help="registered model name (default cifar_cnn)")
    p.add_argument("--precision", default="float32", choices=PRECISIONS, help="Keras dtype policy (default float32)")
    p.add_argument("--batch-size", type=int, default=128, help="default 128")
    p.add_argument("--steps", type=int, default=1, help="timed steps after the 2 warm-up ones (default 1)")
    p.add_argument("--labels", choices=("onehot", "sparse"), default="onehot",
                   help="one-hot labels with categorical cross-entropy (default), or sparse ones")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="also set in the child's environment (repeatable), e.g. ONEDNN_DEFAULT_FPMATH_MODE=BF16")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the result as JSON to OUT")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Profile one model's training step (or, with --child, be the profiled process)."""
    p = parser()
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.steps < 1:
        p.error("--batch-size and --steps must be at least 1")
    if any("=" not in pair or pair.startswith("=") for pair in args.env):
        p.error(f"--env takes KEY=VALUE, got {args.env}")
    if args.child:
        child(args.model, args.precision, args.batch_size, args.steps, args.labels == "sparse")
        return 0
    rows, seconds = read_output(run_child(args))
    result = summarize(rows, args.steps, seconds)
    print("\n".join(format_report(result)))
    if args.json:
        settings = {"model": args.model, "precision": args.precision, "batch_size": args.batch_size,
                    "steps": args.steps, "labels": args.labels, "env": args.env}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(settings | {"step_seconds": seconds} | result, indent=2) + "\n")
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
