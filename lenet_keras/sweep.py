"""Hyperparameter sweeps, grid or Optuna, over the one training entry point (`train.run`).

Follows the PyTorch report seed (003, section 5): one training run per point of a cartesian
product of hyperparameters, each logged to TensorBoard and to a pandas CSV, and Optuna
(TPE sampler, median pruner) recommended over grid search.

A sweep file (TOML) names a base experiment, fixed overrides, and a search space::

    [sweep]
    base = "mnist_lenet5.toml"      # relative to the sweep file
    method = "grid"                 # or "optuna"
    metric = "val_accuracy"         # a history.csv column; the objective is its best epoch
    direction = "maximize"          # or "minimize"
    trials = 20                     # optuna only: how many trials the study should finish
    storage = ""                    # "" = sqlite:///<runs>/<name>/study.db; or any database URL

    [fixed]                         # overrides applied to every trial
    "train.epochs" = 3

    [space]                         # grid: lists of values
    "optimizer.learning_rate" = [0.01, 0.03, 0.1]
    # optuna: {low, high[, log, step]} for a float/int range, {choices = [...]} for categories

Every trial is a normal run: `runs/<sweep>/trial-NNN/` (NNN = the Optuna trial number), plus
`runs/<sweep>/study.db`, `runs/<sweep>/trials.csv` and TensorBoard HParams summaries
(`make tensorboard RUNS=runs/<sweep>` -> HPARAMS tab).

Trials live in an Optuna study, also for grids: when a sweep starts, the grid points (or, for
Optuna, one empty slot per requested trial) not yet finished are enqueued as WAITING trials;
every worker claims a WAITING trial atomically through the storage (the way Optuna's own
`Study.ask` pops its queue), so several workers, on one machine or many sharing a database,
never run a trial twice, and running the sweep again continues where it stopped. Workers
record heartbeats; a trial whose worker died (no heartbeat for `GRACE_SECONDS`) is marked
failed and its point enqueued again by the next worker that starts or looks for a trial
(`--worker-only` workers included), exactly once however many workers look.
"""

from __future__ import annotations

import itertools
import shlex
import math
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lenet_keras import config as config_lib
from lenet_keras import manifest as manifest_lib
from lenet_keras.errors import ConfigError, LenetKerasError

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
    """A validated sweep file (see the module docstring)."""

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

    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of the grid, in file order (last key varies fastest)."""
        keys = [d.key for d in self.space]
        return [dict(zip(keys, values)) for values in itertools.product(*(d.values for d in self.space))]

    def total_trials(self) -> int:
        """How many trials the sweep asks for: the grid's size, or `trials` for Optuna."""
        return len(self.grid_points()) if self.method == "grid" else self.trials

    def experiment(self, params: dict[str, Any]) -> config_lib.Experiment:
        """The base experiment with the fixed overrides, then `params`, named after the sweep.

        Raises:
            ConfigError: a value the experiment rejects (naming the key).
        """
        overrides = [*self.base_overrides, *(f"{k}={_toml_value(v)}" for k, v in params.items()), f"name={_toml_value(self.name)}"]
        return config_lib.load(self.base_path, overrides)

    def command(self, params: dict[str, Any]) -> str:
        """The `python -m lenet_keras train ...` command line that reruns one trial's point."""
        overrides = [*self.base_overrides, *(f"{k}={_toml_value(v)}" for k, v in params.items())]
        return " ".join(["python -m lenet_keras train", str(self.base_path), *(shlex.quote(o) for o in overrides)])


