"""Sweeps on real MNIST subsets: a 2x2 grid, an Optuna study on SQLite with a trial the pruner
stops, two worker processes on one study, claiming processes racing on SQLite, a dead worker's
trial queued again by a `--worker-only` start, resuming, a failing trial, HParams summaries in
the event files, the report's figures, and the errors a sweep file can cause before any trial
runs."""

import dataclasses
import sqlite3
import time

import pandas as pd
import pytest

from lenet_keras import sweep, sweep_report, sweep_study, sweep_trial
from lenet_keras.errors import ConfigError

from .conftest import REPO, assert_png
from .sweep_helpers import race_claimers, write_sweep


def _hparams_events(folder):
    """{plugin content kind: [summary values]} for the HParams summaries under `folder`."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2

    found = []
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    found.append((path.parent, data))
    return found


@pytest.fixture(scope="module")
def grid(tmp_path_factory, mnist_dir):
    tmp = tmp_path_factory.mktemp("grid")
    path = write_sweep(tmp, "grid", 'method = "grid"',
                        '"optimizer.learning_rate" = [0.01, 0.1]\n"train.batch_size" = [32, 128]', epochs=2)
    plan = sweep_study.load(path)
    csv = sweep.run_sweep(plan, runs_dir=tmp / "runs", data_dir=mnist_dir)
    return plan, tmp, csv


@pytest.fixture()
def grid_plan(tmp_path):
    """A one-point grid sweep file (nothing run)."""
    return sweep_study.load(write_sweep(tmp_path, "one", 'method = "grid"',
                                        '"optimizer.learning_rate" = [0.05]\n"train.batch_size" = [128]'))


def test_grid_runs_every_point_once_as_normal_runs(grid):
    plan, tmp, csv = grid
    table = pd.read_csv(csv)
    assert len(table) == 4 and set(table["state"]) == {"complete"}
    points = set(zip(table["optimizer.learning_rate"], table["train.batch_size"]))
    assert points == {(0.01, 32), (0.01, 128), (0.1, 32), (0.1, 128)}
    for run_dir in table["run directory"]:
        for name in ("manifest.json", "history.csv", "best.keras", "predictions.npz"):
            assert (tmp / "runs" / "grid" / run_dir.split("/")[-1] / name).is_file()
    assert (table["epochs run"] == 2).all() and (table["wall seconds"] > 0).all()
    for _, row in table.iterrows():  # the objective is the best epoch's val_accuracy, from history.csv itself
        history = pd.read_csv(tmp / "runs" / "grid" / row["run directory"].split("/")[-1] / "history.csv")
        assert row["objective"] == pytest.approx(history["val_accuracy"].max(), abs=1e-12)
    assert table["command"].str.contains("optimizer.learning_rate=").all()


@pytest.mark.parametrize("metric, direction, expected", [
    ("val_accuracy", "maximize", 0.9), ("val_loss", "minimize", 0.3), ("val_loss", "maximize", 0.8)])
def test_objective_is_the_best_epoch_in_the_sweeps_direction(grid_plan, tmp_path, metric, direction, expected):
    # neither the first nor the last epoch is the best one, in either direction
    pd.DataFrame({"epoch": [0, 1, 2], "val_accuracy": [0.5, 0.9, 0.7], "val_loss": [0.8, 0.3, 0.6]}).to_csv(
        tmp_path / "history.csv", index=False)
    plan = dataclasses.replace(grid_plan, metric=metric, direction=direction)
    assert sweep_trial.objective(tmp_path, plan) == expected


def test_hparams_summaries_list_every_trial(grid):
    plan, tmp, _ = grid
    found = _hparams_events(tmp / "runs" / "grid")
    configs = [d for _, d in found if d.HasField("experiment")]
    sessions = {folder.parent.name: d.session_start_info for folder, d in found if d.HasField("session_start_info")}
    assert len(configs) == 1
    assert {h.name for h in configs[0].experiment.hparam_infos} == {"optimizer.learning_rate", "train.batch_size"}
    assert sorted(sessions) == ["trial-000", "trial-001", "trial-002", "trial-003"]
    # each trial's one session is its run's (its whole flattened config, the swept keys among them)
    assert all(set(s.hparams) >= {"optimizer.learning_rate", "train.batch_size", "seed", "engine"}
               for s in sessions.values())
    assert len(sessions) == len([d for _, d in found if d.HasField("session_start_info")])


def test_sweep_report_has_heatmap_curves_and_best_command(grid, tmp_path):
    plan, tmp, csv = grid
    index = sweep_report.build(plan, runs_dir=tmp / "runs", reports_dir=tmp_path)
    folder = index.parent
    # figures.heatmap of a 2x2 grid (110 dpi, the figures' dpi); bbox_inches="tight": within 5%
    assert_png(folder / "heatmap_0.png", (1.1 * 2 + 2.6, 0.7 * 2 + 1.6), tolerance=0.05, min_rgb_std=0.05)
    for n in (0, 1):
        assert_png(folder / f"curves_by_{n}.png", (6.4, 3.8), tolerance=0.05, min_rgb_std=0.05)
    text = (folder / "index.md").read_text()
    # the report's rule (sweep_report.build): highest objective, ties to the lowest trial number
    best = pd.read_csv(csv).sort_values(["objective", "trial"], ascending=[False, True], kind="stable").iloc[0]
    assert f"Best trial: {best['trial']}" in text and "python -m lenet_keras train" in text


def test_rerunning_a_finished_sweep_runs_nothing_new(grid):
    plan, tmp, _ = grid
    before = sorted(p.name for p in (tmp / "runs" / "grid").glob("trial-*"))
    table = pd.read_csv(sweep.run_sweep(plan, runs_dir=tmp / "runs"))
    assert len(table) == 4
    assert sorted(p.name for p in (tmp / "runs" / "grid").glob("trial-*")) == before


def test_optuna_sweep_on_sqlite_with_pruner(tmp_path, mnist_dir):
    path = write_sweep(tmp_path, "search", 'method = "optuna"\ntrials = 3\npruner_startup_trials = 1\npruner_warmup_epochs = 0',
                       '"optimizer.learning_rate" = {low = 1e-6, high = 0.3, log = true}\n'
                       '"train.batch_size" = {choices = [32, 64]}', epochs=2)
    plan = sweep_study.load(path)
    # The first two trials are chosen (the rest is sampled): a learning rate that learns, then one
    # that cannot (1e-6), which the median pruner must stop after its first epoch.
    study = sweep_study.open_study_and_storage(plan, tmp_path / "runs")[0]
    study.enqueue_trial({"optimizer.learning_rate": 0.1, "train.batch_size": 32})
    study.enqueue_trial({"optimizer.learning_rate": 1e-6, "train.batch_size": 32})
    table = pd.read_csv(sweep.run_sweep(plan, runs_dir=tmp_path / "runs", data_dir=mnist_dir)).set_index("trial")
    assert len(table) == 3 and set(table["state"]) <= {"complete", "pruned"}
    assert table["optimizer.learning_rate"].between(1e-6, 0.3).all()
    assert table.loc[0, "state"] == "complete" and table.loc[0, "epochs run"] == 2
    assert table.loc[1, "state"] == "pruned" and table.loc[1, "epochs run"] == 1, table.loc[1].to_dict()
    assert "pruned by Optuna's median pruner after epoch 0" in table.loc[1, "error"]
    with sqlite3.connect(tmp_path / "runs" / "search" / "study.db") as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == 3
        assert db.execute("select state from trials where number = 1").fetchone()[0] == "PRUNED"
    index = sweep_report.build(plan, runs_dir=tmp_path / "runs", reports_dir=tmp_path / "reports")
    assert_png(index.parent / "optimization_history.png", (6.4, 3.8), tolerance=0.05, min_rgb_std=0.05)


def test_two_worker_processes_share_one_study_without_duplicates(tmp_path, mnist_dir):
    path = write_sweep(tmp_path, "shared", 'method = "grid"',
                       '"optimizer.learning_rate" = [0.01, 0.03, 0.1]\n"train.batch_size" = [64, 128]')
    plan = sweep_study.load(path)
    table = pd.read_csv(sweep.run_sweep(plan, runs_dir=tmp_path / "runs", data_dir=mnist_dir, workers=2))
    assert len(table) == 6 and set(table["state"]) == {"complete"}
    assert len(set(zip(table["optimizer.learning_rate"], table["train.batch_size"]))) == 6
    assert len(list((tmp_path / "runs" / "shared").glob("trial-*"))) == 6
    with sqlite3.connect(tmp_path / "runs" / "shared" / "study.db") as db:
        workers = db.execute("select value_json from trial_user_attributes where key = 'worker'").fetchall()
    assert len(workers) == 6 and len(set(workers)) == 2, workers  # both worker processes ran trials


def test_claiming_workers_on_sqlite_take_each_waiting_trial_once(tmp_path):
    """Optuna level, no training: 3 processes race for 30 WAITING trials through BEGIN IMMEDIATE."""
    claimed = race_claimers(f"sqlite:///{tmp_path / 'race.db'}", "race")
    everything = sorted(number for numbers in claimed for number in numbers)
    assert everything == list(range(30)), f"claimed: {claimed}"  # each trial exactly once
    assert sum(1 for numbers in claimed if numbers) >= 2, f"only one worker claimed trials: {claimed}"
    with sqlite3.connect(tmp_path / "race.db") as db:
        assert db.execute("select state, count(*) from trials group by state").fetchall() == [("COMPLETE", 30)]


def test_a_worker_only_start_requeues_a_dead_workers_trial(grid_plan, tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setattr(sweep_study, "GRACE_SECONDS", 1)
    runs = tmp_path / "runs"
    study, storage = sweep_study.open_study_and_storage(grid_plan, runs)
    assert sweep_study.enqueue_missing(grid_plan, study) == 1
    dead = sweep_study.claim(study, storage)  # a worker claims trial 0, records one heartbeat and dies
    sweep_study.start_heartbeats(study, storage, dead).set()
    time.sleep(2.5)  # > GRACE_SECONDS, in whole seconds of SQLite's clock

    sweep.run_sweep(grid_plan, runs_dir=runs, data_dir=mnist_dir, worker_only=True)
    trials = study.get_trials()
    assert [(t.number, t.state.name) for t in trials] == [(0, "FAIL"), (1, "COMPLETE")]
    assert trials[1].params == {"optimizer.learning_rate": 0.05, "train.batch_size": 128}
    assert trials[1].user_attrs["retry_of"] == 0

    table = pd.read_csv(sweep.run_sweep(grid_plan, runs_dir=runs))  # a coordinator start queues nothing more
    assert list(table["state"]) == ["fail", "complete"]
    assert table.loc[0, "error"] == "worker lost (no heartbeat for 1 s); its point was queued again"


def test_a_diverging_trial_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path, mnist_dir):
    # Keras clips the cross-entropy, so only a rate that overflows float32 weights gives inf/NaN
    path = write_sweep(tmp_path, "nan", 'method = "grid"', '"optimizer.learning_rate" = [1e38, 0.05]\n"train.batch_size" = [32]')
    table = pd.read_csv(sweep.run_sweep(sweep_study.load(path), runs_dir=tmp_path / "runs", data_dir=mnist_dir))
    by_lr = table.set_index("optimizer.learning_rate")
    assert by_lr.loc[1e38, "state"] == "fail" and "NaN or infinite" in by_lr.loc[1e38, "error"]
    assert by_lr.loc[0.05, "state"] == "complete"


@pytest.mark.parametrize("head, space, message", [
    ('method = "grid"', "", "search space [space] is empty"),
    ('method = "grid"', '"optimizer.learning_rat" = [0.1]', "unknown key optimizer.learning_rat"),
    ('method = "grid"', '"optimizer.learning_rate" = [-1.0]', "optimizer.learning_rate must be"),
    ('method = "optuna"', '"optimizer.learning_rate" = {low = 0.3, high = 0.1}', "impossible range"),
    ('method = "optuna"', '"optimizer.learning_rate" = {low = 0.0, high = 0.1, log = true}', "log range needs low > 0"),
    ('method = "grid"', '"optimizer.learning_rate" = {low = 0.1, high = 0.2}', "a grid needs a list"),
    ('method = "random"', '"optimizer.learning_rate" = [0.1]', "sweep.method must be one of grid, optuna"),
    ('method = "grid"\nmetric = "val_acc"', '"optimizer.learning_rate" = [0.1]', "sweep.metric must be one of"),
])
def test_bad_sweep_files_fail_before_any_trial(tmp_path, head, space, message):
    path = write_sweep(tmp_path, "bad", head, space)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sweep_study.load(path)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name, trials", [("mnist_lenet5_grid", 18), ("mnist_lenet5_optuna", 20)])
def test_shipped_sweep_files_are_valid(name, trials):
    plan = sweep_study.load(REPO / "experiments" / f"{name}.toml")
    assert plan.total_trials() == trials and plan.base_path == REPO / "experiments" / "mnist_lenet5.toml"
    assert plan.experiment({}).train.epochs == 5
