"""Golden results of the runner before its refactor (issue 16): the refactored code must
reproduce them bit for bit on the machine they were recorded on.

Recorded with the original code (commit d00a7e3) in tests/golden/golden.json, five runs:

  mnist_lenet5   `make mnist`: experiments/mnist_lenet5.toml as is (20 epochs of the deck recipe)
  cifar_fast     experiments/cifar_fast.toml, 1 epoch on 1,024 / 256 images of the JPEG copy
  cifar_cnn      experiments/cifar_cnn.toml, 1 epoch on 300 / 100 images of the JPEG copy
  numpy_lenet5   the NumPy engine (`scratch`), 1 epoch on 6,000 / 1,000 MNIST images
  grid2x2        a 2x2 grid sweep (tests/golden/grid2x2.toml), 1 epoch per trial

Compared per run: history.csv without its timing columns (every row, as text, and the sha256
of that text), the manifest's test results (without timings), `final_weights.values_sha256`,
the sha256 of the test probabilities in predictions.npz (the NumPy engine records no weights
digest; this is its digest), and for the sweep trials.csv without its timing column (paths
replaced by <repo> / <runs>) plus every trial's weights digest.

Bit for bit holds only on the same CPU model, number of usable CPUs and TensorFlow / Keras /
NumPy versions (oneDNN kernels and thread splits change the rounding). Elsewhere the test
compares with a tolerance instead of digests (accuracies within 0.02, losses and other numbers
within 2%) and says so in its assertion messages.

Each run is a subprocess `python -m lenet_keras ...` in the repository root (that code, not an
installed copy), with the data of $LENET_KERAS_DATA (MNIST and cifar10-jpeg/); without the data
the test is skipped, and fails in CI (CI=true). The five runs take about 3.5 minutes on 2 busy cores.

Record again (only when a change of behaviour is intended, or on a new machine), with the code
to freeze checked out in REPO (e.g. `git worktree add /tmp/golden <commit>`):

  cd REPO && LENET_KERAS_DATA=/path/to/datasets /path/to/.venv/bin/python \\
      /path/to/tests/test_golden.py --repo REPO --repeats 2 --out /path/to/tests/golden/golden.json

--repeats 2 runs everything twice and refuses to write unless both rounds agree (determinism).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
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
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
GOLDEN_FILE = GOLDEN_DIR / "golden.json"
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
ACCURACY_TOLERANCE = 0.02  # absolute, for accuracies when not bit for bit
RELATIVE_TOLERANCE = 0.02  # for losses and every other number when not bit for bit


# --------------------------------------------------------------------------- the environment


def environment() -> dict:
    """What decides whether results can be bit for bit: CPU model, usable CPUs, library versions.

    The CPU model is read as `lenet_keras.manifest.machine()` reads it (/proc/cpuinfo), without
    importing the package under test.
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
    return {"cpu": cpu, "cpu_count": count, "versions": found}


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
        result = subprocess.run(argv, cwd=repo, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=900)
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
            "git": manifest.get("git"), "module": _module_file(repo, env)}
    return summary, info


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


def _close(column: str, expected, actual) -> bool:
    a, b = _number(expected), _number(actual)
    if a is None or b is None:
        return expected == actual
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if "accuracy" in column or column == "objective":  # the sweep's objective is a val_accuracy
        return abs(a - b) <= ACCURACY_TOLERANCE
    return abs(a - b) <= RELATIVE_TOLERANCE * max(abs(a), abs(b)) + 1e-12


def compare_table(what: str, golden: dict, actual: dict, exact: bool, why: str) -> list[str]:
    """Differences between two `read_table` results (empty when they agree)."""
    problems = []
    if golden["columns"] != actual["columns"]:
        return [f"{what}: columns {actual['columns']} != golden {golden['columns']}"]
    if len(golden["rows"]) != len(actual["rows"]):
        return [f"{what}: {len(actual['rows'])} rows != golden {len(golden['rows'])}"]
    for index, (want, got) in enumerate(zip(golden["rows"], actual["rows"])):
        for column, a, b in zip(golden["columns"], want, got):
            same = a == b if exact else _close(column, a, b)
            if not same:
                problems.append(f"{what} row {index} {column}: {b} != golden {a} ({why})")
    if exact and golden["sha256"] != actual["sha256"]:
        problems.append(f"{what}: sha256 {actual['sha256']} != golden {golden['sha256']}")
    return problems