def _toml_value(value: Any) -> str:
    """A Python value as a TOML literal, for `key=value` overrides."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


_SWEEP_KEYS = {"base", "method", "metric", "direction", "trials", "storage", "seed", "pruner",
               "pruner_startup_trials", "pruner_warmup_epochs", "name"}


def load(path: str | Path, storage: str | None = None) -> Sweep:
    """Read and validate a sweep file; every point's experiment is validated before any trial runs.

    Args:
        path: the sweep file.
        storage: a database URL overriding the file's `storage` (e.g. `postgresql://...`).

    Raises:
        ConfigError: missing file, bad TOML, unknown `[sweep]` key, unknown method, direction
            or metric, an empty search space, a key the base experiment does not have, a value
            it rejects, or an impossible range (low >= high, log range with low <= 0); the
            message names the file and the key.
    """
    path = Path(path)
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
        space=_space(raw.get("space", {}), method, path),
    )
    if method == "optuna" and sweep.trials < 1:
        raise ConfigError(f"{path}: sweep.trials must be >= 1, got {sweep.trials}")
    # Validate before anything runs: the base with the fixed overrides, then every value/endpoint.
    try:
        sweep.experiment({})
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


# --------------------------------------------------------------------------- the Optuna study


STORAGE_ENV_VAR = "LENET_KERAS_SWEEP_STORAGE"
"""The study's database URL when `--storage` is not given (how `run_sweep` hands it to its workers)."""


def storage_url(sweep: Sweep, runs_dir: Path) -> str:
    """The study's database: the sweep's `storage`, else SQLite in `runs/<sweep>/study.db`."""
    if sweep.storage:
        return sweep.storage
    return f"sqlite:///{(Path(runs_dir) / sweep.name / 'study.db').resolve()}"


def _storage(url: str):
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


def _quiet_optuna():
    """Only Optuna's warnings, and none about experimental features (heartbeats, the stale-trial callback)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_study(sweep: Sweep, runs_dir: Path, worker: int = 0):
    """Create or load the sweep's study (sampler seeded with `sweep.seed + worker`)."""
    return _open(sweep, runs_dir, worker)[0]


def _open(sweep: Sweep, runs_dir: Path, worker: int = 0):
    """(study, its RDBStorage): `open_study`, keeping the storage for claims and heartbeats."""
    import optuna

    _quiet_optuna()
    sampler = optuna.samplers.TPESampler(seed=sweep.seed + worker)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=sweep.pruner_startup_trials,
                                          n_warmup_steps=sweep.pruner_warmup_epochs)
              if sweep.pruner == "median" and sweep.method == "optuna" else optuna.pruners.NopPruner())
    if not sweep.storage:
        (Path(runs_dir) / sweep.name).mkdir(parents=True, exist_ok=True)
    storage = _storage(storage_url(sweep, runs_dir))
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


def _finished_or_queued(trial) -> bool:
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
    counted = [t for t in trials if _finished_or_queued(t)]
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


def _claim(study, storage):
    """Atomically take one WAITING trial (set it RUNNING), or None when the queue is empty.

    Why not `study.ask()`: in Optuna 5.0 it pops the queue exactly like this loop
    (`Study._pop_waiting_trial_id`, private), but when the queue is empty it creates a new
    RUNNING trial instead of returning nothing. A worker finishing a grid would then run an
    unplanned point (an Optuna sweep more than `trials`), and that trial could only be told
    apart (no `fixed_params`) after it exists and is counted. ask() also warns that heartbeats
    are meant for `optimize()`. So the same compare-and-set is done here through public storage
    methods: `set_trial_state_values(RUNNING)` returns False (or raises UpdateFinishedTrialError)
    when another worker took the trial first; it is atomic through PostgreSQL's row lock, and on
    SQLite through `BEGIN IMMEDIATE` (see `_storage`).
    """
    import optuna
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _suggest(sweep: Sweep, trial) -> dict[str, Any]:
    """The trial's value of every dimension (a queued grid point's fixed values, or the sampler's)."""
    params = {}
    for d in sweep.space:
        if d.kind in ("grid", "categorical"):
            params[d.key] = trial.suggest_categorical(d.key, list(d.values))
        elif d.kind == "int":
            params[d.key] = trial.suggest_int(d.key, int(d.low), int(d.high), log=d.log, step=int(d.step or 1))
        else:
            params[d.key] = trial.suggest_float(d.key, d.low, d.high, log=d.log, step=d.step)
    return params


