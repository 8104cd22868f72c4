"""Sweep files and the sweep's Optuna study: what a sweep is and where its trials live.

A sweep file (TOML, read by `load`) names a base experiment, fixed overrides, and a search space::

    [sweep]
    base = "mnist_lenet5.toml"      # relative to the sweep file
    method = "grid"                 # or "optuna"
    metric = "val_accuracy"         # a history.csv column; the objective is its best epoch
    direction = "maximize"          # or "minimize"
    trials = 20                     # optuna only: how many trials the study should finish
    storage = ""                    # "" = sqlite:///<runs>/<name>/study.db; or any database URL
    repeats = 1                     # runs per trial, seeds seed..seed+N-1; the objective is their mean

    [fixed]                         # overrides applied to every trial
    "train.epochs" = 3

    [space]                         # grid: lists of values
    "optimizer.learning_rate" = [0.01, 0.03, 0.1]
    # optuna: {low, high[, log, step]} for a float/int range, {choices = [...]} for categories

`repeats = N` (an integer >= 1, default 1): every trial trains N normal runs, with the
experiment's `seed` (the base file's, a `[fixed]` or `[space]` override of `seed`: not
`[sweep] seed`, which seeds the TPE sampler) plus 0, 1, ..., N-1 (`Sweep.seeds`), and its
objective is the mean of the N runs' objectives. Consecutive seeds, rather than seeds drawn at
random, so that every trial is compared on the same seeds and a rerun by hand is a short loop.

Owns: reading and validating a sweep file (`load`, `Sweep`, `Dimension`); the study's storage
(`storage_url`: SQLite in `runs/<sweep>/study.db` or any database URL such as PostgreSQL,
`rdb_storage`: Optuna's RDBStorage with heartbeats, SQLite transactions as `BEGIN IMMEDIATE`);
creating or loading the study (`open_study_and_storage`); queuing the points not
yet covered (`enqueue_missing`); claiming the next WAITING trial atomically (`claim`); worker
heartbeats (`start_heartbeats`); and failing dead workers' trials and queuing their points again
(`requeue_lost_trials`, after `GRACE_SECONDS` without a heartbeat, the one place that grace
period is set).
"""

from __future__ import annotations

import itertools
import math
import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lenet_keras import config as config_lib
from lenet_keras.errors import ConfigError

METHODS = ("grid", "optuna")
DIRECTIONS = ("maximize", "minimize")
METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")
HEARTBEAT_SECONDS = 20
"""How often a worker records, in the study, that its RUNNING trial is alive."""
GRACE_SECONDS = 120
"""A RUNNING trial without a heartbeat for this long is considered lost (its worker died): it is
marked failed and its point queued again. The one place this grace period is set."""
SQLITE_BUSY_TIMEOUT_SECONDS = 120
"""How long a SQLite worker waits for another worker's write lock before giving up."""


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter of the search space, named by its experiment key (`optimizer.learning_rate`).

    kind "grid"/"categorical" use `values`; "float"/"int" use `low`, `high`, `log`, `step`.
    """

    key: str
    kind: str
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file (its format: this module's docstring)."""

    name: str
    path: Path
    base_path: Path
    base_overrides: tuple[str, ...]
    method: str
    metric: str
    direction: str
    trials: int
    storage: str
    seed: int
    pruner: str
    pruner_startup_trials: int
    pruner_warmup_epochs: int
    space: tuple[Dimension, ...] = field(default_factory=tuple)
    repeats: int = 1

    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of the grid, in file order (last key varies fastest)."""
        keys = [d.key for d in self.space]
        return [dict(zip(keys, values)) for values in itertools.product(*(d.values for d in self.space))]

    def total_trials(self) -> int:
        """How many trials the sweep asks for: the grid's size, or `trials` for Optuna."""
        return len(self.grid_points()) if self.method == "grid" else self.trials

    def experiment(self, params: dict[str, Any], seed: int | None = None) -> config_lib.Experiment:
        """The base experiment with the fixed overrides, then `params` (then `seed=seed` when
        given), named after the sweep.

        Raises:
            ConfigError: a value the experiment rejects (naming the key).
        """
        overrides = [*self._overrides(params, seed), f"name={_toml_value(self.name)}"]
        return config_lib.load(self.base_path, overrides)

    def seeds(self, params: dict[str, Any]) -> list[int]:
        """The experiment seeds of one trial at `params`: the point's own `seed` plus 0..repeats-1.

        Raises:
            ConfigError: a value the experiment rejects (naming the key).
        """
        first = self.experiment(params).seed
        return [first + k for k in range(self.repeats)]

    def command(self, params: dict[str, Any], seeds: list[int] | None = None) -> str:
        """The `python -m lenet_keras train ...` command line that reruns one trial's point; with
        several `seeds`, a shell loop running it once per seed (`seed=$s`)."""
        words = ["python -m lenet_keras train", str(self.base_path), *(shlex.quote(o) for o in self._overrides(params))]
        if not seeds or len(seeds) == 1:
            return " ".join(words + ([f"seed={seeds[0]}"] if seeds and self.repeats > 1 else []))
        return f"for s in {' '.join(map(str, seeds))}; do {' '.join(words)} seed=$s; done"

    def _overrides(self, params: dict[str, Any], seed: int | None = None) -> list[str]:
        """`key=value` overrides: the fixed ones, then `params`, then `seed` when given."""
        seeded = [f"seed={seed}"] if seed is not None else []
        return [*self.base_overrides, *(f"{k}={_toml_value(v)}" for k, v in params.items()), *seeded]


