"""Statistics of a comparison: runs -> groups of seeds -> summaries and differences with intervals.

Owns: which runs form a group (equal engine and resolved config, the seed aside), what a run's
test accuracy, training seconds and training images/s are, the per-group summary (n, mean with a
95% confidence interval, median, min-max) and the difference of each group from a baseline group
(Welch's t-test and its confidence interval, and how many seeds per group a difference of that
size needs). All statistics come from `scipy.stats`; nothing here draws or writes files.

Definitions used everywhere (report pages, the reproduction scorecard):
- test accuracy: `manifest["test"]["accuracy"]`, top-1 as a fraction (0..1);
- training seconds, compared like with like (`seconds_basis`): where every run compared records
  them, the manifest's `training_seconds` (its epochs without their validation passes,
  `rundir.seconds_block`); else for all of them the sum of `history.csv`'s `epoch_seconds`, each
  engine timing its own epochs (training steps plus, where the engine times them together, the
  epoch's validation pass). Start-up and data loading are out either way;
- training images/s: training images (`manifest["data"]["train_images"]`) x epochs / training seconds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from lenet_keras import run_index
from lenet_keras.run_index import engine_of

CONFIDENCE = 0.95
"""Level of every confidence interval (two-sided)."""
POWER = 0.8
"""Probability of resolving a difference that `seeds_needed` plans for (at significance 1 - CONFIDENCE)."""


def flat_config(manifest: dict) -> dict[str, str]:
    """The run's resolved config as {dotted key: value as text}, without `seed`; adds `engine`.

    `train.precision` is the precision the run computed in (the manifest's `precision.ran`,
    `lenet_keras.hardware.resolve_precision`) where the manifest records one, so "auto" runs
    group by what ran on their machine, not by what the file asked for."""
    flat = run_index.flatten(manifest.get("config") or {})
    values = {key: run_index.config_text(value) for key, value in flat.items() if key != "seed"}
    ran = (manifest.get("precision") or {}).get("ran")
    if ran is not None:
        values["train.precision"] = ran
    values["engine"] = engine_of(manifest)
    return values


@dataclass
class Group:
    """Runs that share engine and config except the seed: one recipe measured over seeds.

    `label` is a short name ("mnist_lenet5 · keras", with the differing keys when two groups would share it); `runs` are `report.Run`s;
    `config` the shared flat config (`flat_config`)."""

    label: str
    config: dict[str, str]
    runs: list = field(default_factory=list)

    @property
    def seeds(self) -> list:
        """The runs' seeds in run order (None for an unseeded run)."""
        return [run.manifest.get("seed") for run in self.runs]


def group_runs(runs: list) -> list[Group]:
    """Completed runs grouped by `flat_config`, in order of each group's first run.

    Raises:
        ValueError: `runs` holds no completed run.
    """
    groups: dict[tuple, Group] = {}
    for run in runs:
        if run.manifest.get("status") != "completed":
            continue
        config = flat_config(run.manifest)
        key = tuple(sorted(config.items()))
        if key not in groups:
            name = config.get("name") or run.manifest.get("experiment", "?")
            groups[key] = Group(f"{name} · {config['engine']}", config)
        groups[key].runs.append(run)
    if not groups:
        raise ValueError("no completed run to compare")
    _disambiguate(list(groups.values()))
    return list(groups.values())


def _disambiguate(groups: list[Group]) -> None:
    """Append the differing keys to labels that would otherwise be equal."""
    by_label: dict[str, list[Group]] = {}
    for group in groups:
        by_label.setdefault(group.label, []).append(group)
    for same in by_label.values():
        if len(same) > 1:
            keys = differing_keys(same)
            for group in same:
                group.label += " (" + ", ".join(f"{k}={group.config.get(k, '-')}" for k in keys[:3]) + ")"


def differing_keys(groups: list[Group]) -> list[str]:
    """Config keys with two or more values among the groups that record them, sorted. A key some
    groups do not record (a peer's config has no `augment.*`) counts only where it is recorded:
    see `partial_keys`."""
    keys = sorted({key for group in groups for key in group.config})
    return [key for key in keys if len({group.config[key] for group in groups if key in group.config}) > 1]


def partial_keys(groups: list[Group]) -> list[str]:
    """Config keys recorded by some groups but not all (other engines describe their recipe with
    fewer keys), sorted."""
    keys = sorted({key for group in groups for key in group.config})
    return [key for key in keys if not all(key in group.config for group in groups)]


SECONDS_BASES = {
    "training": "training seconds without the per-epoch validation passes (each run's manifest `training_seconds`)",
    "epochs": "the sum of each run's epoch times as its engine measured them (training steps and, where the "
              "engine times them together, the epoch's validation pass), as not every run compared records "
              "its training seconds apart",
}
"""What "training seconds" are in a comparison, by `seconds_basis`."""


def training_seconds_only(manifest: dict) -> float:
    """The run's training seconds without validation passes (`rundir.seconds_block`); NaN when its
    manifest does not record them apart (older runs, programs that time validation with training)."""
    value = manifest.get("training_seconds") if "validation_seconds" in manifest else None
    return math.nan if value is None else float(value)


def seconds_basis(runs) -> str:
    """"training" when every run in `runs` records its training seconds apart, else "epochs"."""
    return "training" if all(math.isfinite(training_seconds_only(run.manifest)) for run in runs) else "epochs"