class _PruningCallback:
    """Keras callback: reports the sweep metric to Optuna each epoch, stops training when pruned."""

    def __new__(cls, trial, metric: str):
        """A Keras callback instance (Keras is imported only when a trial runs)."""
        import keras

        class PruningCallback(keras.callbacks.Callback):
            """Optuna pruning for one trial; `stop_reason` says why it stopped training, if it did."""

            stop_reason = None

            def on_epoch_end(self, epoch, logs=None):
                """Report `metric` of this epoch (0-based step) and stop when Optuna prunes."""
                value = (logs or {}).get(metric)
                if value is None or not math.isfinite(value):
                    return
                trial.report(float(value), step=epoch)
                if trial.should_prune():
                    self.stop_reason = f"pruned by Optuna's median pruner after epoch {epoch} ({metric} {value:.4f})"
                    self.model.stop_training = True

        return PruningCallback()


def _heartbeat(storage, trial_id: int, stop: threading.Event):
    """Record a heartbeat for `trial_id` every `HEARTBEAT_SECONDS` until `stop` is set."""
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            storage.record_heartbeat(trial_id)
        except Exception:  # noqa: BLE001 - a missed heartbeat only risks a retry
            pass


def _start_heartbeats(study, storage, trial) -> threading.Event:
    """Record one heartbeat for `trial` now and one every `HEARTBEAT_SECONDS` until the returned event is set."""
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    storage.record_heartbeat(trial_id)
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(storage, trial_id, stop), daemon=True).start()
    return stop


def run_trial(sweep: Sweep, study, storage, trial, runs_dir: Path, data_dir=None) -> str:
    """Train one claimed trial as a normal run and tell the study; returns the final state name."""
    from optuna.trial import TrialState

    from lenet_keras import train

    stop = _start_heartbeats(study, storage, trial)
    run_id = f"trial-{trial.number:03d}"
    trial.set_user_attr("run_dir", run_id)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    started = time.perf_counter()
    try:
        params = _suggest(sweep, trial)
        trial.set_user_attr("command", sweep.command(params))
        experiment = sweep.experiment(params)
        pruning = _PruningCallback(trial, sweep.metric) if sweep.method == "optuna" and sweep.pruner != "none" else None
        run_dir = train.run(experiment, runs_dir, data_dir=data_dir, run_id=run_id, verbose=0,
                            callbacks=(pruning,) if pruning else ())
        manifest = manifest_lib.read_json(run_dir / "manifest.json")
        value = _objective(run_dir, sweep)
        trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 3))
        write_hparams(run_dir, params)
        if manifest.get("stopped_early"):
            trial.set_user_attr("stopped_early", manifest["stopped_early"])
            study.tell(trial, state=TrialState.PRUNED)
            return "PRUNED"
        study.tell(trial, value)
        return "COMPLETE"
    except Exception as error:  # noqa: BLE001 - a failed trial is recorded and the sweep goes on
        message = "".join(traceback.format_exception_only(type(error), error)).strip()
        trial.set_user_attr("error", message[:2000])
        trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 3))
        run_dir = Path(runs_dir) / sweep.name / run_id
        if run_dir.is_dir():
            try:
                write_hparams(run_dir, trial.params)
            except Exception:  # noqa: BLE001
                pass
        study.tell(trial, state=TrialState.FAIL)
        return "FAIL"
    finally:
        stop.set()


def _objective(run_dir: Path, sweep: Sweep) -> float:
    """The best epoch's `sweep.metric` in the run's history.csv: its max to maximize, its min to minimize."""
    import pandas as pd

    column = pd.read_csv(run_dir / "history.csv")[sweep.metric]
    return float(column.max() if sweep.direction == "maximize" else column.min())


