"""Sweeps on real MNIST subsets: a 2x2 grid, an Optuna study on SQLite with a trial the pruner
stops, two worker processes on one study, claiming processes racing on SQLite, a dead worker's
trial queued again by a `--worker-only` start, resuming, a failing trial, HParams summaries in
the event files, the report's figures, and the errors a sweep file can cause before any trial
runs; `repeats` (several seeds per trial: the mean objective and its spread, pruning on the
first seed, a dead worker's trial queued again) and the report's trials table folding long
texts."""

import dataclasses
import html.parser
import json
import sqlite3
import statistics
import time

import pandas as pd
import pytest

from lenet_keras import pages, sweep, sweep_report, sweep_study, sweep_trial
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
    assert configs == []  # no experiment summary: it would narrow every session's columns under runs/
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
    sweep_study.start_heartbeats(study, storage, dead).stop()
    time.sleep(2.5)  # > GRACE_SECONDS, in whole seconds of SQLite's clock

    sweep.run_sweep(grid_plan, runs_dir=runs, data_dir=mnist_dir, worker_only=True)
    trials = study.get_trials()
    assert [(t.number, t.state.name) for t in trials] == [(0, "FAIL"), (1, "COMPLETE")]
    assert trials[1].params == {"optimizer.learning_rate": 0.05, "train.batch_size": 128}
    assert trials[1].user_attrs["retry_of"] == 0

    table = pd.read_csv(sweep.run_sweep(grid_plan, runs_dir=runs))  # a coordinator start queues nothing more
    assert list(table["state"]) == ["fail", "complete"]
    assert table.loc[0, "error"] == "worker lost (no heartbeat for 1 s); its point was queued again"


def test_a_worker_dying_right_after_its_claim_leaves_a_trial_that_is_found_lost(grid_plan, tmp_path, monkeypatch):
    """The claim records the first heartbeat: Optuna's stale-trial check skips trials without one."""
    monkeypatch.setattr(sweep_study, "GRACE_SECONDS", 1)
    study, storage = sweep_study.open_study_and_storage(grid_plan, tmp_path / "runs")
    assert sweep_study.enqueue_missing(grid_plan, study) == 1
    assert sweep_study.claim(study, storage).number == 0  # ... and the worker dies before anything else
    time.sleep(2.5)  # > GRACE_SECONDS, in whole seconds of SQLite's clock
    sweep_study.requeue_lost_trials(study)
    trials = study.get_trials()
    assert [(t.number, t.state.name) for t in trials] == [(0, "FAIL"), (1, "WAITING")]
    assert trials[1].user_attrs["retry_of"] == 0


def test_a_worker_whose_heartbeats_keep_failing_stops_its_trial_and_leaves_it_to_be_queued_again(
        grid_plan, tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setattr(sweep_study, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(sweep_study, "GRACE_SECONDS", 0.2)  # 3 missed heartbeats stop the trial
    runs = tmp_path / "runs"
    study, storage = sweep_study.open_study_and_storage(grid_plan, runs)
    sweep_study.enqueue_missing(grid_plan, study)
    trial = sweep_study.claim(study, storage)
    beats = []

    def unreachable(trial_id):
        beats.append(trial_id)
        if len(beats) > 1:  # the first (start of the trial) gets through, then the database is gone
            raise ConnectionError("database unreachable")

    monkeypatch.setattr(storage, "record_heartbeat", unreachable)
    assert sweep_trial.run_trial(grid_plan, study, storage, trial, runs, mnist_dir) == "LOST"
    assert len(beats) == 1 + sweep_study.missed_heartbeats_to_stop() == 4
    assert study.get_trials()[0].state.name == "RUNNING"  # not told: the stale-trial check requeues it
    manifest = json.loads((runs / grid_plan.name / "trial-000" / "manifest.json").read_text())
    assert "3 heartbeats in a row failed (ConnectionError: database unreachable)" in manifest["stopped_early"]


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
    ('method = "grid"\nrepeats = 0', '"optimizer.learning_rate" = [0.1]', "sweep.repeats must be an integer >= 1, got 0"),
    ('method = "grid"\nrepeats = 2.5', '"optimizer.learning_rate" = [0.1]', "sweep.repeats must be int, got 2.5"),
    ('method = "grid"\nrepeats = true', '"optimizer.learning_rate" = [0.1]', "sweep.repeats must be int, got True"),
])
def test_bad_sweep_files_fail_before_any_trial(tmp_path, head, space, message):
    path = write_sweep(tmp_path, "bad", head, space)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as error:
        sweep_study.load(path)
    assert str(error.value).startswith(f"{path}: ")  # every message names the sweep file
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name, trials", [("mnist_lenet5_grid", 18), ("mnist_lenet5_optuna", 20)])
def test_shipped_sweep_files_are_valid(name, trials):
    plan = sweep_study.load(REPO / "experiments" / f"{name}.toml")
    assert plan.total_trials() == trials and plan.base_path == REPO / "experiments" / "mnist_lenet5.toml"
    assert plan.experiment({}).train.epochs == 5


