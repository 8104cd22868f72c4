"""Matplotlib figures of classification runs, drawn from plain arrays and DataFrames.

Shared by the report (`lenet_keras.report`) and by training's TensorBoard image of sample
predictions, so both show the same picture. Nothing here reads files or knows about Keras.
Every function returns a `matplotlib.figure.Figure`; `save_png` writes one atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

RIGHT, WRONG = "#1a9641", "#d7191c"
TRAIN, VALIDATION = "#2b83ba", "#fdae61"

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "font.size": 9,
    }
)


def save_png(figure: plt.Figure, path: Path) -> Path:
    """Write `figure` as PNG to `path` (`manifest.atomic_path`: temp file + rename) and close it."""
    from lenet_keras.manifest import atomic_path

    try:
        with atomic_path(Path(path)) as tmp:
            figure.savefig(tmp, format="png", bbox_inches="tight")
    finally:
        plt.close(figure)
    return Path(path)


def png_bytes(figure: plt.Figure) -> bytes:
    """The PNG encoding of `figure` (closes it), e.g. for `tf.summary.image`."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


class ReadableLogLocator(LogLocator):
    """Major ticks of a log axis that always label the range it shows.

    The multiples of each power of ten depend on the span of the view: 1 per decade over more
    than two decades, 1, 2, 5 over one to two, 1, 2, 3, 5, 7 within one decade; when that leaves
    under two ticks in view (a range like 0.42..0.61), evenly spaced round numbers instead.
    """

    def tick_values(self, vmin, vmax):
        """The tick positions for the view `vmin`..`vmax` (see the class docstring)."""
        low, high = sorted((vmin, vmax))
        if not low > 0 or not np.isfinite(high):
            return super().tick_values(vmin, vmax)
        span = high / low
        subs = (1.0,) if span > 100 else (1.0, 2.0, 5.0) if span > 10 else (1.0, 2.0, 3.0, 5.0, 7.0)
        decades = np.arange(np.floor(np.log10(low)), np.ceil(np.log10(high)) + 1)
        decades = decades[::max(1, -(-len(decades) // 9))]  # at most about 9 decades labelled
        ticks = np.array([m * 10.0**d for d in decades for m in subs])
        if ((ticks >= low * (1 - 1e-9)) & (ticks <= high * (1 + 1e-9))).sum() >= 2:
            return ticks
        linear = MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
        return linear[linear > 0]


def plain_number(value: float, position=None) -> str:
    """A tick label as a plain number (0.05, 0.3, 1, 20; 1e-05 below 0.0001), never 10^x."""
    return f"{value:.4g}"


def readable_log_axis(ax: plt.Axes, axis: str = "y") -> None:
    """Put `ax`'s `axis` ("x" or "y") on a log scale whose ticks are labelled with plain numbers.

    Major ticks from `ReadableLogLocator` (0.2, 0.3, 0.5, 0.7, 1 within a decade; 0.1, 0.2, 0.5,
    1, 2 over two), labelled by `plain_number`; unlabelled minor ticks at the other multiples.
    Works before or after plotting (ticks follow the view). Also for a colour bar with a
    `LogNorm`: `readable_log_axis(colorbar.ax, "y")` (its scale is already log and stays).
    """
    target = ax.yaxis if axis == "y" else ax.xaxis
    if target.get_scale() != "log":
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(ReadableLogLocator())
    target.set_major_formatter(FuncFormatter(plain_number))
    target.set_minor_locator(LogLocator(subs=np.arange(2, 10)))
    target.set_minor_formatter(NullFormatter())


def training_curves(history: pd.DataFrame, title: str) -> plt.Figure:
    """Accuracy and loss per epoch, training vs validation, the best validation epoch marked.

    The loss axis is log-scale with plain-number ticks (`readable_log_axis`).

    Args:
        history: one row per epoch with columns epoch (0-based), accuracy, loss,
            val_accuracy, val_loss (as `history.csv`); accuracies are fractions.
        title: the figure title (e.g. the run id).
    """
    figure, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    epochs = history["epoch"] + 1
    best = history["val_accuracy"].idxmax()
    for ax, metric, label in ((acc_ax, "accuracy", "top-1 accuracy"), (loss_ax, "loss", "loss (log scale)")):
        ax.plot(epochs, history[metric], "o-", ms=3, color=TRAIN, label="training")
        ax.plot(epochs, history[f"val_{metric}"], "o-", ms=3, color=VALIDATION, label="validation")
        ax.axvline(epochs[best], color="grey", ls=":", lw=1)
        ax.plot(epochs[best], history[f"val_{metric}"][best], "*", ms=11, color=VALIDATION, mec="black", mew=0.6)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    readable_log_axis(loss_ax, "y")
    acc_ax.annotate(
        f"best val {history['val_accuracy'][best]:.4f}\n(epoch {epochs[best]})",
        (epochs[best], history["val_accuracy"][best]),
        textcoords="offset points", xytext=(-10, -28), ha="right", fontsize=8,
    )
    acc_ax.legend(loc="lower right")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def overlaid_curves(histories: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """Validation accuracy and loss of several runs on shared axes (one colour per run).

    Args:
        histories: run id -> its `history.csv` DataFrame (see `training_curves`).
    """
    figure, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(9, 3.6))
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(histories), 1)))
    for colour, (run_id, history) in zip(colours, histories.items()):
        epochs = history["epoch"] + 1
        acc_ax.plot(epochs, history["val_accuracy"], "-", color=colour, label=run_id)
        acc_ax.plot(epochs, history["accuracy"], ":", color=colour, lw=1)
        loss_ax.plot(epochs, history["val_loss"], "-", color=colour, label=run_id)
        loss_ax.plot(epochs, history["loss"], ":", color=colour, lw=1)
    for ax in (acc_ax, loss_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    acc_ax.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy (solid: validation, dotted: training)")
    loss_ax.set(xlabel="epoch", ylabel="loss (log scale)", title="loss (solid: validation, dotted: training)")
    readable_log_axis(loss_ax, "y")
    acc_ax.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure


def error_curves(histories: Mapping[str, pd.DataFrame], validation_label: str,
                 published: Sequence[tuple[str, int, float]] = ()) -> plt.Figure:
    """Error rates (percent, log scale) against epochs, as LeCun et al. 1998 draw them (Fig. 5).

    Args:
        histories: run id -> its `history.csv` DataFrame (see `training_curves`); the training
            error is 1 - `accuracy`, counted while the epoch trains (dotted), the other 1 - `val_accuracy`
            after it (solid).
        validation_label: what the validation set is ("test error" for runs validated on the test set).
        published: (label, epoch, error as a fraction) points drawn as stars, e.g. a paper's final error.
    """
    figure, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(histories), 1)))
    for colour, (run_id, history) in zip(colours, histories.items()):
        epochs = history["epoch"] + 1
        ax.plot(epochs, 100 * (1 - history["val_accuracy"]), "o-", ms=3, color=colour, label=f"{run_id}: {validation_label}")
        ax.plot(epochs, 100 * (1 - history["accuracy"]), ":", color=colour, lw=1.2,
                label=f"{run_id}: training error (during the epoch)")
    for label, epoch, error in published:
        ax.plot([epoch], [100 * error], "*", ms=14, color=VALIDATION, mec="black", mew=0.6, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch (pass over the training set)", ylabel="error rate, % (log scale)")
    readable_log_axis(ax, "y")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    return figure


def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str]) -> plt.Figure:
    """Confusion matrix with the count in every cell; colour = fraction of the true class.

    Args:
        matrix: int array (classes, classes); rows are true classes, columns predictions.
    """
    n = len(class_names)
    row_fraction = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.5, 0.45 * n + 1.5)
    figure, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(row_fraction, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if row_fraction[i, j] > 0.5 else ("#b2182b" if i != j else "black"))
    ax.set_xticks(range(n), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title="confusion matrix (test set, counts)")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    figure.tight_layout()
    return figure


def per_class_accuracy(accuracy: np.ndarray, class_names: Sequence[str], overall: float) -> plt.Figure:
    """Bar chart of top-1 accuracy per class (fractions), sorted, with the overall accuracy line."""
    order = np.argsort(accuracy)
    figure, ax = plt.subplots(figsize=(7, 0.28 * len(class_names) + 1.2))
    bars = ax.barh(range(len(order)), accuracy[order], color=[WRONG if a < overall else TRAIN for a in accuracy[order]])
    ax.axvline(overall, color="black", ls="--", lw=1, label=f"overall {overall:.4f}")
    for bar, value in zip(bars, accuracy[order]):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.4f}", va="center", fontsize=7)
    ax.set_yticks(range(len(order)), [class_names[i] for i in order])
    low = max(0.0, min(float(accuracy.min()), overall) - 0.05)
    ax.set_xlim(low, 1.0 + (1.0 - low) * 0.12)
    ax.set(xlabel="top-1 accuracy (fraction)", title="per-class accuracy (test set)")
    ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


def sample_predictions(
    images: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    columns: int = 8,
    title: str = "sample test predictions",
) -> plt.Figure:
    """Grid of images titled true / predicted (confidence); green when right, red when wrong.

    Args:
        images: uint8 (N, H, W, C), C = 1 or 3.
        labels: int (N,) true class indices.
        probabilities: float (N, classes) predicted class probabilities.
        title: what the images are (how they were chosen); the right/wrong count is appended.
    """
    rows = int(np.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.15, rows * 1.6), squeeze=False)
    predicted = probabilities.argmax(axis=1)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label, guess, probs in zip(axes.flat, images, labels, predicted, probabilities):
        ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray_r" if image.shape[-1] == 1 else None)
        right = guess == label
        ax.set_title(
            f"true {class_names[label]}\npred {class_names[guess]} ({probs[guess]:.0%})",
            fontsize=7, color=RIGHT if right else WRONG,
        )
        if not right:
            for spine in ax.spines.values():
                spine.set(visible=True, color=WRONG, lw=2)
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
    figure.suptitle(f"{title}: {int((predicted == labels).sum())}/{len(labels)} right, wrong in red", fontsize=9)
    figure.tight_layout()
    return figure


def augmentation_preview(images: np.ndarray, title: str = "augmentation preview", columns: int = 8) -> plt.Figure:
    """One training image (first) and several augmented draws of it, in a grid of `columns`.

    Args:
        images: uint8 (N, H, W, C): the original, then N-1 augmented versions.
    """
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.4 * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.flat, images)):
        ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray_r" if image.shape[-1] == 1 else None)
        ax.set_title("original" if i == 0 else f"draw {i}", fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def curves_by_hyperparameter(histories: Mapping[str, pd.DataFrame], values: Mapping[str, object], key: str,
                             metric: str = "val_accuracy", best: str | None = None) -> plt.Figure:
    """`metric` per epoch of every trial, coloured by the value of one hyperparameter `key`.

    Args:
        histories: trial label -> its `history.csv` DataFrame.
        values: trial label -> that trial's value of `key` (numbers get a colour scale, log
            when all are positive and span over 10x; other values one colour each).
        best: the best trial's label, drawn thicker and named in the legend.
    """
    figure, ax = plt.subplots(figsize=(6.4, 3.8))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values())
    distinct = sorted(set(values.values()), key=lambda v: (str(type(v)), v))
    if numeric and len(distinct) > 1:
        low, high = min(distinct), max(distinct)
        use_log = low > 0 and high / low >= 10
        norm = (matplotlib.colors.LogNorm if use_log else matplotlib.colors.Normalize)(low, high)
        colour_of = lambda v: plt.cm.viridis(norm(v) * 0.9)  # noqa: E731
        mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=matplotlib.colors.ListedColormap(
            plt.cm.viridis(np.linspace(0, 0.9, 256))))
        colorbar = figure.colorbar(mappable, ax=ax, label=key)
        if use_log:
            readable_log_axis(colorbar.ax, "y")
    else:
        palette = plt.cm.tab10(np.arange(len(distinct)) % 10)
        colour_of = lambda v: palette[distinct.index(v)]  # noqa: E731
        for v in distinct:
            ax.plot([], [], color=colour_of(v), label=f"{key} = {v}")
    for label, history in histories.items():
        if metric not in history or not len(history):
            continue
        is_best = label == best
        ax.plot(history["epoch"] + 1, history[metric], "-", color=colour_of(values[label]),
                lw=2.6 if is_best else 1.1, alpha=1 if is_best else 0.75, zorder=3 if is_best else 2,
                label=f"best: {label}" if is_best else None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=f"{metric} of every trial, coloured by {key}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right" if "accuracy" in metric else "upper right")
    figure.tight_layout()
    return figure


def heatmap(table: pd.DataFrame, value_label: str, best_high: bool = True) -> plt.Figure:
    """A metric over two hyperparameters: `table` rows = one axis' values, columns = the other's.

    Each cell shows its value; the best cell is outlined. NaN cells (no finished trial) are blank.
    """
    figure, ax = plt.subplots(figsize=(1.1 * len(table.columns) + 2.6, 0.7 * len(table.index) + 1.6))
    values = table.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="viridis" if best_high else "viridis_r", aspect="auto")
    ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
    ax.set_yticks(range(len(table.index)), [str(i) for i in table.index])
    ax.set(xlabel=table.columns.name, ylabel=table.index.name, title=value_label)
    ax.grid(False)
    finite = np.isfinite(values)
    if finite.any():
        middle = np.nanmean(values)
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.4f}", ha="center", va="center", fontsize=8,
                        color="black" if (v >= middle) == best_high else "white")
        flat = np.where(finite, values, -np.inf if best_high else np.inf)
        i, j = np.unravel_index(np.argmax(flat) if best_high else np.argmin(flat), values.shape)
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec=WRONG, lw=2.2))
    figure.colorbar(image, ax=ax, label=value_label)
    figure.tight_layout()
    return figure