def work(sweep: Sweep, runs_dir: Path, data_dir=None, worker: int = 0, on_trial=None) -> int:
    """Claim and run trials until the queue is empty; returns how many this worker ran.

    Before each claim, trials of dead workers are failed and their points queued again
    (`requeue_lost_trials`), so this worker may run them.
    """
    study, storage = _open(sweep, runs_dir, worker)
    ran = 0
    while True:
        requeue_lost_trials(study)
        trial = _claim(study, storage)
        if trial is None:
            return ran
        state = run_trial(sweep, study, storage, trial, runs_dir, data_dir)
        ran += 1
        if on_trial:
            on_trial(trial.number, state, study)


# --------------------------------------------------------------------------- HParams and trials.csv

_HPARAMS_METRICS = (
    ("epoch_accuracy", "validation", "validation accuracy"),
    ("epoch_loss", "validation", "validation loss"),
    ("epoch_accuracy", "train", "training accuracy"),
    ("test_accuracy", "test", "test accuracy"),
)


def write_hparams_config(sweep: Sweep, runs_dir: Path) -> None:
    """The HParams experiment summary (hyperparameters and metrics) in `runs/<sweep>/`."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    hparams = []
    for d in sweep.space:
        if d.kind in ("grid", "categorical"):
            hparams.append(hp.HParam(d.key, hp.Discrete(list(d.values))))
        elif d.kind == "int":
            hparams.append(hp.HParam(d.key, hp.IntInterval(int(d.low), int(d.high))))
        else:
            hparams.append(hp.HParam(d.key, hp.RealInterval(d.low, d.high)))
    metrics = [hp.Metric(tag, group=group, display_name=name) for tag, group, name in _HPARAMS_METRICS]
    folder = Path(runs_dir) / sweep.name
    folder.mkdir(parents=True, exist_ok=True)
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        hp.hparams_config(hparams=hparams, metrics=metrics)
    writer.close()


def write_hparams(run_dir: Path, params: dict[str, Any]) -> None:
    """One trial's HParams session summary in its `tensorboard/` folder (the metrics are the
    Keras TensorBoard callback's epoch scalars and the test scalars already there)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(str(run_dir / "tensorboard"))
    with writer.as_default():
        hp.hparams(dict(params), trial_id=run_dir.name)
    writer.close()


def trials_table(sweep: Sweep, study, runs_dir: Path):
    """One row per trial (pandas DataFrame): number, state, every hyperparameter, final and
    best metrics (fractions), epochs run, wall seconds, run directory, command, error."""
    import pandas as pd


    rows = []
    for t in study.get_trials(deepcopy=False):
        params = t.params or t.system_attrs.get("fixed_params", {})
        row = {"trial": t.number, "state": t.state.name.lower()}
        row.update({d.key: params.get(d.key) for d in sweep.space})
        run_dir = Path(runs_dir) / sweep.name / t.user_attrs.get("run_dir", f"trial-{t.number:03d}")
        history = None
        if (run_dir / "history.csv").is_file() and (run_dir / "history.csv").stat().st_size:
            history = pd.read_csv(run_dir / "history.csv")
        manifest = manifest_lib.read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").is_file() else {}
        for metric in METRICS:
            column = history[metric] if history is not None and metric in history else None
            row[f"final {metric}"] = float(column.iloc[-1]) if column is not None and len(column) else None
            best = (column.max() if "accuracy" in metric else column.min()) if column is not None and len(column) else None
            row[f"best {metric}"] = float(best) if best is not None else None
        row["test accuracy"] = manifest.get("test", {}).get("accuracy")
        row["objective"] = t.value
        row["epochs run"] = len(history) if history is not None else 0
        row["wall seconds"] = t.user_attrs.get("wall_seconds")
        row["run directory"] = str(run_dir) if run_dir.is_dir() else ""
        row["command"] = t.user_attrs.get("command", "")
        lost = (f"worker lost (no heartbeat for {GRACE_SECONDS} s); its point was queued again"
                if t.state.name == "FAIL" else "")
        row["error"] = t.user_attrs.get("error", t.user_attrs.get("stopped_early", lost))
        rows.append(row)
    return pd.DataFrame(rows)