def test_repeats_past_the_largest_seed_fail_before_any_trial(tmp_path):
    path = write_sweep(tmp_path, "seeds", 'method = "grid"\nrepeats = 2', '"optimizer.learning_rate" = [0.1]')
    path.write_text(path.read_text().replace("[fixed]\n", "[fixed]\nseed = 4294967295\n"))
    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 2\*\*32\), got 4294967296") as error:
        sweep_study.load(path)
    assert str(error.value).startswith(f"{path}: ")


# --------------------------------------------------------------------------- repeats (several seeds)


@pytest.fixture(scope="module")
def repeated(tmp_path_factory, mnist_dir):
    """A 2-point grid with `repeats = 2`, run: (plan, folder, trials.csv)."""
    tmp = tmp_path_factory.mktemp("repeated")
    path = write_sweep(tmp, "twice", 'method = "grid"\nrepeats = 2',
                       '"optimizer.learning_rate" = [0.05, 0.1]\n"train.batch_size" = [128]')
    plan = sweep_study.load(path)
    return plan, tmp, sweep.run_sweep(plan, runs_dir=tmp / "runs", data_dir=mnist_dir)


def _best_epoch(run_dir, metric="val_accuracy"):
    return float(pd.read_csv(run_dir / "history.csv")[metric].max())