def run_measures(run, basis: str = "epochs") -> dict[str, float]:
    """A completed run's test accuracy (fraction), training seconds on `basis` (`SECONDS_BASES`),
    and training images/s (NaN when not recorded)."""
    manifest, history = run.manifest, run.history
    epoch_sum = float(history["epoch_seconds"].sum()) if history is not None and "epoch_seconds" in history else math.nan
    seconds = training_seconds_only(manifest) if basis == "training" else epoch_sum
    epochs = len(history) if history is not None else 0
    images = manifest.get("data", {}).get("train_images")
    test = manifest.get("test", {}) or {}
    return {
        "test_accuracy": float(test.get("accuracy", math.nan)),
        "training_seconds": seconds,
        "images_per_second": images * epochs / seconds if images and seconds > 0 else math.nan,
    }


def summarize(values) -> dict[str, float]:
    """n, mean, its 95% confidence interval (Student's t, `scipy.stats.t.interval`), median, min,
    max and standard deviation (ddof 1) of finite `values`; the interval is NaN for n < 2 and
    the mean itself for n >= 2 equal values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, **dict.fromkeys(("mean", "ci_low", "ci_high", "median", "min", "max", "std"), math.nan)}
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    low = high = math.nan
    if n > 1:
        low, high = (float(x.mean()),) * 2 if std == 0 else stats.t.interval(
            CONFIDENCE, n - 1, loc=x.mean(), scale=stats.sem(x))
    return {"n": n, "mean": float(x.mean()), "ci_low": float(low), "ci_high": float(high),
            "median": float(np.median(x)), "min": float(x.min()), "max": float(x.max()), "std": std}


def difference(values, baseline) -> dict[str, float]:
    """Difference in means `values` - `baseline` with Welch's t-test (`scipy.stats.ttest_ind`,
    equal_var=False): the difference, its 95% confidence interval, the two-sided p-value, and
    `seeds_needed` (per group, `seeds_needed`). NaN where either side has fewer than 2 values.

    `zero_spread` is True when both sides have 2 or more values and no spread at all (every run
    of each group gave the same value: deterministic runs, quantized accuracies): no t-test
    applies then, and the interval, p-value and seeds needed are NaN rather than a zero-width
    interval and p = 0."""
    a = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    b = np.asarray([v for v in baseline if math.isfinite(v)], dtype=float)
    out = {"difference": float(a.mean() - b.mean()) if len(a) and len(b) else math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "seeds_needed": math.nan,
           "zero_spread": False}
    if len(a) < 2 or len(b) < 2:
        return out
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # every value equal (a float std would not be exactly 0)
        return out | {"zero_spread": True}
    with warnings.catch_warnings():  # one side's values all equal: scipy warns of precision loss, the result stands
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_ind(a, b, equal_var=False)
    interval = test.confidence_interval(CONFIDENCE)
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return out | {"ci_low": float(interval.low), "ci_high": float(interval.high), "p_value": float(test.pvalue),
                  "seeds_needed": seeds_needed(out["difference"], pooled)}


def seeds_needed(effect: float, std: float, limit: int = 1000) -> float:
    """Seeds per group for a two-sided two-sample t-test at significance 1 - CONFIDENCE to find
    a true difference `effect` with probability POWER when each run varies by `std` (same units):
    the smallest n with power >= POWER, power from the noncentral t distribution
    (`scipy.stats.nct`); NaN when effect is 0 or above `limit` seeds."""
    if not effect or not math.isfinite(effect) or not math.isfinite(std):
        return math.nan
    if std == 0:
        return 2
    for n in range(2, limit + 1):
        df = 2 * n - 2
        critical = stats.t.ppf(1 - (1 - CONFIDENCE) / 2, df)
        shift = abs(effect) / (std * math.sqrt(2 / n))
        power = stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift)
        if power >= POWER:
            return n
    return math.nan


def group_table(groups: list[Group]) -> pd.DataFrame:
    """One row per group: n, seeds, test accuracy (mean, 95% CI, median, min, max), training
    seconds (mean, 95% CI, median, min, max) and training images/s (median)."""
    rows, basis = [], seconds_basis([run for group in groups for run in group.runs])
    for group in groups:
        measures = [run_measures(run, basis) for run in group.runs]
        accuracy = summarize(m["test_accuracy"] for m in measures)
        seconds = summarize(m["training_seconds"] for m in measures)
        rows.append({"group": group.label, "n": len(group.runs),
                     "seeds": " ".join("-" if s is None else str(s) for s in group.seeds),
                     **{f"test acc {k}": accuracy[k] for k in ("mean", "ci_low", "ci_high", "median", "min", "max")},
                     **{f"train s {k}": seconds[k] for k in ("mean", "ci_low", "ci_high", "median", "min", "max")},
                     "images/s": summarize(m["images_per_second"] for m in measures)["median"]})
    return pd.DataFrame(rows)


def difference_table(groups: list[Group], baseline: Group) -> pd.DataFrame:
    """One row per group other than `baseline`: the difference from it in test accuracy
    (fraction; percentage points are 100x) and in training seconds, each with its 95% CI,
    Welch p-value, seeds per group needed to resolve a difference of that size, and whether
    both groups have zero spread (`difference`)."""
    basis = seconds_basis([run for group in [*groups, baseline] for run in group.runs])
    base = [run_measures(run, basis) for run in baseline.runs]
    rows = []
    for group in groups:
        if group is baseline:
            continue
        measures = [run_measures(run, basis) for run in group.runs]
        row = {"group": group.label, "vs": baseline.label}
        for key, name in (("test_accuracy", "test acc"), ("training_seconds", "train s")):
            d = difference([m[key] for m in measures], [m[key] for m in base])
            row |= {f"Δ {name}": d["difference"], f"Δ {name} ci_low": d["ci_low"], f"Δ {name} ci_high": d["ci_high"],
                    f"{name} p": d["p_value"], f"{name} seeds needed": d["seeds_needed"],
                    f"{name} zero spread": d["zero_spread"]}
        rows.append(row)
    return pd.DataFrame(rows)
