"""The reproduction scorecard: the verdict rule, the claims table, and a
scorecard rendered over real tiny MNIST runs (600 training images, 1 epoch, 2 seeds)."""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import missing_shared

from lenet_keras import reproduce
from lenet_keras.reproduce import ACCURACY, Claim


# --- the verdict rule on hand-made numbers ---------------------------------------------------

def test_published_value_inside_the_seeds_interval_is_reproduced():
    assert reproduce.verdict(0.9850, [0.9840, 0.9855, 0.9862], digits=4) == "reproduced"


def test_published_value_far_below_ours_differs_with_ours_higher():
    text = reproduce.verdict(0.9000, [0.9840, 0.9855, 0.9862], digits=4)
    assert text == "differs: ours higher by 8.55 points (outside the 95% range of one run of ours)"  # 0.9855 - 0.9


def test_published_value_above_ours_differs_with_ours_lower():
    text = reproduce.verdict(0.9905, [0.9861, 0.9866, 0.9870], digits=4)
    assert text == "differs: ours lower by 0.39 points (outside the 95% range of one run of ours)"


NARROW = [0.9850, 0.9852, 0.9854]
"""mean 0.9852, std 0.0002: 95% CI of the mean 0.98470-0.98570, 95% range of one run 0.98421-0.98619."""


def test_inside_the_seeds_range_or_the_mean_interval_is_reproduced():
    s = reproduce.compare_stats.summarize(NARROW)
    assert s["ci_low"] < 0.9848 < s["min"]  # outside min-max, inside the CI of the mean
    assert reproduce.verdict(0.9848, NARROW, digits=4) == "reproduced"
    assert reproduce.verdict(0.9853, NARROW, digits=4) == "reproduced"  # between min and max
    assert reproduce.verdict(0.9858, NARROW, digits=4).startswith("consistent, more seeds needed: ours lower by 0.06 points")


def test_the_printed_precision_widens_the_interval():
    assert reproduce.verdict(0.986, [0.98604], digits=3) == "reproduced"  # 0.986 stands for 0.9855-0.9865
    assert reproduce.verdict(0.98600, [0.98604], digits=5).startswith("differs: ours higher")


def test_between_the_mean_interval_and_the_range_of_one_run_is_not_resolved():
    s = reproduce.compare_stats.summarize(NARROW)
    half = 4.302653 * 0.0002 * (1 + 1 / 3) ** 0.5  # t(0.975, 2 degrees of freedom) from a t table
    assert reproduce.prediction_interval(s) == pytest.approx((0.9852 - half, 0.9852 + half), abs=1e-7)
    assert 0.9852 - half < s["ci_low"] < s["ci_high"] < 0.9858 < 0.9852 + half
    assert reproduce.verdict(0.9858, NARROW, digits=4) == \
        "consistent, more seeds needed: ours lower by 0.06 points (inside the 95% range of one run of ours, 3 seeds)"
    assert reproduce.verdict(0.9863, NARROW, digits=4) == \
        "differs: ours lower by 0.11 points (outside the 95% range of one run of ours)"
    assert reproduce.verdict(0.9841, NARROW, digits=4) == \
        "differs: ours higher by 0.11 points (outside the 95% range of one run of ours)"


def test_one_seed_has_no_interval_only_the_printed_precision():
    assert reproduce.verdict(0.9423, [0.94234], digits=4) == "reproduced"  # rounds to the printed 0.9423
    assert reproduce.verdict(0.9423, [0.9430], digits=4) == "differs: ours higher by 0.07 points (1 seed, no interval)"


def test_no_value_is_not_measured():
    assert reproduce.verdict(0.9, [], digits=2) == "not measured: no completed run"
    assert reproduce.verdict(0.9, [math.nan], digits=2) == "not measured: no completed run"


# --- the claims table ------------------------------------------------------------------------

def test_every_claim_has_a_source_a_value_and_an_experiment_or_a_reason():
    keys = [claim.key for claim in reproduce.CLAIMS]
    assert len(keys) == len(set(keys))
    for claim in reproduce.CLAIMS:
        assert claim.source and claim.quoted and claim.claim, claim.key
        assert math.isfinite(claim.published) and claim.published > 0, claim.key
        assert claim.unit in (reproduce.ACCURACY, reproduce.SECONDS), claim.key
        assert claim.metric in reproduce.METRICS, claim.key
        if claim.not_measurable is None:
            assert claim.experiment, f"{claim.key}: neither an experiment nor a reason it is not measurable"
            reproduce.config_lib.load(reproduce.config_lib.experiments_dir() / f"{claim.experiment}.toml",
                                      list(claim.overrides))  # a real experiment with valid overrides
            assert claim.metric == "test_accuracy" or claim.epoch, claim.key


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('unit = "accuracy"', 'unit = "percent"', 1), "unit 'percent'"),
    (lambda t: t.replace("digits = 4", "digit = 4", 1), "missing digits"),
    (lambda t: t.replace("digits = 4", "digits = 4\nweight = 2", 1), "unknown key weight"),
    (lambda t: t.replace('key = "deck-val-2"', 'key = "deck-val-1"', 1), "key 'deck-val-1' used twice"),
    (lambda t: t + "[[claim", "cannot read the claims"),
])
def test_a_broken_claims_file_is_refused_naming_the_file_the_claim_and_the_key(tmp_path, edit, message):
    from lenet_keras.errors import ConfigError

    broken = tmp_path / "claims.toml"
    broken.write_text(edit(reproduce.CLAIMS_FILE.read_text()))
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        reproduce.load_claims(broken)
    assert str(raised.value).startswith(f"{broken}: ")