def test_repeats_train_one_run_per_seed_and_the_objective_is_their_mean(repeated):
    plan, tmp, csv = repeated
    folder = tmp / "runs" / "twice"
    base_seed = plan.experiment({}).seed
    assert sorted(p.name for p in folder.glob("trial-*")) == [
        f"trial-{n:03d}-seed-{s}" for n in (0, 1) for s in (base_seed, base_seed + 1)]
    table = pd.read_csv(csv).set_index("trial")
    assert list(table["state"]) == ["complete", "complete"]
    for number, row in table.iterrows():
        runs = [folder / f"trial-{number:03d}-seed-{s}" for s in (base_seed, base_seed + 1)]
        seeds = [json.loads((r / "manifest.json").read_text())["config"]["seed"] for r in runs]
        assert seeds == [base_seed, base_seed + 1]
        assert not pd.read_csv(runs[0] / "history.csv").equals(pd.read_csv(runs[1] / "history.csv"))
        values = [_best_epoch(r) for r in runs]  # each run's objective, from its own history.csv
        assert row["objective"] == pytest.approx(statistics.fmean(values), abs=1e-12)
        assert row["seeds"] == f"{base_seed} {base_seed + 1}"
        assert [float(v) for v in row["objective per seed"].split()] == pytest.approx(values, abs=1e-9)
        assert row["objective min"] == pytest.approx(min(values), abs=1e-12)
        assert row["objective max"] == pytest.approx(max(values), abs=1e-12)
        assert row["objective std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
        assert row["command"].startswith(f"for s in {base_seed} {base_seed + 1}; do python -m lenet_keras train")
        assert row["command"].endswith("seed=$s; done")
    study = sweep_study.open_study_and_storage(plan, tmp / "runs")[0]
    for trial in study.get_trials():
        assert trial.user_attrs["seeds"] == [base_seed, base_seed + 1]
        assert trial.value == pytest.approx(statistics.fmean(trial.user_attrs["objective per seed"]), abs=1e-12)
        assert trial.user_attrs["run_dirs"] == [f"trial-{trial.number:03d}-seed-{s}" for s in (base_seed, base_seed + 1)]


def test_the_report_of_a_repeated_sweep_shows_the_spread(repeated, tmp_path):
    plan, tmp, csv = repeated
    index = sweep_report.build(plan, runs_dir=tmp / "runs", reports_dir=tmp_path)
    assert_png(index.parent / "objective_spread.png", (6.4, 3.8), tolerance=0.05, min_rgb_std=0.05)
    page = index.read_text()
    table = pd.read_csv(csv)
    assert "<th>min-max</th>" in page and "<th>std</th>" in page
    for _, row in table.iterrows():
        assert f">{row['objective min']:.4f}-{row['objective max']:.4f}</td>" in page
        assert f"<td>{row['objective std']:.4f}</td>" in page
    assert "| min-max | std |" in (index.parent / "index.md").read_text()


def test_pruning_with_repeats_looks_at_the_first_seed_only(tmp_path, mnist_dir):
    path = write_sweep(tmp_path, "prune2", 'method = "optuna"\ntrials = 2\nrepeats = 2\npruner_startup_trials = 1\n'
                       'pruner_warmup_epochs = 0', '"optimizer.learning_rate" = {low = 1e-6, high = 0.3, log = true}', epochs=2)
    plan = sweep_study.load(path)
    study = sweep_study.open_study_and_storage(plan, tmp_path / "runs")[0]
    study.enqueue_trial({"optimizer.learning_rate": 0.1})  # learns
    study.enqueue_trial({"optimizer.learning_rate": 1e-6})  # cannot learn: pruned after its first seed's first epoch
    table = pd.read_csv(sweep.run_sweep(plan, runs_dir=tmp_path / "runs", data_dir=mnist_dir)).set_index("trial")
    assert list(table["state"]) == ["complete", "pruned"]
    runs = sorted(p.name for p in (tmp_path / "runs" / "prune2").glob("trial-*"))
    assert runs == ["trial-000-seed-42", "trial-000-seed-43", "trial-001-seed-42"]  # the pruned trial's 2nd seed never ran
    first = pd.read_csv(tmp_path / "runs" / "prune2" / "trial-000-seed-42" / "history.csv")
    # the pruner saw the first seed's epochs, each once (the second seed reports nothing)
    assert study.get_trials()[0].intermediate_values == pytest.approx(dict(enumerate(first["val_accuracy"])), abs=1e-6)
    assert pd.isna(table.loc[1, "objective min"]) and table.loc[1, "epochs run"] == 1


def test_a_dead_workers_repeated_trial_is_queued_again_and_runs_every_seed(grid_plan, tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setattr(sweep_study, "GRACE_SECONDS", 1)
    plan = dataclasses.replace(grid_plan, repeats=2)
    runs = tmp_path / "runs"
    study, storage = sweep_study.open_study_and_storage(plan, runs)
    assert sweep_study.enqueue_missing(plan, study) == 1
    dead = sweep_study.claim(study, storage)  # a worker claims trial 0, records one heartbeat and dies
    sweep_study.start_heartbeats(study, storage, dead).stop()
    time.sleep(2.5)  # > GRACE_SECONDS, in whole seconds of SQLite's clock

    table = pd.read_csv(sweep.run_sweep(plan, runs_dir=runs, data_dir=mnist_dir))
    assert list(table["state"]) == ["fail", "complete"] and study.get_trials()[1].user_attrs["retry_of"] == 0
    assert sorted(p.name for p in (runs / "one").glob("trial-*")) == ["trial-001-seed-42", "trial-001-seed-43"]
    assert table.loc[1, "seeds"] == "42 43" and table.loc[1, "objective std"] >= 0


class _Cells(html.parser.HTMLParser):
    """The trials table's cells: for each <td>, its text outside and inside <summary>, and its full text."""

    def __init__(self):
        super().__init__()
        self.cells, self.where = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "td":
            self.cells.append({"text": "", "summary": "", "folded": False})
        elif tag == "details" and self.cells:
            self.cells[-1]["folded"] = True
        self.where.append(tag)

    def handle_endtag(self, tag):
        self.where.pop()

    def handle_data(self, data):
        if self.cells and "td" in self.where:
            self.cells[-1]["text"] += data
            if "summary" in self.where:
                self.cells[-1]["summary"] += data


def test_the_trials_table_folds_long_errors_and_commands(grid_plan, tmp_path):
    """A trials.csv written by hand (no training): a failed trial with a long traceback-like error
    holding a 150-character path, and a complete one with a long rerun command."""
    long_path = "/very/" + "deep" * 36 + "/history.csv"
    error = f"TrainingDivergedError: the training loss became NaN or infinite at epoch 3 while reading {long_path}\nsecond line"
    command = grid_plan.command({"optimizer.learning_rate": 0.05, "train.batch_size": 128}) + " " + "x=1 " * 30
    rows = [{"trial": 0, "state": "complete", "optimizer.learning_rate": 0.05, "train.batch_size": 128, "objective": 0.9,
             "final val_accuracy": 0.9, "test accuracy": 0.91, "epochs run": 1, "wall seconds": 3.0, "error": "",
             "run directory": "", "command": command},
            {"trial": 1, "state": "fail", "optimizer.learning_rate": 0.05, "train.batch_size": 128, "objective": None,
             "final val_accuracy": None, "test accuracy": None, "epochs run": 0, "wall seconds": 1.0, "error": error,
             "run directory": "", "command": command}]
    (tmp_path / "runs" / "one").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(tmp_path / "runs" / "one" / "trials.csv", index=False)
    page = sweep_report.build(grid_plan, runs_dir=tmp_path / "runs", reports_dir=tmp_path / "reports").read_text()
    parser = _Cells()
    parser.feed(page)
    folded = [c for c in parser.cells if c["folded"]]
    assert len(folded) == 3  # two commands, one error
    shown = command.replace(str(grid_plan.base_path), pages.display_path(grid_plan.base_path))  # as pages.display_path shows paths
    assert {c["text"].split(" ...")[-1] for c in folded} == {shown, error}  # the full text is in the <details>
    for cell in folded:
        assert 0 < len(cell["summary"]) <= 45 and cell["text"].startswith(cell["summary"])
    assert max(len(c["text"]) for c in parser.cells if not c["folded"]) <= sweep_report.FOLD_CHARACTERS
    assert "overflow-wrap:anywhere" in page and "max-width:20em" in page  # the long path breaks within the column


def test_the_shipped_heartbeat_settings_give_a_trial_up_after_5_missed_heartbeats():
    """The README's numbers: heartbeats 20 s apart, lost after 120 s, given up after 5 misses."""
    assert (sweep_study.HEARTBEAT_SECONDS, sweep_study.GRACE_SECONDS, sweep_study.missed_heartbeats_to_stop()) == (20, 120, 5)
