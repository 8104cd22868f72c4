"""Helpers shared by the sweep tests (test_sweep, test_sweep_postgres): writing a small sweep
file, and processes racing to claim the trials of one study."""

import json
import subprocess
import sys

from lenet_keras import sweep_study

from .conftest import REPO

FIXED = """
[fixed]
"train.epochs" = {epochs}
"train.histogram_freq" = 0
"data.train_subset" = 600
"data.test_subset" = 100
"""


def write_sweep(tmp_path, name, head, space, epochs=1):
    """`tmp_path/<name>.toml`: a sweep file on experiments/mnist_lenet5.toml with `head` in [sweep],
    the small `FIXED` overrides (`epochs` epochs) and `space` as [space]; returns its path."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[sweep]\nbase = "{REPO / "experiments/mnist_lenet5.toml"}"\n{head}\n'
                    f'{FIXED.format(epochs=epochs)}\n[space]\n{space}\n')
    return path


# One claiming worker: claims trials until the queue is empty (no training), each held for a
# moment so that the workers interleave; prints the claimed trial numbers as JSON. "ready" then
# a line on stdin is a barrier, so that all workers start claiming at the same time. Reads are
# slowed down to widen the races a claim must survive: the list of WAITING trials is often stale
# by the time a worker tries one (a claim that ignores "someone else took it" runs it twice),
# and a trial read for update stays WAITING a while before it is set RUNNING (without the
# database's lock, two workers then both set it).
CLAIMER = """
import json, sys, time
import optuna
from optuna.storages._rdb import models
from lenet_keras import sweep_study

find = models.TrialModel.find_or_raise_by_id
def slow_find(trial_id, session, for_update=False):
    trial = find(trial_id, session, for_update)
    if for_update:
        time.sleep(0.02)
    return trial
models.TrialModel.find_or_raise_by_id = slow_find
get_trials = optuna.Study.get_trials
def slow_get_trials(self, *args, **kwargs):
    trials = get_trials(self, *args, **kwargs)
    time.sleep(0.02)
    return trials
optuna.Study.get_trials = slow_get_trials

sweep_study.quiet_optuna()
storage = sweep_study.rdb_storage(sys.argv[1])
study = optuna.load_study(study_name=sys.argv[2], storage=storage)
print("ready", flush=True)
sys.stdin.readline()
claimed = []
while (trial := sweep_study.claim(study, storage)) is not None:
    claimed.append(trial.number)
    time.sleep(0.02)
    try:  # a trial claimed twice shows in the printed numbers, not as a crash
        study.tell(trial, float(trial.number), skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
print(json.dumps(claimed), flush=True)
"""


def race_claimers(url: str, study_name: str, trials: int = 30, workers: int = 3) -> list[list[int]]:
    """Queue `trials` trials in a new study, let `workers` processes race to claim them all
    (`CLAIMER`); returns the trial numbers each process claimed."""
    import optuna

    sweep_study.quiet_optuna()
    storage = sweep_study.rdb_storage(url)
    study = optuna.create_study(study_name=study_name, storage=storage)
    for x in range(trials):
        study.enqueue_trial({"x": x})
    storage.engine.dispose()

    processes = [subprocess.Popen([sys.executable, "-c", CLAIMER, url, study_name], cwd=REPO, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(workers)]
    try:
        assert all(p.stdout.readline().strip() == "ready" for p in processes)
        for p in processes:
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=300)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in processes] == [0] * workers
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]