def write_trials_csv(sweep: Sweep, study, runs_dir: Path) -> Path:
    """`runs/<sweep>/trials.csv`, written atomically (temporary file, then rename)."""
    path = Path(runs_dir) / sweep.name / "trials.csv"
    temporary = path.with_suffix(".csv.tmp")
    trials_table(sweep, study, runs_dir).to_csv(temporary, index=False)
    os.replace(temporary, path)
    return path


# --------------------------------------------------------------------------- the command


def _progress(sweep: Sweep, total: int):
    """The sweep's tqdm progress bar (on stderr), counting finished trials."""
    from tqdm import tqdm

    return tqdm(total=total, desc=f"sweep {sweep.name}", unit="trial", dynamic_ncols=True, file=sys.stderr)


def _best_text(sweep: Sweep, study) -> str:
    """'best <metric> <value> (trial N)' among the complete trials, or 'best -'."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return "best -"
    best = max(done, key=lambda t: t.value) if sweep.direction == "maximize" else min(done, key=lambda t: t.value)
    return f"best {sweep.metric} {best.value:.4f} (trial {best.number})"


def _done_count(study) -> int:
    """Finished trials that count towards the sweep (a lost worker's trial does not; its retry does)."""
    from optuna.trial import TrialState

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return sum(1 for t in finished if _finished_or_queued(t))


def run_sweep(sweep: Sweep, runs_dir: Path = Path("runs"), data_dir=None, workers: int = 1,
              worker_only: bool = False) -> Path:
    """Run (or continue) a sweep with `workers` worker processes; returns `trials.csv`'s path.

    `worker_only`: only claim and run trials (for extra workers started by hand on other
    machines against the same `--storage`): no new points queued and no trials.csv, but like
    every worker it fails the trials of dead workers and queues their points again.

    Raises:
        ConfigError: `workers` < 1.
        LenetKerasError: a worker process failed.
    """
    runs_dir = Path(runs_dir)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if worker_only:
        work(sweep, runs_dir, data_dir, worker=os.getpid())
        return Path(runs_dir) / sweep.name / "trials.csv"
    study = open_study(sweep, runs_dir)
    added = enqueue_missing(sweep, study)
    write_hparams_config(sweep, runs_dir)
    total = len([t for t in study.get_trials(deepcopy=False) if _finished_or_queued(t)])
    already = _done_count(study)
    print(f"sweep {sweep.name}: {sweep.method}, {total} trials ({already} done before, {added} newly queued); "
          f"study {manifest_lib.mask_password(storage_url(sweep, runs_dir))}", file=sys.stderr)
    bar = _progress(sweep, total)
    bar.update(already)
    bar.set_postfix_str(_best_text(sweep, study))
    if workers == 1:
        def on_trial(number, state, study):
            """Advance the progress bar and print the finished trial's state."""
            bar.update(1)
            bar.set_postfix_str(_best_text(sweep, study))
            bar.write(f"trial {number}: {state.lower()}")

        work(sweep, runs_dir, data_dir, on_trial=on_trial)
    else:
        command = [sys.executable, "-m", "lenet_keras", "sweep", str(sweep.path), "--worker-only",
                   "--runs-dir", str(runs_dir)]
        environment = dict(os.environ)
        if sweep.storage:  # by environment, not argv: the URL may hold a password (ps, manifests)
            environment[STORAGE_ENV_VAR] = sweep.storage
        if data_dir:
            command += ["--data-dir", str(data_dir)]
        processes = [subprocess.Popen(command, env=environment) for _ in range(workers)]
        while any(p.poll() is None for p in processes):
            time.sleep(2)
            done = _done_count(study)
            bar.update(done - bar.n)
            bar.set_postfix_str(_best_text(sweep, study))
        failed = [p.returncode for p in processes if p.returncode]
        if failed:
            raise LenetKerasError(f"{len(failed)} of {workers} sweep workers failed (exit codes {failed})")
        bar.update(_done_count(study) - bar.n)
    bar.close()
    return write_trials_csv(sweep, study, runs_dir)