def compare_values(what: str, golden: dict, actual: dict, exact: bool, why: str) -> list[str]:
    problems = []
    if set(golden) != set(actual):
        return [f"{what}: keys {sorted(actual)} != golden {sorted(golden)}"]
    for key, value in golden.items():
        same = actual[key] == value if exact else _close(key, value, actual[key])
        if not same:
            problems.append(f"{what} {key}: {actual[key]!r} != golden {value!r} ({why})")
    return problems


def compare(name: str, golden: dict, actual: dict, exact: bool, why: str) -> list[str]:
    """Every difference between case `name`'s golden summary and `actual`'s."""
    if CASES[name][2] == "sweep":
        problems = compare_table("trials.csv", golden["trials_csv"], actual["trials_csv"], exact, why)
        if set(golden["trials"]) != set(actual["trials"]):
            return problems + [f"trials {sorted(actual['trials'])} != golden {sorted(golden['trials'])}"]
        for trial, want in golden["trials"].items():
            got = actual["trials"][trial]
            problems += compare_values(f"{trial} test", want["test"], got["test"], exact, why)
            if exact and got["final_weights_sha256"] != want["final_weights_sha256"]:
                problems.append(f"{trial} final_weights.values_sha256 {got['final_weights_sha256']} "
                                f"!= golden {want['final_weights_sha256']}")
        return problems
    problems = compare_table("history.csv", golden["history"], actual["history"], exact, why)
    problems += compare_values("test", golden["test"], actual["test"], exact, why)
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


def load_golden() -> dict:
    return json.loads(GOLDEN_FILE.read_text(encoding="utf-8"))


def mode(golden: dict, here: dict) -> tuple[bool, str]:
    """(bit for bit?, why): exact only on the recording's CPU, CPU count and library versions."""
    recorded = golden["environment"]
    if recorded == here:
        return True, (f"bit for bit: same CPU ({here['cpu']}, {here['cpu_count']} usable) "
                      f"and versions {here['versions']}")
    return False, (f"NOT bit for bit, compared with a tolerance (accuracies +-{ACCURACY_TOLERANCE}, other numbers "
                   f"+-{RELATIVE_TOLERANCE:.0%}), digests not compared: recorded on {recorded}, running on {here}")


# --------------------------------------------------------------------------- the tests

try:
    import pytest
except ImportError:  # recording needs no pytest
    pytest = None

if pytest is not None:

    def test_golden_file_is_consistent():
        """Every recorded table's sha256 is the sha256 of its recorded rows (no hand-edited goldens)."""
        golden = load_golden()
        assert set(golden["cases"]) == set(CASES)
        for name, case in golden["cases"].items():
            table = case["summary"]["trials_csv" if CASES[name][2] == "sweep" else "history"]
            assert sha256_text(csv_text(table["columns"], table["rows"])) == table["sha256"], name
            assert case["command"] == list(CASES[name][0]), f"{name}: the command changed since recording"

    @pytest.mark.parametrize("name", list(CASES))
    def test_reproduces_golden(name, tmp_path):
        """The current code reproduces the original runner's results (issue 16)."""
        if data_root() is None:
            from .conftest import missing_shared  # here: the file also runs as a script, to record

            message = ("$LENET_KERAS_DATA with mnist/ and cifar10-jpeg/train/ "
                       f"({os.environ.get('LENET_KERAS_DATA') or 'unset'})")
            missing_shared(message)
        golden = load_golden()
        exact, why = mode(golden, environment())
        actual, info = run_case(name, REPO, tmp_path)
        assert Path(info["module"]).resolve().parent == (REPO / "lenet_keras").resolve(), info["module"]
        problems = compare(name, golden["cases"][name]["summary"], actual, exact,
                           "bit for bit" if exact else "tolerance")
        assert not problems, (f"golden case {name} ({why}); {len(problems)} difference(s):\n"
                              + "\n".join(problems[:40]))


