"""One trial of a sweep: train a claimed trial's point as a normal run and tell the study.

Owns: the trial's hyperparameter values (a queued grid point's, or the sampler's), running it
through `lenet_keras.train.run` in `runs/<sweep>/trial-NNN/` with heartbeats (with `repeats` =
N > 1: N runs, `trial-NNN-seed-S/`, one per seed, `run_trial`), the Keras callback
that reports the sweep metric to Optuna and stops a pruned trial, the objective (the best
epoch's metric in history.csv; with several seeds their mean), and recording the outcome
(COMPLETE, PRUNED or FAIL).
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from lenet_keras import manifest as manifest_lib
from lenet_keras import sweep_study
from lenet_keras.sweep_study import Sweep


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


def run_ids(number: int, seeds: list[int]) -> list[str]:
    """The run directory names of trial `number`: `trial-NNN` for one seed (as without `repeats`),
    else `trial-NNN-seed-S` per seed (flat, so `runs/<sweep>/` stays a folder of normal runs)."""
    if len(seeds) == 1:
        return [f"trial-{number:03d}"]
    return [f"trial-{number:03d}-seed-{seed}" for seed in seeds]


def run_trial(sweep: Sweep, study, storage, trial, runs_dir: Path, data_dir=None) -> str:
    """Train one claimed trial as `sweep.repeats` normal runs and tell the study; returns the final
    state name: COMPLETE, PRUNED, FAIL, or LOST (its heartbeats failed, `sweep_study.Heartbeats`:
    training stopped and the trial is not told, so it stays RUNNING until a worker finds it lost
    and queues its point again).

    The runs use the seeds `sweep.seeds(params)` (one run, the experiment's own seed, without
    `repeats`) in the folders `run_ids`; the objective told to Optuna is the mean of the runs'
    objectives (`objective`). With several seeds the trial's user attributes also hold
    `run_dirs` and, once every seed has run, `sweep_study.seed_spread` (`seeds`, `objective per
    seed`, min, max, sample standard deviation).

    Pruning with several seeds: only the first seed's run reports its metric to Optuna each
    epoch and can be pruned; a pruned first seed prunes the trial and the other seeds are not
    trained. The pruner so compares like with like (every trial's first seed, each epoch
    reported once) and pruning saves the whole trial's time; the later seeds train to the end.
    A seed whose training fails fails the trial (the error names the seed); a trial whose worker
    dies is queued again whole (`sweep_study.requeue_lost_trials`), its retry runs every seed
    in new folders.
    """
    from optuna.trial import TrialState

    heartbeats = sweep_study.start_heartbeats(study, storage, trial)
    trial.set_user_attr("run_dir", f"trial-{trial.number:03d}")
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    started, seed = time.perf_counter(), None
    try:
        params = _suggest(sweep, trial)
        seeds = sweep.seeds(params)
        ids = run_ids(trial.number, seeds)
        trial.set_user_attr("run_dir", ids[0])
        if len(seeds) > 1:
            trial.set_user_attr("run_dirs", ids)
        trial.set_user_attr("command", sweep.command(params, seeds))
        values = []
        for seed, run_id in zip(seeds, ids):
            value, stopped = _train_one(sweep, trial, params, seed if len(seeds) > 1 else None, run_id,
                                        runs_dir, data_dir, prune=not values, heartbeats=heartbeats)
            if heartbeats.lost.is_set():  # left RUNNING: the worker that finds it lost queues it again
                return "LOST"
            values.append(value)
            if stopped:
                trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 3))
                trial.set_user_attr("stopped_early", stopped)
                study.tell(trial, state=TrialState.PRUNED)
                return "PRUNED"
        trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 3))
        if len(seeds) > 1:
            for key, spread in sweep_study.seed_spread(seeds, values).items():
                trial.set_user_attr(key, spread)
        study.tell(trial, sum(values) / len(values))
        return "COMPLETE"
    except Exception as error:  # noqa: BLE001 - a failed trial is recorded and the sweep goes on
        message = "".join(traceback.format_exception_only(type(error), error)).strip()
        trial.set_user_attr("error", (f"seed {seed}: " if seed is not None and sweep.repeats > 1 else "") + message[:2000])
        trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 3))
        study.tell(trial, state=TrialState.FAIL)
        return "FAIL"
    finally:
        heartbeats.stop()


class HeartbeatWatch:
    """Keras callback: stops training after the batch in which the trial's heartbeats were lost
    (`sweep_study.Heartbeats.lost`), saying why in `stop_reason`."""

    def __new__(cls, heartbeats: sweep_study.Heartbeats):
        """A Keras callback instance (Keras is imported only when a trial runs)."""
        import keras

        class Watch(keras.callbacks.Callback):
            """Stops training once `heartbeats.lost` is set."""

            stop_reason = None

            def on_train_batch_end(self, batch, logs=None):
                """Stop training if the heartbeats were lost."""
                if heartbeats.lost.is_set() and not self.stop_reason:
                    self.stop_reason = (f"{sweep_study.missed_heartbeats_to_stop()} heartbeats in a row failed "
                                        f"({heartbeats.error}); stopped so that the trial is not run twice: "
                                        "another worker queues it again")
                    self.model.stop_training = True

        return Watch()


def _train_one(sweep: Sweep, trial, params: dict, seed: int | None, run_id: str, runs_dir: Path, data_dir,
               prune: bool, heartbeats: sweep_study.Heartbeats) -> tuple[float, str | None]:
    """Train one run of a trial (with `seed=seed` when given) in `runs/<sweep>/<run_id>/`, with the
    pruning callback when `prune` and the sweep prunes, and `HeartbeatWatch(heartbeats)`; returns
    (its objective, why it stopped early or None)."""
    from lenet_keras import train

    pruning = (_PruningCallback(trial, sweep.metric)
               if prune and sweep.method == "optuna" and sweep.pruner != "none" else None)
    callbacks = ((pruning,) if pruning else ()) + (HeartbeatWatch(heartbeats),)
    run_dir = train.run(sweep.experiment(params, seed), runs_dir, data_dir=data_dir, run_id=run_id, verbose=0,
                        callbacks=callbacks)
    manifest = manifest_lib.read_json(run_dir / "manifest.json")
    return objective(run_dir, sweep), manifest.get("stopped_early")


def objective(run_dir: Path, sweep: Sweep) -> float:
    """The best epoch's `sweep.metric` in the run's history.csv: its max to maximize, its min to minimize."""
    import pandas as pd

    column = pd.read_csv(run_dir / "history.csv")[sweep.metric]
    return float(column.max() if sweep.direction == "maximize" else column.min())
