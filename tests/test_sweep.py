"""Sweeps on real MNIST subsets: a 2x2 grid, an Optuna study on SQLite, two worker processes
on one study, resuming, a failing trial, HParams summaries in the event files, and the
errors a sweep file can cause before any trial runs."""

import sqlite3

import pandas as pd
import pytest

from lenet_keras import sweep, sweep_report
from lenet_keras.errors import ConfigError

from .conftest import REPO

FIXED = """
[fixed]
"train.epochs" = {epochs}
"train.histogram_freq" = 0
"data.train_subset" = 600
"data.test_subset" = 100
"""


def _write(tmp_path, name, head, space, epochs=1):
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[sweep]\nbase = "{REPO / "experiments/mnist_lenet5.toml"}"\n{head}\n'
                    f'{FIXED.format(epochs=epochs)}\n[space]\n{space}\n')
    return path


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
    path = _write(tmp, "grid", 'method = "grid"',
                  '"optimizer.learning_rate" = [0.01, 0.1]\n"train.batch_size" = [32, 128]')
    plan = sweep.load(path)
    csv = sweep.run_sweep(plan, runs_dir=tmp / "runs", data_dir=mnist_dir)
    return plan, tmp, csv


def test_grid_runs_every_point_once_as_normal_runs(grid):
    plan, tmp, csv = grid
    table = pd.read_csv(csv)
    assert len(table) == 4 and set(table["state"]) == {"complete"}
    points = set(zip(table["optimizer.learning_rate"], table["train.batch_size"]))
    assert points == {(0.01, 32), (0.01, 128), (0.1, 32), (0.1, 128)}
    for run_dir in table["run directory"]:
        for name in ("manifest.json", "history.csv", "best.keras", "predictions.npz"):
            assert (tmp / "runs" / "grid" / run_dir.split("/")[-1] / name).is_file()
    assert (table["epochs run"] == 1).all() and (table["wall seconds"] > 0).all()
    assert table["objective"].equals(table["best val_accuracy"])
    assert table["command"].str.contains("optimizer.learning_rate=").all()


def test_hparams_summaries_list_every_trial(grid):
    plan, tmp, _ = grid
    found = _hparams_events(tmp / "runs" / "grid")
    configs = [d for _, d in found if d.HasField("experiment")]
    sessions = {folder.parent.name: d.session_start_info for folder, d in found if d.HasField("session_start_info")}
    assert len(configs) == 1
    assert {h.name for h in configs[0].experiment.hparam_infos} == {"optimizer.learning_rate", "train.batch_size"}
    assert sorted(sessions) == ["trial-000", "trial-001", "trial-002", "trial-003"]
    assert all(set(s.hparams) == {"optimizer.learning_rate", "train.batch_size"} for s in sessions.values())


def test_sweep_report_has_heatmap_curves_and_best_command(grid, tmp_path):
    plan, tmp, csv = grid
    index = sweep_report.build(plan, runs_dir=tmp / "runs", reports_dir=tmp_path)
    folder = index.parent
    assert (folder / "heatmap_0.png").is_file() and (folder / "curves_by_0.png").is_file()
    text = (folder / "index.md").read_text()
    best = pd.read_csv(csv).sort_values("objective").iloc[-1]
    assert f"Best trial: {best['trial']}" in text and "python -m lenet_keras train" in text


def test_rerunning_a_finished_sweep_runs_nothing_new(grid):
    plan, tmp, _ = grid
    before = sorted(p.name for p in (tmp / "runs" / "grid").glob("trial-*"))
    table = pd.read_csv(sweep.run_sweep(plan, runs_dir=tmp / "runs"))
    assert len(table) == 4
    assert sorted(p.name for p in (tmp / "runs" / "grid").glob("trial-*")) == before


def test_optuna_sweep_on_sqlite_with_pruner(tmp_path, mnist_dir):
    path = _write(tmp_path, "search", 'method = "optuna"\ntrials = 3\npruner_startup_trials = 1\npruner_warmup_epochs = 0',
                  '"optimizer.learning_rate" = {low = 0.001, high = 0.3, log = true}\n'
                  '"train.batch_size" = {choices = [64, 128]}', epochs=2)
    plan = sweep.load(path)
    table = pd.read_csv(sweep.run_sweep(plan, runs_dir=tmp_path / "runs", data_dir=mnist_dir))
    assert len(table) == 3 and set(table["state"]) <= {"complete", "pruned"}
    assert table["optimizer.learning_rate"].between(0.001, 0.3).all()
    with sqlite3.connect(tmp_path / "runs" / "search" / "study.db") as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == 3
    index = sweep_report.build(plan, runs_dir=tmp_path / "runs", reports_dir=tmp_path / "reports")
    assert (index.parent / "optimization_history.png").is_file()


def test_two_worker_processes_share_one_study_without_duplicates(tmp_path, mnist_dir):
    path = _write(tmp_path, "shared", 'method = "grid"',
                  '"optimizer.learning_rate" = [0.01, 0.03, 0.1]\n"train.batch_size" = [64, 128]')
    plan = sweep.load(path)
    table = pd.read_csv(sweep.run_sweep(plan, runs_dir=tmp_path / "runs", data_dir=mnist_dir, workers=2))
    assert len(table) == 6 and set(table["state"]) == {"complete"}
    assert len(set(zip(table["optimizer.learning_rate"], table["train.batch_size"]))) == 6
    assert len(list((tmp_path / "runs" / "shared").glob("trial-*"))) == 6


def test_a_diverging_trial_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path, mnist_dir):
    # Keras clips the cross-entropy, so only a rate that overflows float32 weights gives inf/NaN
    path = _write(tmp_path, "nan", 'method = "grid"', '"optimizer.learning_rate" = [1e38, 0.05]\n"train.batch_size" = [32]')
    table = pd.read_csv(sweep.run_sweep(sweep.load(path), runs_dir=tmp_path / "runs", data_dir=mnist_dir))
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
    path = _write(tmp_path, "bad", head, space)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sweep.load(path)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name, trials", [("mnist_lenet5_grid", 18), ("mnist_lenet5_optuna", 20)])
def test_shipped_sweep_files_are_valid(name, trials):
    plan = sweep.load(REPO / "experiments" / f"{name}.toml")
    assert plan.total_trials() == trials and plan.base_path == REPO / "experiments" / "mnist_lenet5.toml"
    assert plan.experiment({}).train.epochs == 5
