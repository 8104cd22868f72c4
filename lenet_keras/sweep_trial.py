"""One trial of a sweep: train a claimed trial's point as a normal run and tell the study.

Owns: the trial's hyperparameter values (a queued grid point's, or the sampler's), running it
through `lenet_keras.train.run` in `runs/<sweep>/trial-NNN/` with heartbeats, the Keras callback
that reports the sweep metric to Optuna and stops a pruned trial, the objective (the best
epoch's metric in history.csv), and recording the outcome (COMPLETE, PRUNED or FAIL).
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


def run_trial(sweep: Sweep, study, storage, trial, runs_dir: Path, data_dir=None) -> str:
    """Train one claimed trial as a normal run and tell the study; returns the final state name."""
    from optuna.trial import TrialState

    from lenet_keras import train

    stop = sweep_study.start_heartbeats(study, storage, trial)
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
        value = objective(run_dir, sweep)
        trial.set_user_attr("wall_seconds", round(time.perf_counter() - started, 3))
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
        study.tell(trial, state=TrialState.FAIL)
        return "FAIL"
    finally:
        stop.set()


def objective(run_dir: Path, sweep: Sweep) -> float:
    """The best epoch's `sweep.metric` in the run's history.csv: its max to maximize, its min to minimize."""
    import pandas as pd

    column = pd.read_csv(run_dir / "history.csv")[sweep.metric]
    return float(column.max() if sweep.direction == "maximize" else column.min())