def _toml_value(value: Any) -> str:
    """A Python value as a TOML literal, for `key=value` overrides."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


_SWEEP_KEYS = {"base", "method", "metric", "direction", "trials", "storage", "seed", "pruner",
               "pruner_startup_trials", "pruner_warmup_epochs", "name", "repeats"}


def load(path: str | Path, storage: str | None = None) -> Sweep:
    """Read and validate a sweep file; every point's experiment is validated before any trial runs.

    Args:
        path: the sweep file, or the bare name of a shipped one (`config.find_experiment_file`).
        storage: a database URL overriding the file's `storage` (e.g. `postgresql://...`).

    Raises:
        ConfigError: missing file, bad TOML, unknown `[sweep]` key, unknown method, direction
            or metric, an empty search space, a key the base experiment does not have, a value
            it rejects, or an impossible range (low >= high, log range with low <= 0); the
            message names the file and the key.
    """
    path = config_lib.find_experiment_file(path)
    raw = config_lib.read_toml(path, "sweep")
    unknown_tables = set(raw) - {"sweep", "fixed", "space"}
    if unknown_tables:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown_tables)}; a sweep file has [sweep], [fixed], [space]")
    head = raw.get("sweep", {})
    for key in head:
        if key not in _SWEEP_KEYS:
            raise ConfigError(f"{path}: unknown key sweep.{key}; known keys: {', '.join(sorted(_SWEEP_KEYS))}")

    def pick(key, default, allowed=None, kind=str):
        """`[sweep] key` checked for type `kind` and membership in `allowed` (ConfigError otherwise)."""
        value = head.get(key, default)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            raise ConfigError(f"{path}: sweep.{key} must be {kind.__name__}, got {value!r}")
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{path}: sweep.{key} must be one of {', '.join(allowed)}, got {value!r}")
        return value

    if "base" not in head:
        raise ConfigError(f"{path}: sweep.base is missing: the experiment file the trials start from")
    base_path = (path.parent / pick("base", "")).resolve()
    method = pick("method", "grid", METHODS)
    fixed = raw.get("fixed", {})
    base_overrides = tuple(f"{k}={_toml_value(v)}" for k, v in _flatten(fixed))
    name = pick("name", path.stem)
    if not config_lib.SAFE_NAME.fullmatch(name):
        raise ConfigError(f"{path}: sweep.name {name!r} must be a folder name (letters, digits, '_', '.', '-')")
    sweep = Sweep(
        name=name, path=path, base_path=base_path, base_overrides=base_overrides, method=method,
        metric=pick("metric", "val_accuracy", METRICS), direction=pick("direction", "maximize", DIRECTIONS),
        trials=pick("trials", 10, kind=int), storage=storage if storage is not None else pick("storage", ""),
        seed=pick("seed", 0, kind=int), pruner=pick("pruner", "median", ("median", "none")),
        pruner_startup_trials=pick("pruner_startup_trials", 3, kind=int),
        pruner_warmup_epochs=pick("pruner_warmup_epochs", 1, kind=int),
        space=_space(raw.get("space", {}), method, path), repeats=pick("repeats", 1, kind=int),
    )
    for key, value in (("trials", sweep.trials if method == "optuna" else 1), ("repeats", sweep.repeats)):
        if value < 1:
            raise ConfigError(f"{path}: sweep.{key} must be an integer >= 1, got {value}")
    # Validate before anything runs: the base with the fixed overrides, then every value/endpoint.
    try:
        sweep.experiment({}, seed=sweep.seeds({})[-1])  # the base, and its last repeat's seed
        for dimension in sweep.space:
            candidates = dimension.values or (dimension.low, dimension.high)
            for value in candidates:
                sweep.experiment({dimension.key: int(value) if dimension.kind == "int" else value})
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return sweep


def _flatten(table: dict, prefix: str = ""):
    """(dotted key, value) of every leaf of a nested TOML table."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _space(raw: dict, method: str, path: Path) -> tuple[Dimension, ...]:
    """The `[space]` table as dimensions (ConfigError naming the file and key when one is malformed)."""
    if not raw:
        raise ConfigError(f"{path}: the search space [space] is empty; give at least one hyperparameter")
    dimensions = []
    for key, spec in raw.items():
        where = f"{path}: space.{key}"
        if isinstance(spec, list):
            if not spec:
                raise ConfigError(f"{where}: an empty list of values")
            if len(set(map(repr, spec))) != len(spec):
                raise ConfigError(f"{where}: values repeat: {spec}")
            dimensions.append(Dimension(key, "grid" if method == "grid" else "categorical", tuple(spec)))
            continue
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a list of values or a table {{low, high}} / {{choices}}, got {spec!r}")
        if method == "grid":
            raise ConfigError(f"{where}: a grid needs a list of values, got a range {spec!r}")
        if "choices" in spec:
            choices = spec["choices"]
            if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: {{choices = [...]}} takes one non-empty list and nothing else")
            dimensions.append(Dimension(key, "categorical", tuple(choices)))
            continue
        extra = set(spec) - {"low", "high", "log", "step"}
        if extra or not {"low", "high"} <= set(spec):
            raise ConfigError(f"{where}: a range is {{low, high[, log, step]}}, got keys {sorted(spec)}")
        low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise ConfigError(f"{where}: low and high must be numbers, got {low!r}, {high!r}")
        if not low < high:
            raise ConfigError(f"{where}: impossible range: low ({low}) must be < high ({high})")
        if log and low <= 0:
            raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
        kind = "int" if isinstance(low, int) and isinstance(high, int) and not isinstance(step, float) else "float"
        dimensions.append(Dimension(key, kind, (), float(low), float(high), bool(log), step))
    return tuple(dimensions)