def test_the_published_numbers_the_issue_names_are_rows():
    published = {(claim.key.split("-")[0], round(claim.published, 5)) for claim in reproduce.CLAIMS}
    for expected in [("deck", 0.8838), ("deck", 0.9423), ("paper", 0.98722), ("lecun", 0.9905), ("lecun", 0.992), ("paper", 0.9027),
                     ("notebook", 0.9448), ("airbench94", 0.9401)]:
        assert expected in published


def test_the_quoted_words_are_in_the_seed_they_cite():
    seeds = Path(__file__).resolve().parent.parent.parent / "shared" / "seeds"
    if not seeds.is_dir():
        missing_shared("../shared/seeds")  # fails in CI, where .ci/run has ../shared beside the clone
    for claim in reproduce.CLAIMS:
        if claim.source.startswith("seed "):
            text = (seeds / claim.source.split()[1]).read_text(encoding="utf-8")
            for part in claim.quoted.split(" ... "):
                assert part.replace("%", "") in text.replace("%", ""), (claim.key, part)


# --- a scorecard over real tiny runs ---------------------------------------------------------

TINY = ("train.epochs=1", "data.train_subset=600", "data.test_subset=200", "train.histogram_freq=0")


def tiny_claims() -> tuple[Claim, ...]:
    common = dict(unit=ACCURACY, quoted="q", source="hand-made", experiment="mnist_lenet5", overrides=TINY)
    return (
        Claim("tiny-val-1", "validation accuracy after epoch 1", 0.5, digits=1, metric="val_accuracy", epoch=1, **common),
        Claim("tiny-test", "test accuracy", 0.99, digits=2, **common),
        Claim("tiny-test-at-1", "test accuracy after epoch 1", 0.5, digits=1, metric="test_accuracy_at_epoch", epoch=1,
              **{**common, "overrides": TINY + ("data.validation_split=0",)}),
        Claim("tiny-at-1-no-test", "test accuracy after epoch 1 of runs that validate on a split", 0.5, digits=1,
              metric="test_accuracy_at_epoch", epoch=1, **common),
        Claim("tiny-numpy", "NumPy LeNet-5 test accuracy", 0.9, digits=1, engine="numpy", **common),
        Claim("tiny-away", "an impossible row", 0.9, ACCURACY, "q", digits=1, source="hand-made",
              not_measurable="needs the moon"),
    )


