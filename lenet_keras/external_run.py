"""Run directories for runs made by other programs (another framework's training script, a
reference implementation), so that they are read, tabulated and compared like ours.

    runs/<experiment>/run-NNN/
        manifest.json   experiment, run_id, status "completed", engine, seed (or null), config
                        (the recipe, without the seed), command, versions (the other program's
                        interpreter), machine, data (with what its validation set is), test,
                        training_seconds, wall_seconds, epochs_completed, best, final, notes
        history.csv     per epoch: epoch (0-based), epoch_seconds and whichever of accuracy,
                        loss, val_accuracy, val_loss the program printed

The caller parses the program's output into history rows and test figures; `record_external_run`
checks them, then allocates the directory with `rundir.new_run_dir` (the same numbering as ours)
and writes both files through `manifest.write_text_atomic` / `write_json_atomic`, the manifest
last. Anything missing raises ValueError before a directory exists; a failed write removes the
directory, so no half-written run is left behind. There is no `predictions.npz`: another program
prints figures, not per-image probabilities.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from lenet_keras import config as config_lib
from lenet_keras import manifest as manifest_lib
from lenet_keras import rundir

HISTORY_METRICS = ("accuracy", "loss", "val_accuracy", "val_loss")
"""The per-epoch metrics history.csv may hold besides `epoch` and `epoch_seconds` (ours' names)."""

FRACTIONS = ("accuracy", "val_accuracy", "tta_accuracy")
"""Metrics that are fractions (0..1), never percent."""

VERSION_PACKAGES = ("torch", "tensorflow", "tensorflow-cpu", "keras", "numpy", "airbench", "pillow")
"""The packages `interpreter_versions` asks another interpreter about (those installed are reported)."""

UNSEEDED_NOTE = ("seed: null: the program sets no random seed, so its runs differ in initial weights and "
                 "shuffling; repeated runs measure that spread")

_VERSIONS_CODE = (
    "import json, platform, sys\nfrom importlib import metadata\nfound = {'python': platform.python_version()}\n"
    "for name in sys.argv[1:]:\n    try:\n        found[name] = metadata.version(name)\n"
    "    except metadata.PackageNotFoundError:\n        pass\nprint(json.dumps(found))\n"
)


def interpreter_versions(python: str, packages: tuple[str, ...] = VERSION_PACKAGES) -> dict[str, str]:
    """Ask the interpreter `python` its Python version and the versions of `packages` it has
    installed (their distribution metadata, e.g. torch "2.13.0+cpu"); missing packages are left out.

    Raises:
        RuntimeError: the interpreter cannot be started or fails (its stderr in the message).
    """
    try:
        done = subprocess.run([python, "-c", _VERSIONS_CODE, *packages], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"cannot ask {python} for its versions: {error}") from None
    if done.returncode:
        raise RuntimeError(f"{python} failed to report its versions (exit {done.returncode}): {done.stderr[-1000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def relative_command(argv: list[str], cwd: Path | None = None) -> str:
    """`argv` as one shell-quoted line, absolute paths that exist rewritten relative to `cwd`
    (default: the working directory), e.g. `.venv-other/bin/python ../scripts/train.py 3`."""
    base = Path(cwd or os.getcwd())
    shown = [os.path.relpath(arg, base) if os.path.isabs(arg) and os.path.exists(arg) else arg for arg in argv]
    return shlex.join(shown)


def _number(value: Any, where: str) -> float:
    """`value` as a finite float, else ValueError naming `where`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: {value!r} is not a finite number")
    return number


def check_history(history: list[dict]) -> list[dict]:
    """Checked per-epoch rows (one a completed epoch, in order): each has `epoch_seconds` (>= 0)
    and the same subset of `HISTORY_METRICS` (accuracies fractions 0..1). Returns rows with
    `epoch` (0-based, from the row's position) and float values.

    Raises:
        ValueError: no rows, a row without epoch_seconds, an unknown or missing metric, a value that
            is not a finite number, or an accuracy outside 0..1 (names the epoch and key).
    """
    if not history:
        raise ValueError("no per-epoch rows: the program's output has no completed epoch")
    keys = set(history[0]) - {"epoch"}
    if "epoch_seconds" not in keys:
        raise ValueError("history: the first epoch has no 'epoch_seconds'")
    if unknown := keys - set(HISTORY_METRICS) - {"epoch_seconds"}:
        raise ValueError(f"history: unknown metrics {sorted(unknown)}; allowed: {HISTORY_METRICS}")
    rows = []
    for index, row in enumerate(history):
        if set(row) - {"epoch"} != keys:
            raise ValueError(f"history: epoch {index} has keys {sorted(row)}, the first epoch {sorted(keys)}")
        values = {key: _number(row[key], f"history epoch {index} {key}") for key in sorted(keys)}
        if values["epoch_seconds"] < 0 or any(not 0 <= values[k] <= 1 for k in FRACTIONS if k in values):
            raise ValueError(f"history epoch {index}: {values} has negative seconds or an accuracy outside 0..1")
        rows.append({"epoch": index, **values})
    return rows


def check_test(test: dict) -> dict:
    """Checked test figures: `accuracy` (a fraction 0..1) required; `loss`, `tta_accuracy`
    (fraction) optional; other keys are kept as they are.

    Raises:
        ValueError: no test accuracy, a value that is not a number, or an accuracy outside 0..1.
    """
    if "accuracy" not in test or test["accuracy"] is None:
        raise ValueError("test: no 'accuracy' (the program printed no test accuracy)")
    checked = dict(test)
    for key in ("accuracy", "loss", "tta_accuracy"):
        if test.get(key) is not None:
            checked[key] = _number(test[key], f"test {key}")
    bad = {k: checked[k] for k in FRACTIONS if checked.get(k) is not None and not 0 <= checked[k] <= 1}
    if bad:
        raise ValueError(f"test: {bad} is not a fraction 0..1 (percent given?)")
    return checked


def history_csv(rows: list[dict]) -> str:
    """history.csv's text: `epoch` first, then the other columns sorted by name (as ours)."""
    columns = ["epoch"] + sorted(set(rows[0]) - {"epoch"})
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def summary(rows: list[dict], test: dict) -> dict[str, Any]:
    """The manifest's `epochs_completed`, `final` (the last epoch's metrics), `best` (the epoch of
    best val_accuracy, 0-based, when printed) and `test` blocks of checked rows and test figures."""
    final = {key: rows[-1][key] for key in HISTORY_METRICS if key in rows[-1]}
    block: dict[str, Any] = {"epochs_completed": len(rows), "final": final, "test": test}
    if "val_accuracy" in rows[0]:
        best = max(range(len(rows)), key=lambda i: (rows[i]["val_accuracy"], -i))
        block["best"] = {"epoch": best, "val_accuracy": rows[best]["val_accuracy"]}
    return block


def check_recipe(experiment: str, engine: str, config: dict, seed: int | None, data: dict) -> None:
    """Check the descriptive arguments of `record_external_run`.

    Raises:
        ValueError: the experiment is not a plain folder name, the engine is empty, the config is
            not a non-empty dict or holds `seed`, the seed is not an int or None, or `data` has no
            `description` or `validation`, or no boolean `validation_is_test`.
    """
    if not config_lib.SAFE_NAME.fullmatch(experiment or ""):
        raise ValueError(f"experiment {experiment!r}: use letters, digits, '_', '.', '-' (no leading dot)")
    if not engine:
        raise ValueError("engine: empty; name the program that trained (e.g. 'pytorch')")
    if not isinstance(config, dict) or not config:
        raise ValueError(f"config: {config!r} is not a non-empty dict describing the recipe")
    if "seed" in config:
        raise ValueError("config: holds 'seed'; the seed goes in the manifest's own 'seed' (runs of one recipe "
                         "with different seeds must have equal configs)")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed: {seed!r} is not an int or None")
    if missing := [key for key in ("description", "validation") if not data.get(key)]:
        raise ValueError(f"data: no {missing} (say what the data and the validation set are)")
    if not isinstance(data.get("validation_is_test"), bool):
        raise ValueError("data: no validation_is_test (true or false: is the validation set the test set?)")


def machine_block() -> dict[str, Any]:
    """`manifest.machine()` without TensorFlow's thread settings, which describe the recording
    process, not the other program (give its threads through `record_external_run`'s `machine_extra`)."""
    return {key: value for key, value in manifest_lib.machine().items()
            if key not in ("intra_op_threads", "inter_op_threads")}


def record_external_run(runs_dir: Path, experiment: str, *, engine: str, config: dict, seed: int | None,
                        command: str, history: list[dict], test: dict, wall_seconds: float, versions: dict,
                        data: dict, training_seconds: float | None = None, validation_seconds: float | None = None,
                        notes: list[str] | tuple = (),
                        started_utc: str | None = None, machine_extra: dict | None = None,
                        extra: dict | None = None) -> Path:
    """Write a completed run directory `runs_dir/<experiment>/run-NNN/` for a run made by another program.

    `history`: per-epoch dicts in order (`check_history`); `test`: `check_test`'s figures
    (fractions); `wall_seconds`: the whole command, start to exit; `training_seconds`: the
    program's own training time without its validation passes (None when it prints none, or only
    one that includes them); `validation_seconds`: those passes, when it times them (None: untimed,
    or timed with training); `versions`: the program's interpreter
    (`interpreter_versions`); `data`: at least `description`, `validation` (what its validation
    set is, e.g. "the test set") and `validation_is_test`; `machine_extra` is merged into `machine_block()`
    (e.g. the program's threads); `extra` adds top-level manifest keys. `recorded_by` is this
    process's command line (paths relative). A null `seed` adds `UNSEEDED_NOTE` to `notes`.
    Returns the run directory.

    Raises:
        ValueError: from `check_recipe`, `check_history`, `check_test` (before any directory is made).
        OSError: writing failed (the new directory is removed again).
    """
    check_recipe(experiment, engine, config, seed, data)
    rows, test = check_history(history), check_test(test)
    wall_seconds = _number(wall_seconds, "wall_seconds")
    manifest = {
        "experiment": experiment, "run_id": None, "status": "completed", "error": None, "engine": engine,
        "seed": seed, "config": config, "command": command, "host": socket.gethostname(),
        "recorded_by": manifest_lib.mask_password(relative_command(["python", *sys.argv])), "versions": versions,
        "machine": {**machine_block(), **(machine_extra or {})}, "data": data,
        "started_utc": started_utc, "ended_utc": manifest_lib.utc_now(), "wall_seconds": round(wall_seconds, 3),
        "training_seconds": None if training_seconds is None else _number(training_seconds, "training_seconds"),
        "validation_seconds": None if validation_seconds is None else _number(validation_seconds, "validation_seconds"),
        **summary(rows, test), **(extra or {}),
        "notes": list(notes) + ([UNSEEDED_NOTE] if seed is None else []),
    }
    run_dir = rundir.new_run_dir(Path(runs_dir) / experiment)
    manifest["run_id"] = run_dir.name
    try:
        manifest_lib.write_text_atomic(run_dir / "history.csv", history_csv(rows))
        rundir.write_manifest(run_dir, manifest)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir
