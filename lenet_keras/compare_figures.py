"""Figures of the comparison report (`lenet_keras.compare`): groups of seeds on shared axes.

Each function takes plain data (`CurveGroup`s: per-run DataFrames of `history.csv`, test
accuracies) and returns a `matplotlib.figure.Figure`; `figures.save_png` writes it. A group of
several runs is drawn as its median curve with a min-max band, a single run as a line. Error
rates (1 - top-1 accuracy) go on log axes with plain-number ticks (`figures.readable_log_axis`),
where 2% and 1% are as far apart as 20% and 10%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from lenet_keras import figures
from lenet_keras.figures import plt

MIN_ERROR = 1e-4
"""Error rates are drawn no lower than this (a run with 100% accuracy would be at log(0))."""


@dataclass(frozen=True)
class CurveGroup:
    """One group as drawn: `label` (legend text), `short_label` (axis text), `histories` (one `history.csv` DataFrame per
    run: epoch 0-based, val_accuracy fraction, epoch_seconds), `test_accuracies` (fractions, one
    per run), `validation_is_test` (the runs validate on the test set: drawn dashed, labelled)."""

    label: str
    short_label: str
    histories: tuple
    test_accuracies: tuple
    validation_is_test: bool = False


def epoch_statistics(histories, column: str) -> pd.DataFrame:
    """Per epoch (1-based `epoch` column) the median, min and max of `column` over runs that
    reached that epoch, and the median cumulative `epoch_seconds` (`seconds`; NaN without it)."""
    rows = []
    longest = max(len(h) for h in histories)
    for k in range(longest):
        values = [float(h[column].iloc[k]) for h in histories if len(h) > k and column in h]
        clock = [float(h["epoch_seconds"].iloc[: k + 1].sum()) for h in histories if len(h) > k and "epoch_seconds" in h]
        if values:
            rows.append({"epoch": k + 1, "median": np.median(values), "min": min(values), "max": max(values),
                         "seconds": np.median(clock) if clock else np.nan, "runs": len(values)})
    return pd.DataFrame(rows)


def _draw_group(ax, group: CurveGroup, colour, x: str) -> None:
    """One group's validation error against `x` ("epoch" or "seconds") and its test error at the end."""
    histories = [h for h in group.histories if "val_accuracy" in h]
    if not histories:
        return
    table = epoch_statistics(histories, "val_accuracy")
    if x == "seconds":
        table = table.dropna(subset=["seconds"])
        if table.empty:
            return
    style = "--" if group.validation_is_test else "-"
    error = lambda column: np.maximum(1 - table[column], MIN_ERROR)  # noqa: E731
    ax.plot(table[x], error("median"), style, color=colour, lw=1.6, marker="o", ms=2.5, label=group.label)
    if len(histories) > 1:
        ax.fill_between(table[x], error("max"), error("min"), color=colour, alpha=0.18, lw=0)
    tests = [a for a in group.test_accuracies if a == a]
    if tests:
        end = table[x].iloc[-1]
        ax.errorbar([end], [max(1 - np.median(tests), MIN_ERROR)],
                    yerr=[[max(np.median(tests) - min(tests), 0)], [max(max(tests) - np.median(tests), 0)]],
                    fmt="D", color=colour, mec="black", mew=0.6, ms=6, capsize=3)


def validation_curves(groups: list[CurveGroup]) -> plt.Figure:
    """Validation error (log scale) of each group against epochs (left) and training seconds
    (right): median line, min-max band over seeds; a black-edged diamond at the end is the test
    error (median, whiskers min-max). Dashed: the group's "validation" set is the test set."""
    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = plt.cm.tab10(np.arange(len(groups)) % 10)
    for colour, group in zip(colours, groups):
        _draw_group(by_epoch, group, colour, "epoch")
        _draw_group(by_time, group, colour, "seconds")
    by_epoch.set(xlabel="epoch", ylabel="validation error = 1 - top-1 accuracy (log scale)",
                 title="against epochs")
    by_time.set(xlabel="training seconds (sum of epoch times)", title="against training time")
    for ax in (by_epoch, by_time):
        figures.readable_log_axis(ax, "y")
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.legend(*by_epoch.get_legend_handles_labels(), loc="lower center", ncol=min(len(groups), 2), fontsize=8,
                  bbox_to_anchor=(0.5, -0.02 - 0.045 * ((len(groups) + 1) // 2)))
    figure.suptitle("validation error per epoch: median line, min-max band over seeds; "
                    "diamond = test error at the end (dashed: validated on the test set)", fontsize=9)
    figure.tight_layout()
    return figure


def test_accuracy_by_group(groups: list[CurveGroup], intervals: list[tuple[float, float, float]]) -> plt.Figure:
    """Each group's test accuracies (percent; one dot per run) and its mean with the 95%
    confidence interval (`intervals`: (mean, low, high) fractions per group, NaN where n < 2)."""
    figure, ax = plt.subplots(figsize=(8, 0.6 + 0.55 * len(groups)))
    colours = plt.cm.tab10(np.arange(len(groups)) % 10)
    for row, (colour, group, (mean, low, high)) in enumerate(zip(colours, groups, intervals)):
        y = len(groups) - 1 - row
        points = 100 * np.asarray(group.test_accuracies, dtype=float)
        jitter = np.linspace(-0.12, 0.12, len(points)) if len(points) > 1 else np.zeros(1)
        ax.plot(points, y + jitter, "o", color=colour, alpha=0.75, ms=5)
        if low == low:
            ax.errorbar([100 * mean], [y], xerr=[[100 * (mean - low)], [100 * (high - mean)]], fmt="|", color="black",
                        ms=14, capsize=4, lw=1.2)
    ax.set_yticks(range(len(groups)), [g.short_label for g in reversed(groups)], fontsize=8)
    ax.set(xlabel="test top-1 accuracy (%): dots = runs, bar = mean with 95% confidence interval",
           ylim=(-0.6, len(groups) - 0.4))
    ax.grid(axis="y", alpha=0)
    figure.tight_layout()
    return figure