@pytest.fixture(scope="module")
def scorecard(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("scorecard")
    index = reproduce.run_scorecard(root / "runs", root / "reports", data_dir=mnist_dir, seeds=(0, 1),
                                    claims=tiny_claims())
    return root, index


def read_runs(runs_dir: Path, pattern: str = "run-*", validation_split: float = 0.2) -> list[tuple[dict, pd.DataFrame]]:
    """(manifest, history) of the runs in runs_dir/mnist_lenet5/`pattern` with that validation split."""
    runs = []
    for path in sorted((runs_dir / "mnist_lenet5").glob(f"{pattern}/manifest.json")):
        manifest = json.loads(path.read_text())
        if manifest["config"]["data"]["validation_split"] == validation_split:
            runs.append((manifest, pd.read_csv(path.parent / "history.csv")))
    return runs


def test_scorecard_measures_n_and_median_from_the_run_files(scorecard):
    root, index = scorecard
    runs = read_runs(root / "runs")
    assert sorted(manifest["seed"] for manifest, _ in runs) == [0, 1]
    md = index.with_suffix(".md").read_text()
    val = statistics.median(float(history.loc[history.epoch == 0, "val_accuracy"].iloc[0]) for _, history in runs)
    test = statistics.median(manifest["test"]["accuracy"] for manifest, _ in runs)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert f"| 2 | {val * 100:.2f}% |" in rows["validation accuracy after epoch 1"]
    assert f"| 2 | {test * 100:.2f}% |" in rows["test accuracy"]
    assert "`python -m lenet_keras train mnist_lenet5 " + " ".join(TINY) + " --seeds 0 1 --runs-dir " in md
    # 1 epoch on 600 images is far from 99%, but 2 seeds give a wide range for one run (t(0.975, 1) = 12.7)
    assert re.search(r"\| (differs|consistent, more seeds needed): ours lower by [0-9.]+ points", rows["test accuracy"])
    every = [json.loads(p.read_text()) for p in (root / "runs" / "mnist_lenet5").glob("*/manifest.json")]
    assert len(every) == 6  # 2 seeds x (validation split, validated on the test set, NumPy engine)
    assert f"The 6 runs scored took {sum(m['wall_seconds'] for m in every):.0f} s of training in all" in md
    for manifest, history in runs:  # each seed's value and run directory in the details table
        value = float(history.loc[history.epoch == 0, "val_accuracy"].iloc[0])
        assert f"{manifest['seed']}: {value * 100:.2f}% (" in rows["tiny-val-1"]


def scorecard_rows(index: Path) -> dict[str, str]:
    """The scorecard's Markdown table rows by their first cell (the claim)."""
    md = index.with_suffix(".md").read_text()
    return {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}


def test_scorecard_reads_the_test_accuracy_at_an_epoch_from_runs_validated_on_the_test_set(scorecard):
    root, index = scorecard
    runs = read_runs(root / "runs", validation_split=0.0)
    assert sorted(manifest["seed"] for manifest, _ in runs) == [0, 1]
    # one epoch: the accuracy after epoch 1 on the test set is the final weights' test accuracy
    median = statistics.median(manifest["test"]["accuracy"] for manifest, _ in runs)
    assert f"| 2 | {median * 100:.2f}% |" in scorecard_rows(index)["test accuracy after epoch 1"]
    assert ("not measured: " in scorecard_rows(index)["test accuracy after epoch 1 of runs that validate on a split"]
            and "its validation set is not the test set" in index.with_suffix(".md").read_text())


def test_scorecard_scores_numpy_runs_trained_by_the_scratch_engine(scorecard):
    root, index = scorecard
    runs = read_runs(root / "runs", pattern="numpy-*")
    assert sorted(manifest["seed"] for manifest, _ in runs) == [0, 1]
    median = statistics.median(manifest["test"]["accuracy"] for manifest, _ in runs)
    row = scorecard_rows(index)["NumPy LeNet-5 test accuracy"]
    assert f"| 2 | {median * 100:.2f}% |" in row
    assert "for s in 0 1; do python -m lenet_keras scratch mnist_lenet5 " in row


def test_scorecard_marks_impossible_rows_with_their_reason(scorecard):
    root, index = scorecard
    md = index.with_suffix(".md").read_text()
    page = index.read_text()
    for text in (md, page):
        assert "not measurable here: needs the moon" in text
    assert "<code>python -m lenet_keras train mnist_lenet5 " in page  # code spans as HTML, no Markdown backticks
    assert (index.parent / "differences.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_reuses_completed_seeds(scorecard, capsys):
    root, _ = scorecard
    before = sorted(p.name for p in (root / "runs" / "mnist_lenet5").iterdir())
    reproduce.run_scorecard(root / "runs", root / "reports2", seeds=(0, 1), claims=tiny_claims()[:1])
    assert sorted(p.name for p in (root / "runs" / "mnist_lenet5").iterdir()) == before
    assert capsys.readouterr().out.count("skipped") == 2


def test_the_reproduce_command_parses_the_options():
    from lenet_keras import cli

    args = cli.parser().parse_args(["reproduce", "--seeds", "3", "4", "--runs-dir", "r"])
    assert (args.seeds, args.runs_dir, args.reports_dir) == ([3, 4], Path("r"), Path("reports"))
    assert cli.parser().parse_args(["reproduce"]).seeds == list(reproduce.DEFAULT_SEEDS)


def test_table_row_shows_n_median_intervals_and_range():
    claim = Claim("x", "a claim", 0.9905, ACCURACY, "q", 4, "hand-made", "mnist_lenet5")
    row = reproduce.Row(claim, (0, 1, 2), (0.90, 0.91, 0.95), "differs", "python -m lenet_keras train mnist_lenet5")
    cells = reproduce.table_row(row)
    s = reproduce.compare_stats.summarize([0.90, 0.91, 0.95])
    assert (cells["n"], cells["ours median"], cells["min-max"], cells["published"]) == (3, "91.00%", "90.00%-95.00%", "99.05%")
    assert cells["95% CI of mean"] == f"{s['ci_low'] * 100:.2f}%-{s['ci_high'] * 100:.2f}%"
    assert cells["command"] == "`python -m lenet_keras train mnist_lenet5`"


def test_the_scorecard_trains_into_its_own_folder():
    """Its short runs (e.g. 5-epoch mnist_lenet5) must not land in runs/mnist_lenet5/, where `make mnist`'s report reads."""
    from pathlib import Path

    from lenet_keras import cli

    assert cli.parser().parse_args(["reproduce"]).runs_dir == Path("runs/reproduction")
    assert "--runs-dir $(RUNS)/reproduction" in (Path(__file__).resolve().parent.parent / "Makefile").read_text()
