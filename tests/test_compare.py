"""`train --seeds` and `compare`: real tiny runs (600 MNIST training images, 1 epoch), two
experiments x two seeds, the report's numbers checked against history.csv and manifest.json."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lenet_keras import compare, compare_figures, compare_stats, report, seeds
from lenet_keras.errors import ConfigError, LenetKerasError, RunDirectoryError
from tests.conftest import assert_png

TINY = ["train.epochs=1", "data.train_subset=600", "data.test_subset=200"]
EXPERIMENTS = ("mnist_lenet5", "mnist_lenet5_fast")


def _train_seeds(experiment: str, runs_dir: Path, mnist_dir: Path, *seed_list: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lenet_keras", "train", experiment, *TINY, "--seeds", *map(str, seed_list),
               "--runs-dir", str(runs_dir), "--data-dir", str(mnist_dir)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, mnist_dir) -> Path:
    """Two experiments (the deck recipe and the fast one) x seeds 0 and 1, through `train --seeds`."""
    root = tmp_path_factory.mktemp("compare") / "runs"
    for experiment in EXPERIMENTS:
        _train_seeds(experiment, root, mnist_dir, 0, 1)
    return root


def _manifests(runs_dir: Path, experiment: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((runs_dir / experiment).glob("run-*/manifest.json"))]


def test_seeds_make_one_run_per_seed_and_skip_completed_ones(runs_dir, mnist_dir):
    assert [m["seed"] for m in _manifests(runs_dir, "mnist_lenet5")] == [0, 1]
    done = _train_seeds("mnist_lenet5", runs_dir, mnist_dir, 1, 0)
    assert "seed 1: skipped" in done.stdout and "seed 0: skipped" in done.stdout
    assert "0 trained now, 2 skipped" in done.stdout
    assert len(_manifests(runs_dir, "mnist_lenet5")) == 2  # nothing new


def test_seeds_trains_only_what_is_missing_and_refuses_a_seed_override(runs_dir, tmp_path):
    calls = []

    def fake_runner(command):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0)

    copy = tmp_path / "runs"
    shutil.copytree(runs_dir / "mnist_lenet5", copy / "mnist_lenet5")
    with pytest.raises(LenetKerasError, match="seed 5 exited 0 but"):
        seeds.train_seeds(Path("mnist_lenet5"), TINY, [0, 5], copy, runner=fake_runner)
    assert len(calls) == 1 and "seed=5" in calls[0] and "seed=0" not in calls[0]
    with pytest.raises(LenetKerasError, match="seed=3"):
        seeds.train_seeds(Path("mnist_lenet5"), [*TINY, "seed=3"], [0], copy, runner=fake_runner)


def _expected(manifests: list[dict], histories: list[pd.DataFrame]) -> dict:
    accuracy = np.array([m["test"]["accuracy"] for m in manifests])
    seconds = np.array([m["training_seconds"] for m in manifests])  # the epochs without their validation passes
    np.testing.assert_allclose(seconds, [h["epoch_seconds"].sum() - m["validation_seconds"]
                                         for m, h in zip(manifests, histories)], atol=2e-3)
    assert all(m["validation_seconds"] > 0 for m in manifests)
    half = stats.t.ppf(0.975, len(accuracy) - 1) * accuracy.std(ddof=1) / math.sqrt(len(accuracy))
    return {"accuracy": accuracy, "seconds": seconds, "low": accuracy.mean() - half, "high": accuracy.mean() + half}


def test_compare_groups_two_experiments_with_the_right_numbers(runs_dir, tmp_path):
    index = compare.build(list(EXPERIMENTS), runs_dir=runs_dir, reports_dir=tmp_path)
    runs = compare.collect_runs(list(EXPERIMENTS), runs_dir)
    groups = compare_stats.group_runs([run for _, run in runs])
    assert [len(g.runs) for g in groups] == [2, 2]
    table = compare_stats.group_table(groups)
    for row, experiment in zip(table.to_dict(orient="records"), EXPERIMENTS):
        folder = runs_dir / experiment
        histories = [pd.read_csv(p) for p in sorted(folder.glob("run-*/history.csv"))]
        want = _expected(_manifests(runs_dir, experiment), histories)
        assert row["n"] == 2 and row["seeds"] == "0 1"
        assert row["test acc mean"] == pytest.approx(want["accuracy"].mean())
        assert (row["test acc ci_low"], row["test acc ci_high"]) == pytest.approx((want["low"], want["high"]))
        assert row["train s mean"] == pytest.approx(want["seconds"].mean())
        assert f"{100 * want['accuracy'].mean():.2f} [{100 * want['low']:.2f}, {100 * want['high']:.2f}]" in \
            index.with_suffix(".md").read_text()
    assert compare_stats.SECONDS_BASES["training"] in index.with_suffix(".md").read_text()  # like with like, said


def test_the_difference_from_the_baseline_is_welchs(runs_dir):
    runs = compare.collect_runs(list(EXPERIMENTS), runs_dir)
    deck, fast = compare_stats.group_runs([run for _, run in runs])
    a = np.array([m["test"]["accuracy"] for m in _manifests(runs_dir, "mnist_lenet5_fast")])
    b = np.array([m["test"]["accuracy"] for m in _manifests(runs_dir, "mnist_lenet5")])
    va, vb = a.var(ddof=1) / 2, b.var(ddof=1) / 2  # Welch by hand: standard error and Satterthwaite's df
    df = (va + vb) ** 2 / (va**2 + vb**2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    row = compare_stats.difference_table([deck, fast], deck).iloc[0]
    assert row["Δ test acc"] == pytest.approx(a.mean() - b.mean())
    assert (row["Δ test acc ci_low"], row["Δ test acc ci_high"]) == pytest.approx((a.mean() - b.mean() - half,
                                                                                  a.mean() - b.mean() + half))


def test_legends_name_the_differing_keys_and_figures_have_their_panels(runs_dir, tmp_path):
    index = compare.build(list(EXPERIMENTS), runs_dir=runs_dir, reports_dir=tmp_path, label="tiny")
    runs = compare.collect_runs(list(EXPERIMENTS), runs_dir)
    groups = compare.lettered(compare_stats.group_runs([run for _, run in runs]))
    keys = compare_stats.differing_keys(groups)
    assert "model.name" in keys and "optimizer.name" in keys and "seed" not in keys
    assert compare.legend_label(groups[1], keys).startswith("B: mnist_lenet5_fast · keras: model=lenet5_relu")
    page = index.read_text()
    assert "model.name" in page and "lenet5_relu" in page and "Differences from A: mnist_lenet5" in page
    assert_png(index.parent / "validation_curves.png", (11, 4.2), tolerance=0.3)
    assert_png(index.parent / "test_accuracy.png", (8, 0.6 + 0.55 * 2), tolerance=0.6)
    curve = compare_figures.CurveGroup("x", "x", tuple(r.history for r in groups[0].runs), (0.5, 0.6))
    figure = compare_figures.validation_curves([curve])
    assert [ax.get_xlabel() for ax in figure.axes] == ["epoch", "training seconds (sum of epoch times)"]
    assert all(ax.get_yscale() == "log" for ax in figure.axes)


def test_where_filters_runs_and_bad_input_is_named(runs_dir, tmp_path):
    index = compare.build(list(EXPERIMENTS), runs_dir=runs_dir, reports_dir=tmp_path, where=["seed=1"], label="s1")
    text = index.with_suffix(".md").read_text()
    assert "mnist_lenet5/run-002" in text and "mnist_lenet5/run-001" not in text
    with pytest.raises(ConfigError, match="no run has the key 'nope'"):
        compare.build(list(EXPERIMENTS), runs_dir=runs_dir, reports_dir=tmp_path, where=["nope=1"])
    with pytest.raises(ConfigError, match="no such group"):
        compare.build(list(EXPERIMENTS), runs_dir=runs_dir, reports_dir=tmp_path, baseline="Z")
    with pytest.raises(RunDirectoryError, match="folders in .*mnist_lenet5"):
        compare.build(["not_trained"], runs_dir=runs_dir, reports_dir=tmp_path)


def test_a_run_validated_on_the_test_set_is_labelled_so(runs_dir, tmp_path):
    copy = tmp_path / "runs" / "on_test"
    shutil.copytree(runs_dir / "mnist_lenet5" / "run-001", copy / "run-001")
    manifest = json.loads((copy / "run-001" / "manifest.json").read_text())
    assert manifest["data"]["validation_is_test"] is False
    manifest["data"].update(validation="the test set (200 images)", validation_is_test=True)
    (copy / "run-001" / "manifest.json").write_text(json.dumps(manifest))
    group = compare.lettered(compare_stats.group_runs([report.read_run(copy / "run-001")]))[0]
    assert compare.legend_label(group, []).endswith("[validated on the test set]")


def test_summaries_of_one_and_of_equal_values():
    assert math.isnan(compare_stats.summarize([0.9])["ci_low"])
    assert compare_stats.summarize([0.9, 0.9])["ci_low"] == pytest.approx(0.9)
    assert compare_stats.seeds_needed(0.001, 0.001) == 17  # d = 1: 17 per group for 80% power at 5%


def test_two_groups_without_spread_get_no_test_and_say_why():
    d = compare_stats.difference([0.99, 0.99, 0.99], [0.98, 0.98])
    assert d["zero_spread"] and d["difference"] == pytest.approx(0.01)
    assert all(math.isnan(d[k]) for k in ("ci_low", "ci_high", "p_value", "seeds_needed"))  # not p = 0, not "2 seeds"
    assert not compare_stats.difference([0.99, 0.98], [0.98, 0.98])["zero_spread"]
    row = {"group": "B: x", "vs": "A: y"}
    for name in ("test acc", "train s"):
        row |= {f"Δ {name}": d["difference"], f"Δ {name} ci_low": d["ci_low"], f"Δ {name} ci_high": d["ci_high"],
                f"{name} p": d["p_value"], f"{name} seeds needed": d["seeds_needed"], f"{name} zero spread": True}
    assert "zero spread), so no test or interval applies" in compare.verdict(row, "test acc", "test accuracy", 100, "points")
    shown = compare.differences_display(pd.DataFrame([row])).iloc[0]
    assert shown["Δ test acc (points) [95% CI]"] == "1.00 (zero spread: no test)" and shown["p (acc)"] == ""


def test_a_peer_run_from_its_printed_output_is_drawn_beside_ours(runs_dir, tmp_path):
    from benchmarks import peer_runs

    copy = tmp_path / "runs"
    shutil.copytree(runs_dir / "mnist_lenet5", copy / "mnist_lenet5")
    output = (Path(__file__).parent / "fixtures" / "peers" / "seed002_keras_lenet_2epochs.txt").read_text()
    peer = peer_runs.PEERS["deck-keras"]
    for _ in range(2):  # the deck's script is unseeded: two runs of one recipe form one group
        peer_runs.record_peer_output(peer, output, copy, args=["2"], command="python seed002_keras_lenet.py 2",
                                     wall_seconds=30.0, seed=None, versions={"python": "3.11"})
    printed = [float(v) for v in __import__("re").findall(r"val_acc=([\d.]+)", output)]
    index = compare.build(["mnist_lenet5", peer.experiment], runs_dir=copy, reports_dir=tmp_path, label="peer")
    runs = compare.collect_runs(["mnist_lenet5", peer.experiment], copy)
    groups = compare.lettered(compare_stats.group_runs([run for _, run in runs]))
    assert [g.label for g in groups] == ["A: mnist_lenet5 · keras", f"B: {peer.experiment} · keras-deck"]
    deck = groups[1]
    assert len(deck.runs) == 2 and deck.seeds == [None, None]
    assert list(deck.runs[0].history["val_accuracy"]) == pytest.approx(printed)
    table = compare_figures.epoch_statistics([r.history for r in deck.runs], "val_accuracy")
    assert list(table["median"]) == pytest.approx(printed)
    assert "B: peer_deck_keras_lenet5 · keras-deck" in index.read_text()
    # the deck's script times validation with training: every group is compared on epoch seconds, and the page says so
    assert compare_stats.seconds_basis([run for group in groups for run in group.runs]) == "epochs"
    assert compare_stats.SECONDS_BASES["epochs"] in index.with_suffix(".md").read_text()
    stats_table = compare_stats.group_table(groups)
    assert stats_table.loc[0, "train s mean"] == pytest.approx(np.mean([r.history["epoch_seconds"].sum() for r in groups[0].runs]))
    assert_png(index.parent / "validation_curves.png", (11, 4.2), tolerance=0.3)