STORAGE_ENV_VAR = "LENET_KERAS_SWEEP_STORAGE"
"""The study's database URL when `--storage` is not given (how `run_sweep` hands it to its workers)."""


def storage_url(sweep: Sweep, runs_dir: Path) -> str:
    """The study's database: the sweep's `storage`, else SQLite in `runs/<sweep>/study.db`."""
    if sweep.storage:
        return sweep.storage
    return f"sqlite:///{(Path(runs_dir) / sweep.name / 'study.db').resolve()}"


def rdb_storage(url: str):
    """Optuna's RDBStorage with heartbeats; for SQLite, every transaction is `BEGIN IMMEDIATE`.

    Python's sqlite3 driver runs SELECTs outside any transaction, so two workers could both
    read a trial as WAITING and both set it RUNNING. Taking SQLite's write lock at the start of
    each transaction (the SQLAlchemy recipe for pysqlite) makes the read-then-claim atomic;
    waiting for the lock is bounded by `SQLITE_BUSY_TIMEOUT_SECONDS`. Server databases
    (PostgreSQL) get Optuna's row locks (`SELECT ... FOR UPDATE`) instead.

    A RUNNING trial without a heartbeat for `GRACE_SECONDS` is failed by `requeue_lost_trials`,
    which hands it to `_requeue_lost` (Optuna's public heartbeat-stale callback).
    """
    import optuna
    import sqlalchemy

    sqlite = url.startswith("sqlite")
    kwargs = ({"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "isolation_level": None}} if sqlite
              else {"pool_pre_ping": True})
    storage = optuna.storages.RDBStorage(
        url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
        heartbeat_stale_trial_callback=_requeue_lost,
    )
    if sqlite:
        sqlalchemy.event.listen(storage.engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
    return storage


def quiet_optuna():
    """Only Optuna's warnings, and none about experimental features (heartbeats, the stale-trial callback)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_study_and_storage(sweep: Sweep, runs_dir: Path, worker: int = 0):
    """Create or load the sweep's study (sampler seeded with `sweep.seed + worker`); returns
    (study, its RDBStorage), the storage for claims and heartbeats."""
    import optuna

    quiet_optuna()
    sampler = optuna.samplers.TPESampler(seed=sweep.seed + worker)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=sweep.pruner_startup_trials,
                                          n_warmup_steps=sweep.pruner_warmup_epochs)
              if sweep.pruner == "median" and sweep.method == "optuna" else optuna.pruners.NopPruner())
    if not sweep.storage:
        (Path(runs_dir) / sweep.name).mkdir(parents=True, exist_ok=True)
    storage = rdb_storage(storage_url(sweep, runs_dir))
    study = optuna.create_study(study_name=sweep.name, storage=storage, sampler=sampler, pruner=pruner,
                                direction=sweep.direction, load_if_exists=True)
    return study, storage


def _requeue_lost(study, trial) -> None:
    """Queue a lost trial's point again (its grid point, or an empty Optuna slot), noting `retry_of`.

    Optuna's heartbeat-stale callback: `fail_stale_trials` calls it only in the process whose
    update moved the trial from RUNNING to FAIL, so the point is queued once even when several
    workers look for lost trials at the same moment.
    """
    study.enqueue_trial(trial.system_attrs.get("fixed_params", trial.params), user_attrs={"retry_of": trial.number})


def requeue_lost_trials(study) -> None:
    """Mark RUNNING trials without a heartbeat for `GRACE_SECONDS` failed and queue their points again.

    Every worker does this before each claim, so a `--worker-only` worker also recovers the
    trials of dead workers, not only a coordinating `sweep` start.
    """
    import optuna

    optuna.storages.fail_stale_trials(study)


def finished_or_queued(trial) -> bool:
    """Trials that count towards the sweep: done, running, waiting, or failed by the training itself."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING):
        return True
    return trial.state == TrialState.FAIL and "error" in trial.user_attrs  # lost workers' trials are retried


def enqueue_missing(sweep: Sweep, study) -> int:
    """Enqueue the grid points (or Optuna slots) that no trial covers yet; returns how many.

    Run this from one process before starting workers (the `sweep` command does).
    """
    requeue_lost_trials(study)
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if finished_or_queued(t)]
    if sweep.method == "grid":
        covered = {_point_key(t.system_attrs.get("fixed_params", t.params)) for t in counted}
        missing = [p for p in sweep.grid_points() if _point_key(p) not in covered]
        for point in missing:
            study.enqueue_trial(point)
        return len(missing)
    missing = max(0, sweep.trials - len(counted))
    for _ in range(missing):
        study.enqueue_trial({})
    return missing


def _point_key(params: dict) -> tuple:
    """A hashable, order-free key of one grid point."""
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def claim(study, storage):
    """Atomically take one WAITING trial (set it RUNNING), or None when the queue is empty.

    Why not `study.ask()`: in Optuna 5.0 it pops the queue exactly like this loop
    (`Study._pop_waiting_trial_id`, private), but when the queue is empty it creates a new
    RUNNING trial instead of returning nothing. A worker finishing a grid would then run an
    unplanned point (an Optuna sweep more than `trials`), and that trial could only be told
    apart (no `fixed_params`) after it exists and is counted. ask() also warns that heartbeats
    are meant for `optimize()`. So the same compare-and-set is done here through public storage
    methods: `set_trial_state_values(RUNNING)` returns False (or raises UpdateFinishedTrialError)
    when another worker took the trial first; it is atomic through PostgreSQL's row lock, and on
    SQLite through `BEGIN IMMEDIATE` (see `rdb_storage`).

    The claimed trial gets its first heartbeat right away: Optuna's `fail_stale_trials` only
    looks at trials that have one, so a worker dying between the claim and its first heartbeat
    would otherwise leave the trial RUNNING for ever.
    """
    import optuna
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                storage.record_heartbeat(trial_id)  # at once: a trial without one is never found lost
                return optuna.Trial(study, trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def missed_heartbeats_to_stop() -> int:
    """Consecutive failed heartbeats after which a worker gives its trial up: the most that still
    leaves its last recorded heartbeat younger than `GRACE_SECONDS` (5 for 120 s / 20 s)."""
    return max(1, math.ceil(GRACE_SECONDS / HEARTBEAT_SECONDS) - 1)


class Heartbeats:
    """Records that a trial is alive every `HEARTBEAT_SECONDS` in a daemon thread, until `stop()`.

    A failed heartbeat (database unreachable) is retried at the next beat; after
    `missed_heartbeats_to_stop()` failures in a row, `lost` is set: other workers will soon find
    the trial lost and queue its point again, so this worker must stop training it (the sweep's
    `HeartbeatWatch` callback does) and not report it, or the point would run twice.
    """

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self.lost, self._stop = threading.Event(), threading.Event()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        missed, limit = 0, missed_heartbeats_to_stop()
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.storage.record_heartbeat(self.trial_id)
                missed = 0
            except Exception as error:  # noqa: BLE001 - any storage failure counts as a missed heartbeat
                missed += 1
                self.error = f"{type(error).__name__}: {error}"[:300]
                if missed >= limit:
                    self.lost.set()
                    return

    def stop(self) -> None:
        """Stop recording heartbeats (the trial was told, or failed)."""
        self._stop.set()


def start_heartbeats(study, storage, trial) -> Heartbeats:
    """Record one heartbeat for `trial` now and one every `HEARTBEAT_SECONDS` until `.stop()`."""
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    storage.record_heartbeat(trial_id)
    return Heartbeats(storage, trial_id)


SPREAD_COLUMNS = ("seeds", "objective per seed", "objective min", "objective max", "objective std")
"""trials.csv's columns (and the Optuna trial's user attributes) of a sweep with `repeats` > 1."""


def seed_spread(seeds: list[int], values: list[float]) -> dict[str, Any]:
    """The spread of one trial's per-seed objectives: {SPREAD_COLUMNS name: value}.

    `seeds` and `objective per seed` are lists (in seed order); `objective std` is the sample
    standard deviation (n - 1 in the denominator; 0.0 for a single seed).
    """
    import statistics

    return {"seeds": list(seeds), "objective per seed": [float(v) for v in values],
            "objective min": float(min(values)), "objective max": float(max(values)),
            "objective std": float(statistics.stdev(values)) if len(values) > 1 else 0.0}


def spread_columns(user_attrs: dict[str, Any]) -> dict[str, Any]:
    """trials.csv's spread columns from a trial's user attributes (lists as space-separated
    text; None where the trial did not record them, e.g. pruned or failed)."""
    row = {}
    for key in SPREAD_COLUMNS:
        value = user_attrs.get(key)
        row[key] = " ".join(f"{v:.10g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) else value
    return row