# --------------------------------------------------------------------------- recording


def record(repo: Path, repeats: int, out: Path, cases: list[str]) -> dict:
    """Run every case `repeats` times with the code in `repo`; the goldens if all rounds agree."""
    repo = repo.resolve()
    sweep_copy = repo / SWEEP_FILE
    if sweep_copy.resolve() != (GOLDEN_DIR / "grid2x2.toml").resolve():
        sweep_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(GOLDEN_DIR / "grid2x2.toml", sweep_copy)  # base is relative to the sweep file
    here = environment()
    golden = {"about": "tests/test_golden.py; issue 16", "environment": here, "cases": {}}
    for name in cases:
        rounds = []
        for attempt in range(repeats):
            workdir = Path(tempfile.mkdtemp(prefix=f"golden-{name}-"))
            try:
                summary, info = run_case(name, repo, workdir)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            print(f"{name} round {attempt + 1}: {info['seconds']} s, module {info['module']}, git {info['git']}",
                  flush=True)
            assert Path(info["module"]).resolve().parent == repo / "lenet_keras", info["module"]
            assert info["machine"]["cpu"] == here["cpu"], (info["machine"], here)
            rounds.append((summary, info))
        differences = [compare(name, rounds[0][0], other, True, "between recording rounds") for other, _ in rounds[1:]]
        golden["cases"][name] = {
            "command": list(CASES[name][0]),
            "summary": rounds[0][0],
            "deterministic_rounds": repeats if not any(differences) else 0,
            "differences_between_rounds": [p for d in differences for p in d],
            "seconds": [info["seconds"] for _, info in rounds],
            "recorded_with": {"git": rounds[0][1]["git"], "machine": rounds[0][1]["machine"],
                              "versions": rounds[0][1]["versions"]},
        }
        for problem in golden["cases"][name]["differences_between_rounds"]:
            print(f"  NOT DETERMINISTIC: {problem}", flush=True)
    if out.exists():  # keep the cases not re-recorded now
        previous = json.loads(out.read_text(encoding="utf-8"))
        if previous.get("environment") == here:
            golden["cases"] = {**{k: v for k, v in previous["cases"].items() if k not in golden["cases"]},
                               **golden["cases"]}
    golden["cases"] = {k: golden["cases"][k] for k in CASES if k in golden["cases"]}
    out.write_text(json.dumps(golden, indent=1) + "\n", encoding="utf-8")
    return golden


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Record the golden results (see the module docstring).")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose code to record (default: this one)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds that must agree (default 2)")
    parser.add_argument("--out", type=Path, default=GOLDEN_FILE)
    parser.add_argument("--check", action="store_true", help="compare REPO's results with --out instead of writing")
    parser.add_argument("cases", nargs="*", help=f"some of {', '.join(CASES)} (default: all)")
    args = parser.parse_args(argv)
    args.cases = args.cases or list(CASES)
    if set(args.cases) - set(CASES):
        parser.error(f"unknown case(s) {sorted(set(args.cases) - set(CASES))}; known: {', '.join(CASES)}")
    if data_root() is None:
        parser.error("set LENET_KERAS_DATA to a folder with mnist/ and cifar10-jpeg/train/")
    if args.check:
        golden = json.loads(args.out.read_text(encoding="utf-8"))
        exact, why = mode(golden, environment())
        print(why)
        failed = 0
        for name in args.cases:
            with tempfile.TemporaryDirectory(prefix=f"golden-{name}-") as workdir:
                actual, info = run_case(name, args.repo.resolve(), Path(workdir))
            problems = compare(name, golden["cases"][name]["summary"], actual, exact,
                               "bit for bit" if exact else "tolerance")
            print(f"{name}: {'OK' if not problems else 'DIFFERS'} ({info['seconds']} s)", *problems[:20], sep="\n  ")
            failed += bool(problems)
        return 1 if failed else 0
    golden = record(args.repo, args.repeats, args.out, args.cases)
    bad = [name for name, case in golden["cases"].items() if case["differences_between_rounds"]]
    print(f"wrote {args.out}; not deterministic: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
