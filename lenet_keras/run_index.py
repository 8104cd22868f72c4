"""The run index: the one place that finds run directories and reads what identifies a run.

A run directory is a folder holding `manifest.json` (`lenet_keras.rundir`), one level under an
experiment's folder (`runs/<experiment>/run-007/`, `numpy-002/`, `trial-003/`) or, with
`depth=2`, two (a sweep's `runs/<sweep>/trial-003-seed-1/` sits one level down too; compare's
folders of folders two). `scan` lists them as `RunRecord`s in `run_order`, never in the order a
directory listing happens to give, and keeps a run whose manifest cannot be read, with the reason
(`RunRecord.problem`), so that callers report it instead of passing over it silently.

The questions every reader asks of a folder are answered here once:
  - `completed_run(folder, config, engine)`: the first completed run of that resolved config
    (`rundir.config_block`; older manifests read through `resolved_config`) and engine (seeds, reproduce and the benchmarks reuse it);
  - `unfinished_run(folder, config, alive)`: the last resumable one (`train --resume`);
  - `engine_of(manifest)`: which engine made a run, in one word;
  - `validation_is_test(manifest)`: whether its per-epoch validation set is the test set;
  - `flatten(config)` / `config_text(value)`: its resolved config with dotted keys, and a value as
    text (compare's groups and `--where`, TensorBoard's HParams: one rendering).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lenet_keras import manifest as manifest_lib

MANIFEST = "manifest.json"


def engine_of(manifest: dict) -> str:
    """The engine that made a run, in one word: "keras" when the manifest names none, else the
    first word of its `engine` ("numpy (lenet_keras.scratch)" -> "numpy"; peers' "keras-deck",
    "pytorch", "airbench94")."""
    words = str(manifest.get("engine") or "keras").split()
    return words[0] if words else "keras"


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """`config` with nested tables flattened to dotted keys (`optimizer.learning_rate`); lists and
    None become their JSON text (`"[0.1307]"`, `"null"`): the value types TensorBoard's HParams holds."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def config_text(value: bool | int | float | str) -> str:
    """A `flatten` value as text: strings as they are, everything else as JSON (`true`, `0.01`, `1.0`)."""
    return value if isinstance(value, str) else json.dumps(value)


def validation_is_test(manifest: dict) -> bool:
    """Whether the run's per-epoch validation set is the test set: the manifest's
    `data.validation_is_test`; a manifest written before that field existed is read from its
    `data.validation` text, which then starts with "the test set" (`lenet_keras.data`)."""
    data = manifest.get("data") or {}
    if "validation_is_test" in data:
        return bool(data["validation_is_test"])
    return str(data.get("validation", "")).startswith("the test set")


def run_order(relative: str) -> tuple:
    """Sort key of a run directory's path relative to the scanned folder: `train`'s `run-NNN` first,
    then every other name; within each, natural order (numbers by value: run-999 before run-1000)."""
    natural = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", relative))
    return (re.fullmatch(r"run-\d+", relative) is None, natural)


@dataclass(frozen=True)
class RunRecord:
    """One run directory: `path`, its `experiment` (the scanned folder's name), and its manifest
    (None when unreadable: then `problem` says why, naming the file)."""

    path: Path
    experiment: str
    manifest: dict[str, Any] | None
    problem: str | None = None

    @property
    def status(self) -> str | None:
        """"completed", "running", "interrupted", "failed" (None: unreadable manifest)."""
        return None if self.manifest is None else self.manifest.get("status")

    @property
    def engine(self) -> str | None:
        """`engine_of(manifest)` (None: unreadable manifest)."""
        return None if self.manifest is None else engine_of(self.manifest)

    @property
    def config(self) -> dict | None:
        """The run's resolved config as this version resolves it (`resolved_config`; None: unreadable manifest)."""
        return None if self.manifest is None else resolved_config(self.manifest.get("config"))


def resolved_config(recorded: Any) -> Any:
    """A manifest's recorded `config` with the keys added to the experiment format since it was
    written filled in with their defaults (which are what runs did before those keys existed), in
    `rundir.config_block`'s JSON form, so an older run of an unchanged recipe compares equal to
    today's config. Returned as recorded when it is not a valid experiment for this version (a key
    since removed, a wrong value): such a run matches no config."""
    from lenet_keras import config as config_lib
    from lenet_keras.errors import ConfigError

    if not isinstance(recorded, dict):
        return recorded
    try:
        return json.loads(json.dumps(config_lib.from_dict(recorded).to_dict()))
    except (ConfigError, TypeError, ValueError):
        return recorded


def read(path: Path, experiment: str | None = None) -> RunRecord:
    """The record of the run directory `path` (its manifest read; a problem recorded, not raised)."""
    path = Path(path)
    try:
        manifest = manifest_lib.read_json(path / MANIFEST)
    except (OSError, ValueError) as error:
        return RunRecord(path, experiment or path.parent.name, None, f"{path / MANIFEST}: unreadable ({error})")
    if not isinstance(manifest, dict):
        return RunRecord(path, experiment or path.parent.name, None, f"{path / MANIFEST}: not a JSON object")
    return RunRecord(path, experiment or path.parent.name, manifest)


def scan(folder: Path, depth: int = 1, pattern: str = "*") -> list[RunRecord]:
    """Every run directory under `folder` whose name matches `pattern` (glob), at most `depth`
    levels down, in `run_order` (relative paths); [] when `folder` does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = set()
    for level in range(1, depth + 1):
        found |= {p.parent for p in folder.glob("/".join(["*"] * (level - 1) + [pattern, MANIFEST]))}
    ordered = sorted(found, key=lambda p: run_order(p.relative_to(folder).as_posix()))
    return [read(path, folder.name) for path in ordered]


def completed_run(folder: Path, config: dict, engine: str = "keras") -> Path | None:
    """The first completed run (in `run_order`) in `folder` made by `engine` whose config equals
    `config`; None when there is none. Unreadable manifests do not qualify."""
    return next((r.path for r in scan(folder)
                 if r.status == "completed" and r.engine == engine and r.config == config), None)


def unfinished_run(folder: Path, config: dict, alive: Callable[[dict], bool]) -> Path | None:
    """The last run (in `run_order`: run-1000 after run-999) in `folder` whose status is "running"
    (its process not `alive`) or "interrupted" and whose config equals `config`; None if none."""
    found = [r.path for r in scan(folder)
             if r.status in ("running", "interrupted") and r.config == config and not alive(r.manifest)]
    return found[-1] if found else None
