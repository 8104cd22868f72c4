"""Golden results of the runner (issue 16), one set per CPU ISA class: the code must reproduce
them bit for bit on a machine like the one they were recorded on, and within a tolerance that can
fail everywhere else.

Five runs per set:

  mnist_lenet5   `make mnist`: experiments/mnist_lenet5.toml as is (20 epochs of the deck recipe)
  cifar_fast     experiments/cifar_fast.toml, 1 epoch on 1,024 / 256 images of the JPEG copy
  cifar_cnn      experiments/cifar_cnn.toml, 1 epoch on 300 / 100 images of the JPEG copy
  numpy_lenet5   the NumPy engine (`scratch`), 1 epoch on 6,000 / 1,000 MNIST images
  grid2x2        a 2x2 grid sweep (tests/golden/grid2x2.toml), 1 epoch per trial

The sets: tests/golden/CLASS.json, CLASS one of `lenet_keras.hardware.ISA_CLASSES` ("amx",
"avx512_bf16", "avx512", "avx2", "other"; the class honours ONEDNN_MAX_CPU_ISA). Each file holds
the environment it was recorded in (`environment`: isa_class, onednn_ops, CPU model, usable CPU
count, TensorFlow / Keras / NumPy versions), `notes` (what else is known about it), and per case the
command, the precision the run computed in (`precision`: cifar_fast's "auto" is mixed_bfloat16 on
amx / avx512_bf16, float32 elsewhere; every other case is float32) and the summary compared.

Compared per run: history.csv without its timing columns (every row, as text, and the sha256
of that text), the manifest's test results (without timings), `final_weights.values_sha256`,
the sha256 of the test probabilities in predictions.npz (the NumPy engine records no weights
digest; this is its digest), and for the sweep trials.csv without its timing column (paths
replaced by <repo> / <runs>) plus every trial's weights digest.

Which set, and how (`choose`; the test prints it, and says it in every assertion message):

  - bit for bit against the set of this machine's ISA class when TensorFlow's own oneDNN ops are
    on or off as recorded (`onednn_ops`: on by default with AVX512-VNNI / AVX512-BF16 / AMX, off
    on AVX2; TF_ENABLE_ONEDNN_OPTS forces it, and ONEDNN_MAX_CPU_ISA=AVX2 on an AMX CPU leaves
    them on, so that is not the avx2 set's computation), the CPU's own class without the cap
    (`cpu_isa_class`) is the recorded one, and the usable CPU count and the TensorFlow / Keras /
    NumPy versions equal the recorded ones. A capped CPU is not bit for bit with a real one even
    with oneDNN ops off: on an AVX512-BF16 AMD EPYC, `TF_ENABLE_ONEDNN_OPTS=0
    ONEDNN_MAX_CPU_ISA=AVX2` gave every case of the avx2 set within 3.2e-7 relative, not equal
    (NumPy's OpenBLAS, for one, picks its kernels by the CPU and ignores the cap). The CPU model may differ within
    a class: oneDNN and Eigen pick their kernels by instruction set, not by model, and the avx2
    set recorded on an AMD EPYC reproduces the `make mnist` weights digest reported from an Intel
    AVX2 machine (442f1ae6..., see avx2.json's notes). A different CPU count (TensorFlow's thread
    split) or a different version changes the rounding.
  - otherwise within a tolerance, against this class's set, or where this class has none, the set
    of a class that computes in the same precision (bfloat16 classes: amx first; the others: avx2
    first). The tolerance compares the loss curve: every epoch's loss and val_loss in
    history.csv, the test loss and the sweep's loss columns, each within LOSS_TOLERANCE
    (relative: 1e-4 for float32 runs, 100x the largest difference seen between the amx and
    avx2 sets; 5e-3 for bfloat16 ones); accuracies within ACCURACY_TOLERANCE (absolute) and other
    numbers (learning rates, counts) within OTHER_TOLERANCE (relative); digests are not compared.
    The CIFAR cases stop near chance accuracy, so their accuracies alone could not fail; their
    losses can, and do for a real change: a 10% smaller momentum moves cifar_fast's by 3.6e-4.
    `test_the_tolerance_rejects_a_chance_level_run_and_accepts_the_golden_itself` checks, for every
    recorded set, that a run whose losses are those of an untrained 10-class model (ln 10) and
    whose accuracies are at chance fails the comparison of every case. The precision a case ran
    in must equal the recorded one in both modes (a float32 run is never compared with bfloat16
    goldens).

Each run is a subprocess `python -m lenet_keras ...` in the repository root (that code, not an
installed copy), with the data of $LENET_KERAS_DATA (MNIST and cifar10-jpeg/); without the data
the test is skipped, and fails in CI (CI=true). The five runs take about 3.5 minutes on 2 cores
(AMX); 10 on the 2-core AVX2 machine while other work shared it (`make mnist` 7 of them).

Record a set (only when a change of behaviour is intended, or for a class without one), with the
code to freeze checked out in REPO (e.g. `git worktree add --detach /tmp/golden <commit>`):

  cd REPO && LENET_KERAS_DATA=/path/to/datasets /path/to/.venv/bin/python \\
      /path/to/tests/test_golden.py --repo REPO --repeats 2 [--note "..."]

It writes tests/golden/CLASS.json for this machine's class (--out to write elsewhere). --repeats 2
runs everything twice and refuses to write unless both rounds agree (determinism). Compare
without writing: `--check` (bit for bit or tolerance by the rule above; `--tolerance` forces the
tolerance, `--isa-class` picks another class's set).
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import importlib.util
import io
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
SWEEP_FILE = "tests/golden/grid2x2.toml"  # relative to the repository root
CIFAR = ("data.dataset=image_folder", "data.path=cifar10-jpeg")

# name -> (command after `python -m lenet_keras`, experiment folder under --runs-dir, run kind)
CASES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "mnist_lenet5": (("train", "experiments/mnist_lenet5.toml"), "mnist_lenet5", "run"),
    "cifar_fast": (("train", "experiments/cifar_fast.toml", *CIFAR, "data.train_subset=1024",
                    "data.test_subset=256", "train.batch_size=512", "train.epochs=1"), "cifar_fast", "run"),
    "cifar_cnn": (("train", "experiments/cifar_cnn.toml", *CIFAR, "data.train_subset=300",
                   "data.test_subset=100", "train.epochs=1"), "cifar_cnn", "run"),
    "numpy_lenet5": (("scratch", "experiments/mnist_lenet5.toml", "train.epochs=1", "data.train_subset=6000",
                      "data.test_subset=1000"), "mnist_lenet5", "run"),
    "grid2x2": (("sweep", SWEEP_FILE), "grid2x2", "sweep"),
}

TIMING = re.compile(r"seconds|duration|elapsed|_time\b|\btime_|per_second|throughput", re.IGNORECASE)
"""Column / key names that hold wall-clock measurements (never reproducible)."""
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy")
LOSS_TOLERANCE = {"float32": 1e-4, "mixed_bfloat16": 5e-3, "mixed_float16": 5e-3}
"""Relative, for every loss when not bit for bit (the loss curve), by the precision the case ran in.
float32: 100x the largest difference seen between classes (avx2 vs amx, Eigen vs oneDNN
convolutions: 9e-7, mnist_lenet5's 20 epochs included), 3.6x below what a 10% smaller momentum
moves cifar_fast's (3.6e-4). bfloat16: generous, as no two bfloat16 classes have been compared
yet (cifar_fast in float32 vs mixed_bfloat16 differs by 2.2e-4)."""
ACCURACY_TOLERANCE = 0.02  # absolute, for accuracies when not bit for bit
OTHER_TOLERANCE = 1e-4  # relative, for the other numbers (learning rates, counts) when not bit for bit
CHANCE_LOSS = math.log(10)  # the cross-entropy of a 10-class model that learned nothing
CASE_TIMEOUT = 2700  # seconds for one run: `make mnist` takes 2-3 minutes on 2 idle cores, 15+ on 2 busy ones


def _hardware():
    """This checkout's lenet_keras/hardware.py, loaded from its file: the machine's ISA class, read
    without importing the package a recording runs (which may be another checkout's)."""
    spec = importlib.util.spec_from_file_location("_golden_hardware", REPO / "lenet_keras" / "hardware.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


HARDWARE = _hardware()
ISA_CLASSES = HARDWARE.ISA_CLASSES
BFLOAT16_CLASSES = HARDWARE.BFLOAT16_CLASSES


# --------------------------------------------------------------------------- the environment


@functools.lru_cache(maxsize=1)
def onednn_ops() -> bool | None:
    """Whether TensorFlow runs its own oneDNN ops (convolutions, pooling, ...) in a process with this
    environment: TensorFlow's answer (`IsMklEnabled()`, in a child process), None where it cannot
    say. On by default only on CPUs with AVX512-VNNI, AVX512-BF16, AVX-VNNI or AMX; off elsewhere
    (AVX2), where Eigen computes the convolutions; TF_ENABLE_ONEDNN_OPTS=1/0 forces it."""
    code = "from tensorflow.python.util import _pywrap_util_port as port; print('onednn_ops', port.IsMklEnabled())"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError):
        return None
    answer = [line for line in done.stdout.splitlines() if line.startswith("onednn_ops ")]
    return answer[-1] == "onednn_ops True" if done.returncode == 0 and answer else None


def environment() -> dict:
    """What decides whether results can be bit for bit: the ISA class (`hardware.isa_class()`,
    honouring ONEDNN_MAX_CPU_ISA) and the CPU's own (`cpu_isa_class`, without the cap), whether TensorFlow's oneDNN ops are on (`onednn_ops`), usable
    CPUs, library versions; and the CPU model, for people.

    The CPU model is read as `lenet_keras.manifest.machine()` reads it (/proc/cpuinfo).
    """
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:
        count = os.cpu_count()
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {"isa_class": HARDWARE.isa_class(), "cpu_isa_class": HARDWARE.hardware_isa_class(HARDWARE.cpu_flags()),
            "isa": HARDWARE.describe_isa(), "onednn_ops": onednn_ops(), "cpu": cpu, "cpu_count": count,
            "versions": found}


def data_root() -> Path | None:
    """$LENET_KERAS_DATA when it holds both MNIST and the JPEG copy of CIFAR-10, else None."""
    value = os.environ.get("LENET_KERAS_DATA")
    if not value:
        return None
    root = Path(value)
    mnist = (root / "mnist").is_dir() or (REPO / "data" / "mnist").is_dir()
    return root if mnist and (root / "cifar10-jpeg" / "train").is_dir() else None


# --------------------------------------------------------------------------- running and summarising


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def csv_text(columns: list[str], rows: list[list[str]]) -> str:
    """The normalised CSV text whose sha256 is recorded: header and rows, `,`-separated, `\\n`-ended."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


def read_table(path: Path, replace: dict[str, str] | None = None) -> dict:
    """A CSV file without its timing columns: kept and dropped column names, rows as text, sha256."""
    with open(path, newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    header, body = table[0], table[1:]
    keep = [i for i, name in enumerate(header) if not TIMING.search(name)]
    rows = []
    for row in body:
        cells = [row[i] for i in keep]
        for old, new in (replace or {}).items():
            cells = [cell.replace(old, new) for cell in cells]
        rows.append(cells)
    columns = [header[i] for i in keep]
    return {"columns": columns, "dropped_columns": [n for n in header if TIMING.search(n)], "rows": rows,
            "sha256": sha256_text(csv_text(columns, rows))}


def _array_sha256(array) -> str:
    import numpy as np

    array = np.ascontiguousarray(array)
    return hashlib.sha256(f"{array.dtype.str}{array.shape}".encode() + array.tobytes()).hexdigest()


def summarise_run(run_dir: Path) -> dict:
    """The reproducible part of one run directory (Keras `train` or NumPy `scratch`)."""
    import numpy as np

    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest.get("status") == "completed", f"{run_dir}: status {manifest.get('status')}"
    with np.load(run_dir / "predictions.npz") as predictions:
        probabilities = {key: _array_sha256(predictions[key])
                         for key in ("probabilities", "tta_probabilities") if key in predictions.files}
    data = manifest["data"]
    return {
        "history": read_table(run_dir / "history.csv"),
        "test": {k: v for k, v in manifest["test"].items() if not TIMING.search(k)},
        "final_weights_sha256": manifest.get("final_weights", {}).get("values_sha256"),
        "probabilities_sha256": probabilities,
        "images": {k: data[k] for k in ("train_images", "val_images", "test_images")},
        "model_parameters": manifest["model"]["parameters"],
    }


def summarise_sweep(sweep_dir: Path, repo: Path, runs_dir: Path) -> dict:
    """trials.csv without timing (paths replaced) and each trial's weights digest and test results."""
    table = read_table(sweep_dir / "trials.csv",
                       replace={str(runs_dir): "<runs>", str(repo.resolve()): "<repo>", str(repo): "<repo>"})
    trials = {}
    for manifest_path in sorted(sweep_dir.glob("trial-*/manifest.json")):
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        trials[manifest_path.parent.name] = {
            "final_weights_sha256": manifest.get("final_weights", {}).get("values_sha256"),
            "test": {k: v for k, v in manifest.get("test", {}).items() if not TIMING.search(k)},
        }
    return {"trials_csv": table, "trials": trials}


def run_case(name: str, repo: Path, workdir: Path) -> tuple[dict, dict]:
    """Run golden case `name` with the code in `repo`; returns (summary, run info)."""
    command, folder, kind = CASES[name]
    runs_dir = workdir / name / "runs"
    runs_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "lenet_keras", *command, "--runs-dir", str(runs_dir)]
    if kind == "sweep":
        argv += ["--reports-dir", str(workdir / name / "reports")]
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    log = workdir / name / "log.txt"
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        result = subprocess.run(argv, cwd=repo, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=CASE_TIMEOUT)
    seconds = round(time.perf_counter() - started, 1)
    if result.returncode:
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise AssertionError(f"golden case {name}: `{' '.join(argv[1:])}` (cwd {repo}) exited "
                             f"{result.returncode}:\n{tail}")
    if kind == "sweep":
        summary = summarise_sweep(runs_dir / folder, repo, runs_dir)
        first = sorted((runs_dir / folder).glob("trial-*/manifest.json"))[0]
    else:
        manifests = sorted((runs_dir / folder).glob("*/manifest.json"))
        assert len(manifests) == 1, f"golden case {name}: expected one run in {runs_dir / folder}, got {manifests}"
        summary = summarise_run(manifests[0].parent)
        first = manifests[0]
    manifest = json.loads(first.read_text(encoding="utf-8"))
    info = {"seconds": seconds, "machine": manifest.get("machine"), "versions": manifest.get("versions"),
            "git": manifest.get("git"), "module": _module_file(repo, env), "precision": precision_ran(manifest)}
    return summary, info


def precision_ran(manifest: dict) -> str:
    """The Keras dtype policy a run computed in: the manifest's `precision.ran`, or (the NumPy
    engine, older manifests) its configured `train.precision`."""
    ran = (manifest.get("precision") or {}).get("ran")
    return ran or manifest.get("config", {}).get("train", {}).get("precision", "float32")


def _module_file(repo: Path, env: dict) -> str:
    """Where `python -m lenet_keras` in `repo` imports the package from (must be `repo`'s copy)."""
    code = "import lenet_keras; print(lenet_keras.__file__)"
    return subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


# --------------------------------------------------------------------------- comparing


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value


def tolerance(column: str, precision: str = "float32") -> tuple[str, float]:
    """("absolute" or "relative", bound) for a column or key of a run in `precision` when not bit for bit."""
    if "accuracy" in column or column == "objective":  # the sweep's objective is a val_accuracy
        return "absolute", ACCURACY_TOLERANCE
    if "loss" in column:
        return "relative", LOSS_TOLERANCE[precision]
    return "relative", OTHER_TOLERANCE


def _close(column: str, expected, actual, precision: str = "float32") -> bool:
    a, b = _number(expected), _number(actual)
    if a is None or b is None:
        return expected == actual
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    kind, bound = tolerance(column, precision)
    if kind == "absolute":
        return abs(a - b) <= bound
    return abs(a - b) <= bound * max(abs(a), abs(b)) + 1e-12


def compare_table(what: str, golden: dict, actual: dict, exact: bool, why: str,
                  precision: str = "float32") -> list[str]:
    """Differences between two `read_table` results (empty when they agree)."""
    problems = []
    if golden["columns"] != actual["columns"]:
        return [f"{what}: columns {actual['columns']} != golden {golden['columns']}"]
    if len(golden["rows"]) != len(actual["rows"]):
        return [f"{what}: {len(actual['rows'])} rows != golden {len(golden['rows'])}"]
    for index, (want, got) in enumerate(zip(golden["rows"], actual["rows"])):
        for column, a, b in zip(golden["columns"], want, got):
            same = a == b if exact else _close(column, a, b, precision)
            if not same:
                problems.append(f"{what} row {index} {column}: {b} != golden {a} ({why})")
    if exact and golden["sha256"] != actual["sha256"]:
        problems.append(f"{what}: sha256 {actual['sha256']} != golden {golden['sha256']}")
    return problems


def compare_values(what: str, golden: dict, actual: dict, exact: bool, why: str,
                   precision: str = "float32") -> list[str]:
    problems = []
    if set(golden) != set(actual):
        return [f"{what}: keys {sorted(actual)} != golden {sorted(golden)}"]
    for key, value in golden.items():
        same = actual[key] == value if exact else _close(key, value, actual[key], precision)
        if not same:
            problems.append(f"{what} {key}: {actual[key]!r} != golden {value!r} ({why})")
    return problems


def compare(name: str, golden: dict, actual: dict, exact: bool, why: str, precision: str = "float32") -> list[str]:
    """Every difference between case `name`'s golden summary and `actual`'s (a run in `precision`)."""
    if CASES[name][2] == "sweep":
        problems = compare_table("trials.csv", golden["trials_csv"], actual["trials_csv"], exact, why, precision)
        if set(golden["trials"]) != set(actual["trials"]):
            return problems + [f"trials {sorted(actual['trials'])} != golden {sorted(golden['trials'])}"]
        for trial, want in golden["trials"].items():
            got = actual["trials"][trial]
            problems += compare_values(f"{trial} test", want["test"], got["test"], exact, why, precision)
            if exact and got["final_weights_sha256"] != want["final_weights_sha256"]:
                problems.append(f"{trial} final_weights.values_sha256 {got['final_weights_sha256']} "
                                f"!= golden {want['final_weights_sha256']}")
        return problems
    problems = compare_table("history.csv", golden["history"], actual["history"], exact, why, precision)
    problems += compare_values("test", golden["test"], actual["test"], exact, why, precision)
    for key in ("images", "model_parameters"):  # the same data and model everywhere
        if golden[key] != actual[key]:
            problems.append(f"{key}: {actual[key]} != golden {golden[key]}")
    if exact:
        if golden["final_weights_sha256"] != actual["final_weights_sha256"]:
            problems.append(f"final_weights.values_sha256 {actual['final_weights_sha256']} "
                            f"!= golden {golden['final_weights_sha256']}")
        if golden["probabilities_sha256"] != actual["probabilities_sha256"]:
            problems.append(f"predictions.npz probabilities sha256 {actual['probabilities_sha256']} "
                            f"!= golden {golden['probabilities_sha256']}")
    return problems


def largest_loss_difference(name: str, golden: dict, actual: dict) -> tuple[float, str]:
    """(the largest relative difference between a golden loss and the run's, where): how close
    the loss curve came to the tolerance's bound."""
    pairs = []

    def table(what, want, got):
        if want["columns"] == got["columns"] and len(want["rows"]) == len(got["rows"]):
            for index, (a_row, b_row) in enumerate(zip(want["rows"], got["rows"])):
                pairs.extend((f"{what} row {index} {c}", a, b) for c, a, b in zip(want["columns"], a_row, b_row)
                             if "loss" in c)

    if CASES[name][2] == "sweep":
        table("trials.csv", golden["trials_csv"], actual["trials_csv"])
    else:
        table("history.csv", golden["history"], actual["history"])
        pairs.append(("test loss", golden["test"].get("loss"), actual["test"].get("loss")))
    found = [(abs(a - b) / max(abs(a), abs(b), 1e-12), where) for where, a, b in
             ((w, _number(a), _number(b)) for w, a, b in pairs) if a is not None and b is not None]
    return max(found, default=(0.0, "no loss compared"))


def load_goldens() -> dict[str, dict]:
    """Every recorded set: {ISA class: the contents of tests/golden/CLASS.json}."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(GOLDEN_DIR.glob("*.json"))}


def choose(goldens: dict[str, dict], here: dict, force_tolerance: bool = False) -> tuple[str, bool, str]:
    """(ISA class of the set to compare with, bit for bit?, why, in words) for environment `here`.

    Bit for bit against this class's set when TensorFlow's oneDNN ops are as recorded (on / off) and
    the usable CPU count and the library versions equal the recorded ones (the CPU model may
    differ: see the module docstring); otherwise within the
    tolerance against this class's set, or the set of the nearest class computing in the same
    precision (bfloat16 or not), or the nearest recorded class at all.
    """
    if not goldens:
        raise LookupError(f"no golden set in {GOLDEN_DIR} (record one: see the module docstring)")
    isa = here["isa_class"]
    if isa in goldens:
        chosen, reason = isa, f"this machine's class {isa}"
    else:
        same_precision = [c for c in goldens if (c in BFLOAT16_CLASSES) == (isa in BFLOAT16_CLASSES)]
        pool = same_precision or list(goldens)
        order = {c: i for i, c in enumerate(ISA_CLASSES)}
        chosen = min(pool, key=lambda c: abs(order.get(c, len(order)) - order.get(isa, len(order))))
        reason = (f"no set for this machine's class {isa} (recorded: {', '.join(sorted(goldens))}); nearest "
                  + ("class of the same precision" if same_precision else "class, in ANOTHER precision"))
    recorded = goldens[chosen]["environment"]
    ops = {True: "oneDNN ops on", False: "oneDNN ops off", None: "oneDNN ops unknown"}
    where = (f"golden set tests/golden/{chosen}.json ({reason}; recorded on {recorded['cpu']}, "
             f"{ops[recorded.get('onednn_ops')]}, {recorded['cpu_count']} CPUs, {recorded['versions']}; here "
             f"{here['isa_class']} on {here['cpu']}, {ops[here.get('onednn_ops')]}, {here['cpu_count']} CPUs, "
             f"{here['versions']})")
    differs = [what for what, key in (("ISA class", "isa_class"), ("TensorFlow's oneDNN ops", "onednn_ops"),
                                      ("CPU count", "cpu_count"), ("versions", "versions"))
               if recorded.get(key) != here.get(key)]
    cpu_class = lambda env: env.get("cpu_isa_class", env["isa_class"])  # noqa: E731 (older sets: no cap used)
    if "ISA class" not in differs and cpu_class(recorded) != cpu_class(here):
        differs.append(f"the CPU's own class ({cpu_class(here)} here, capped to {here['isa_class']} by "
                       "ONEDNN_MAX_CPU_ISA)")
    if not differs and not force_tolerance:
        model = "" if recorded["cpu"] == here["cpu"] else f" (CPU model differs: {recorded['cpu']} there)"
        return chosen, True, f"BIT FOR BIT against {where}{model}"
    because = "forced" if force_tolerance and not differs else f"{' and '.join(differs)} differ"
    return chosen, False, (f"TOLERANCE ({because}: loss curve and losses within {LOSS_TOLERANCE['float32']:g} "
                           f"relative in float32, {LOSS_TOLERANCE['mixed_bfloat16']:g} in bfloat16, "
                           f"accuracies within {ACCURACY_TOLERANCE} absolute, other numbers within "
                           f"{OTHER_TOLERANCE:g} relative; digests not compared) against {where}")


# --------------------------------------------------------------------------- the tests

try:
    import pytest
except ImportError:  # recording needs no pytest
    pytest = None

if pytest is not None:

    def test_golden_files_are_consistent():
        """Each set is named by the ISA class it was recorded on, holds every case recorded
        deterministically with today's command, and every recorded table's sha256 is the sha256 of
        its recorded rows (no hand-edited goldens); amx and avx2 are recorded."""
        goldens = load_goldens()
        assert {"amx", "avx2"} <= set(goldens), sorted(goldens)
        for isa, golden in goldens.items():
            assert isa in ISA_CLASSES and golden["environment"]["isa_class"] == isa, (isa, golden["environment"])
            assert set(golden["environment"]) >= {"cpu", "cpu_count", "versions", "onednn_ops"}, isa
            assert set(golden["cases"]) == set(CASES), isa
            for name, case in golden["cases"].items():
                table = case["summary"]["trials_csv" if CASES[name][2] == "sweep" else "history"]
                assert sha256_text(csv_text(table["columns"], table["rows"])) == table["sha256"], (isa, name)
                assert case["command"] == list(CASES[name][0]), f"{isa} {name}: the command changed since recording"
                assert case["deterministic_rounds"] >= 2 and not case["differences_between_rounds"], (isa, name)
                bfloat16 = name == "cifar_fast" and isa in BFLOAT16_CLASSES  # train.precision = "auto"
                assert case["precision"] == ("mixed_bfloat16" if bfloat16 else "float32"), (isa, name)

    def _env(isa="avx2", cpu="AMD EPYC", count=2, versions=None, ops=None):
        ops = isa in ("amx", "avx512_bf16") if ops is None else ops
        return {"isa_class": isa, "isa": isa, "onednn_ops": ops, "cpu": cpu, "cpu_count": count,
                "versions": versions or {"tensorflow-cpu": "2.21.0", "keras": "3.15.1", "numpy": "2.4.6"}}

    def test_bit_for_bit_needs_the_class_cpu_count_and_versions_of_a_recorded_set():
        goldens = {isa: {"environment": _env(isa, cpu=f"{isa} cpu")} for isa in ("amx", "avx2")}
        chosen, exact, why = choose(goldens, _env("avx2", cpu="Intel(R) Core(TM) i7-8700"))
        assert (chosen, exact) == ("avx2", True) and why.startswith("BIT FOR BIT") and "CPU model differs" in why
        chosen, exact, why = choose(goldens, _env("amx", cpu="amx cpu"))
        assert (chosen, exact) == ("amx", True) and "tests/golden/amx.json" in why and "differs" not in why
        for other in (_env("avx2", count=4), _env("avx2", versions={"tensorflow-cpu": "2.22.0"}),
                      _env("avx2", ops=True)):  # TF_ENABLE_ONEDNN_OPTS=1 on an AVX2 CPU
            chosen, exact, why = choose(goldens, other)
            assert (chosen, exact) == ("avx2", False) and why.startswith("TOLERANCE"), why
        assert "CPU count differ" in choose(goldens, _env("avx2", count=4))[2]
        assert "TensorFlow's oneDNN ops differ" in choose(goldens, _env("avx2", ops=True))[2]
        # ONEDNN_MAX_CPU_ISA=AVX2 on an AMX CPU: class avx2, but TensorFlow's oneDNN ops stay on
        assert choose(goldens, _env("avx2", ops=True, cpu="amx cpu"))[:2] == ("avx2", False)
        # ... and with TF_ENABLE_ONEDNN_OPTS=0 too, an AVX-512 CPU capped to AVX2 is not an AVX2 CPU
        capped = {**_env("avx2", ops=False), "cpu_isa_class": "avx512_bf16"}
        chosen, exact, why = choose(goldens, capped)
        assert (chosen, exact) == ("avx2", False) and "the CPU's own class (avx512_bf16 here" in why, why
        assert choose(goldens, {**_env("avx2"), "cpu_isa_class": "avx2"})[:2] == ("avx2", True)
        chosen, exact, why = choose(goldens, _env("avx2", cpu="avx2 cpu"), force_tolerance=True)
        assert (chosen, exact) == ("avx2", False) and "TOLERANCE (forced" in why

    def test_a_class_without_a_set_is_compared_within_the_tolerance_in_its_own_precision():
        goldens = {isa: {"environment": _env(isa)} for isa in ("amx", "avx2")}
        for isa, expected in (("avx512_bf16", "amx"), ("avx512", "avx2"), ("other", "avx2")):
            chosen, exact, why = choose(goldens, _env(isa))
            assert (chosen, exact) == (expected, False), (isa, why)
            assert f"no set for this machine's class {isa}" in why and "ISA class differ" in why
            assert f"tests/golden/{expected}.json" in why and "same precision" in why
        chosen, exact, why = choose({"amx": goldens["amx"]}, _env("avx2"))
        assert (chosen, exact) == ("amx", False) and "ANOTHER precision" in why
        with pytest.raises(LookupError, match="no golden set"):
            choose({}, _env())

    def _chance_level(name: str, summary: dict) -> dict:
        """`summary` as a run that learned nothing would give: every loss ln 10, every accuracy 0.1."""
        def untrained(key, value):
            if _number(value) is None or isinstance(value, bool):
                return value
            if "loss" in key:
                return str(CHANCE_LOSS) if isinstance(value, str) else CHANCE_LOSS
            if "accuracy" in key or key == "objective":
                return "0.1" if isinstance(value, str) else 0.1
            return value

        def table(t):
            rows = [[untrained(c, v) for c, v in zip(t["columns"], row)] for row in t["rows"]]
            return {**t, "rows": rows, "sha256": sha256_text(csv_text(t["columns"], rows))}

        if CASES[name][2] == "sweep":
            return {"trials_csv": table(summary["trials_csv"]),
                    "trials": {k: {**v, "test": {t: untrained(t, x) for t, x in v["test"].items()}}
                               for k, v in summary["trials"].items()}}
        return {**summary, "history": table(summary["history"]),
                "test": {k: untrained(k, v) for k, v in summary["test"].items()}}

    def test_the_tolerance_rejects_a_chance_level_run_and_accepts_the_golden_itself():
        """The tolerance can fail for every case of every set, the CIFAR ones (near chance accuracy)
        included: their losses are further from ln 10 than LOSS_TOLERANCE of the precision they ran in."""
        for isa, golden in load_goldens().items():
            for name, case in golden["cases"].items():
                summary = case["summary"]
                precision = case["precision"]
                assert compare(name, summary, summary, False, "tolerance", precision) == [], (isa, name)
                problems = compare(name, summary, _chance_level(name, summary), False, "tolerance", precision)
                assert any("loss" in problem for problem in problems), (isa, name, problems)

    def test_the_tolerance_bounds_losses_relatively_and_accuracies_absolutely():
        for precision, bound in LOSS_TOLERANCE.items():
            assert _close("val_loss", "2.0", str(2.0 * (1 - 0.9 * bound)), precision)
            assert not _close("val_loss", "2.0", str(2.0 * (1 - 1.1 * bound)), precision)
            assert _close("final loss", "0.05", str(0.05 * (1 + 0.9 * bound)), precision)
            assert not _close("loss", 0.05, 0.05 * (1 + 1.1 * bound), precision)
        assert LOSS_TOLERANCE["float32"] < LOSS_TOLERANCE["mixed_bfloat16"]
        assert _close("val_accuracy", "0.5", "0.519") and not _close("test accuracy", "0.5", "0.479")
        assert not _close("learning_rate", "0.01", "0.0101") and _close("epoch", "3", "3")
        assert not _close("state", "complete", "failed") and _close("val_loss", "nan", "nan")

    @pytest.mark.parametrize("name", list(CASES))
    def test_reproduces_golden(name, tmp_path):
        """The current code reproduces the recorded results: bit for bit on a machine like the
        recording one, else within the tolerance (`choose`)."""
        if data_root() is None:
            from .conftest import missing_shared  # here: the file also runs as a script, to record

            message = ("$LENET_KERAS_DATA with mnist/ and cifar10-jpeg/train/ "
                       f"({os.environ.get('LENET_KERAS_DATA') or 'unset'})")
            missing_shared(message)
        goldens = load_goldens()
        isa, exact, why = choose(goldens, environment())
        print(f"\ngolden case {name}: {why}", flush=True)
        if not exact:
            warnings.warn(f"golden case {name}: {why}", UserWarning, stacklevel=1)
        actual, info = run_case(name, REPO, tmp_path)
        assert Path(info["module"]).resolve().parent == (REPO / "lenet_keras").resolve(), info["module"]
        recorded = goldens[isa]["cases"][name]
        assert info["precision"] == recorded["precision"], (
            f"golden case {name} ran in {info['precision']}, the {isa} set recorded {recorded['precision']} ({why})")
        problems = compare(name, recorded["summary"], actual, exact, "bit for bit" if exact else "tolerance",
                           info["precision"])
        largest = largest_loss_difference(name, recorded["summary"], actual)
        print(f"golden case {name}: largest loss difference {largest[0]:.2e} relative ({largest[1]}), "
              f"{len(problems)} difference(s)", flush=True)
        assert not problems, (f"golden case {name} ({why}); {len(problems)} difference(s):\n"
                              + "\n".join(problems[:40]))


# --------------------------------------------------------------------------- recording


def record(repo: Path, repeats: int, out: Path, cases: list[str], notes: list[str]) -> dict:
    """Run every case `repeats` times with the code in `repo`; the goldens if all rounds agree."""
    repo = repo.resolve()
    sweep_copy = repo / SWEEP_FILE
    if sweep_copy.resolve() != (GOLDEN_DIR / "grid2x2.toml").resolve():
        sweep_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(GOLDEN_DIR / "grid2x2.toml", sweep_copy)  # base is relative to the sweep file
    here = environment()
    golden = {"about": "tests/test_golden.py: golden results of one ISA class (issue 16)",
              "environment": here, "notes": list(notes), "cases": {}}
    for name in cases:
        rounds = []
        for attempt in range(repeats):
            workdir = Path(tempfile.mkdtemp(prefix=f"golden-{name}-"))
            try:
                summary, info = run_case(name, repo, workdir)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            print(f"{name} round {attempt + 1}: {info['seconds']} s, {info['precision']}, module {info['module']}, "
                  f"git {info['git']}", flush=True)
            assert Path(info["module"]).resolve().parent == repo / "lenet_keras", info["module"]
            assert info["machine"]["cpu"] == here["cpu"], (info["machine"], here)
            rounds.append((summary, info))
        differences = [compare(name, rounds[0][0], other, True, "between recording rounds") for other, _ in rounds[1:]]
        differences += [[f"precision {info['precision']} != {rounds[0][1]['precision']}"]
                        for _, info in rounds[1:] if info["precision"] != rounds[0][1]["precision"]]
        golden["cases"][name] = {
            "command": list(CASES[name][0]),
            "precision": rounds[0][1]["precision"],
            "summary": rounds[0][0],
            "deterministic_rounds": repeats if not any(differences) else 0,
            "differences_between_rounds": [p for d in differences for p in d],
            "seconds": [info["seconds"] for _, info in rounds],
            "recorded_with": {"git": rounds[0][1]["git"], "machine": rounds[0][1]["machine"],
                              "versions": rounds[0][1]["versions"]},
        }
        for problem in golden["cases"][name]["differences_between_rounds"]:
            print(f"  NOT DETERMINISTIC: {problem}", flush=True)
    bad = [name for name, case in golden["cases"].items() if case["differences_between_rounds"]]
    if bad:
        print(f"NOT written: rounds differ in {bad}", flush=True)
        return golden
    if out.exists():  # keep the cases not re-recorded now, and the notes
        previous = json.loads(out.read_text(encoding="utf-8"))
        if previous.get("environment") == here:
            golden["cases"] = {**{k: v for k, v in previous["cases"].items() if k not in golden["cases"]},
                               **golden["cases"]}
        golden["notes"] = [*previous.get("notes", []), *notes]
    golden["cases"] = {k: golden["cases"][k] for k in CASES if k in golden["cases"]}
    out.write_text(json.dumps(golden, indent=1) + "\n", encoding="utf-8")
    return golden


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Record the golden results (see the module docstring).")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose code to record (default: this one)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds that must agree (default 2)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the set to write (default tests/golden/CLASS.json, CLASS this machine's ISA class)")
    parser.add_argument("--note", action="append", default=[], help="a note to keep in the set (repeatable)")
    parser.add_argument("--check", action="store_true",
                        help="compare REPO's results with the goldens instead of writing")
    parser.add_argument("--tolerance", action="store_true", help="with --check: compare within the tolerance")
    parser.add_argument("--isa-class", choices=ISA_CLASSES, default=None,
                        help="with --check: compare with this class's set (bit for bit only if it is this machine's)")
    parser.add_argument("cases", nargs="*", help=f"some of {', '.join(CASES)} (default: all)")
    args = parser.parse_args(argv)
    args.cases = args.cases or list(CASES)
    if set(args.cases) - set(CASES):
        parser.error(f"unknown case(s) {sorted(set(args.cases) - set(CASES))}; known: {', '.join(CASES)}")
    if data_root() is None:
        parser.error("set LENET_KERAS_DATA to a folder with mnist/ and cifar10-jpeg/train/")
    here = environment()
    if args.check:
        goldens = load_goldens()
        if args.isa_class is not None:
            goldens = {args.isa_class: goldens[args.isa_class]}
        isa, exact, why = choose(goldens, here, force_tolerance=args.tolerance)
        print(why)
        failed = 0
        for name in args.cases:
            with tempfile.TemporaryDirectory(prefix=f"golden-{name}-") as workdir:
                actual, info = run_case(name, args.repo.resolve(), Path(workdir))
            recorded = goldens[isa]["cases"][name]
            problems = compare(name, recorded["summary"], actual, exact, "bit for bit" if exact else "tolerance",
                               info["precision"])
            if info["precision"] != recorded.get("precision", info["precision"]):
                problems.insert(0, f"ran in {info['precision']}, recorded {recorded['precision']}")
            largest = largest_loss_difference(name, recorded["summary"], actual)
            print(f"{name}: {'OK' if not problems else 'DIFFERS'} ({info['seconds']} s, {info['precision']}; largest "
                  f"loss difference {largest[0]:.2e} relative, {largest[1]})", *problems[:20], sep="\n  ", flush=True)
            failed += bool(problems)
        return 1 if failed else 0
    out = args.out or GOLDEN_DIR / f"{here['isa_class']}.json"
    golden = record(args.repo, args.repeats, out, args.cases, args.note)
    bad = [name for name, case in golden["cases"].items() if case["differences_between_rounds"]]
    print(f"wrote {out}" if not bad else f"did not write {out}; not deterministic: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
