"""Hyperparameter sweeps, grid or Optuna, over the one training entry point (`train.run`): the command.

Follows the PyTorch report seed (003, section 5): one training run per point of a cartesian
product of hyperparameters, each logged to TensorBoard and to a pandas CSV, and Optuna
(TPE sampler, median pruner) recommended over grid search.

A sweep file (TOML) names a base experiment, fixed overrides, and a search space; its format is
described in `lenet_keras.sweep_study`'s docstring (where `load` parses it).

Every trial is a normal run: `runs/<sweep>/trial-NNN/` (NNN = the Optuna trial number; with
`repeats = N`, N runs `trial-NNN-seed-S/` whose mean objective is the trial's, `sweep_trial`), plus
`runs/<sweep>/study.db` and `runs/<sweep>/trials.csv`; each trial's run has its HParams session
(`make tensorboard RUNS=runs/<sweep>` -> HPARAMS tab).

Trials live in an Optuna study, also for grids: when a sweep starts, the grid points (or, for
Optuna, one empty slot per requested trial) not yet finished are enqueued as WAITING trials;
every worker claims a WAITING trial atomically through the storage (the way Optuna's own
`Study.ask` pops its queue), so several workers, on one machine or many sharing a database,
never run a trial twice, and running the sweep again continues where it stopped. Workers
record heartbeats; a trial whose worker died (no heartbeat for `sweep_study.GRACE_SECONDS`) is marked
failed and its point enqueued again by the next worker that starts or looks for a trial
(`--worker-only` workers included), exactly once however many workers look.

This module owns the `sweep` command's entry point: `run_sweep` (the coordinator: queue the
missing points, write the HParams config, run one worker in process or start `--workers`
worker processes, show progress, write trials.csv) and `work` (one worker's claim-and-run
loop). The rest lives in:

- `sweep_study`: the sweep file (`load`, `Sweep`; its format), the study's storage
  (SQLite/PostgreSQL), creating/loading the study, queuing and claiming trials, heartbeats, re-queuing dead
  workers' trials (`GRACE_SECONDS`);
- `sweep_trial`: running one claimed trial through `train.run`, its pruning callback;
- `sweep_export`: trials.csv and the TensorBoard HParams summaries.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from lenet_keras import manifest as manifest_lib
from lenet_keras.errors import ConfigError, LenetKerasError
from lenet_keras.sweep_export import write_trials_csv
from lenet_keras.sweep_study import (
    STORAGE_ENV_VAR, Sweep, claim, enqueue_missing, finished_or_queued, open_study_and_storage, requeue_lost_trials,
    storage_url,
)
from lenet_keras.sweep_trial import run_trial


def work(sweep: Sweep, runs_dir: Path, data_dir=None, worker: int = 0, on_trial=None) -> int:
    """Claim and run trials until the queue is empty; returns how many this worker ran.

    Before each claim, trials of dead workers are failed and their points queued again
    (`requeue_lost_trials`), so this worker may run them.
    """
    study, storage = open_study_and_storage(sweep, runs_dir, worker)
    ran = 0
    while True:
        requeue_lost_trials(study)
        trial = claim(study, storage)
        if trial is None:
            return ran
        state = run_trial(sweep, study, storage, trial, runs_dir, data_dir)
        ran += 1
        if on_trial:
            on_trial(trial.number, state, study)


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
    return sum(1 for t in finished if finished_or_queued(t))


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
    study = open_study_and_storage(sweep, runs_dir)[0]
    added = enqueue_missing(sweep, study)
    total = len([t for t in study.get_trials(deepcopy=False) if finished_or_queued(t)])
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
