"""Reports: run directories -> pandas tables -> matplotlib figures -> `reports/<experiment>/`.

`build("mnist_lenet5")` reads every `runs/mnist_lenet5/*/` (in run-id order) and writes
`reports/mnist_lenet5/index.html` and its Markdown twin `index.md`, with PNG figures beside
them: a table of final metrics per run, all runs' curves overlaid, and for each run its
training curves, test-set confusion matrix, most-confused pairs, per-class accuracy and a grid
of sample predictions with the mistakes marked. It never retrains and needs no dataset: all it
shows comes from the run directories (`manifest.json`, `history.csv`, `predictions.npz`).
Runs that did not complete are listed with their status and left out of the figures.

The pages are made with `lenet_keras.pages` (tables, paths as shown, tables of contents,
publishing). A run's `command` is shown as the manifest recorded it (what the user typed,
absolute paths included: it is the command to rerun).
"""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lenet_keras import figures
from lenet_keras import run_index
from lenet_keras.errors import RunDirectoryError
from lenet_keras.manifest import read_json
from lenet_keras.pages import display_path, html_table, inline_html, markdown_table, publish, write_pages


@dataclass(frozen=True)
class Run:
    """One run directory as read back: its manifest, history (or None) and test predictions (or None)."""

    run_id: str
    path: Path
    manifest: dict
    history: pd.DataFrame | None
    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    sample_indices: np.ndarray | None = None
    sample_images: np.ndarray | None = None
    sample_title: str = "sample test predictions"
    augmentation_preview: np.ndarray | None = None

    @property
    def completed(self) -> bool:
        """True when training finished and the test predictions were written."""
        return self.manifest.get("status") == "completed" and self.probabilities is not None


def read_run(path: Path) -> Run:
    """Read one run directory.

    Raises:
        RunDirectoryError: `manifest.json` is missing or not valid JSON (names the file).
    """
    try:
        manifest = read_json(path / "manifest.json")
    except (OSError, ValueError) as error:
        raise RunDirectoryError(f"{path / 'manifest.json'}: unreadable run manifest: {error}") from None
    history_path = path / "history.csv"
    history, arrays = None, {}
    try:
        if history_path.is_file() and history_path.stat().st_size:
            history = pd.read_csv(history_path)
        if (path / "predictions.npz").is_file():
            with np.load(path / "predictions.npz") as npz:
                arrays = {key: npz[key] for key in ("labels", "probabilities", "sample_indices", "sample_images")}
                if "sample_title" in npz:
                    arrays["sample_title"] = str(npz["sample_title"])
                if "augmentation_preview" in npz:
                    arrays["augmentation_preview"] = npz["augmentation_preview"]
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as error:
        manifest = {**manifest, "status": f"unreadable: {type(error).__name__}: {error}"}
        history, arrays = None, {}
    return Run(path.name, path, manifest, history, **arrays)


def read_runs(experiment_dir: Path) -> list[Run]:
    """All run directories (those with a `manifest.json`) of an experiment: run-NNN by number, then others by name.

    Raises:
        RunDirectoryError: the folder does not exist or holds no run.
    """
    paths = [record.path for record in run_index.scan(experiment_dir)]
    if not paths:
        raise RunDirectoryError(
            f"no runs in {experiment_dir}: train one first, e.g. "
            f"python -m lenet_keras train experiments/{experiment_dir.name}.toml"
        )
    return [read_run(p) for p in paths]


def confusion_counts(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix (num_classes, num_classes) int64: rows true class, columns predicted.

    `labels` and `predicted` are int arrays (N,) of class indices in [0, num_classes).
    """
    return np.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def most_confused(matrix: np.ndarray, class_names, count: int = 5) -> pd.DataFrame:
    """The `count` largest off-diagonal cells: true class, predicted class, number of images."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None, kind="stable")[::-1][:count]
    rows = [(class_names[i], class_names[j], int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j]]
    return pd.DataFrame(rows, columns=["true class", "predicted as", "test images"])


def summary_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: status, the engine (keras or numpy, when both are present), the config
    keys that differ between runs, and the metrics.

    Accuracies are fractions (0..1); `test acc (TTA)` (only when a run used test-time
    augmentation, `train.test_time_augmentation`) is the accuracy of the averaged views;
    `wall s` is the run's wall-clock seconds.
    """
    configs = pd.json_normalize([r.manifest.get("config", {}) for r in runs])
    varying = [c for c in configs.columns if c != "name" and configs[c].astype(str).nunique() > 1]
    engines = [run_index.engine_of(r.manifest) for r in runs]
    rows = []
    for run, engine, (_, config) in zip(runs, engines, configs.iterrows()):
        m = run.manifest
        best, test = m.get("best", {}), m.get("test", {})
        rows.append(
            {
                "run": run.run_id,
                **({"engine": engine} if len(set(engines)) > 1 else {}),
                "status": m.get("status", "unknown") + (" (warning)" if m.get("warnings") else ""),
                **{key: config[key] for key in varying},
                "epochs": m.get("epochs_completed", len(run.history) if run.history is not None else 0),
                "best val acc": best.get("val_accuracy"),
                "best epoch": best["epoch"] + 1 if "epoch" in best else None,
                "final val acc": m.get("final", {}).get("val_accuracy"),
                "test acc": test.get("accuracy"),
                **({"test acc (TTA)": test.get("tta_accuracy")} if any("tta_accuracy" in r.manifest.get("test", {})
                                                                      for r in runs) else {}),
                "test loss": test.get("loss"),
                "wall s": m.get("wall_seconds"),
            }
        )
    return pd.DataFrame(rows)


def _run_figures(run: Run, out: Path) -> dict:
    """Draw one completed run's figures into `out`; return file names and tables for the page."""
    class_names = run.manifest["data"]["class_names"]
    predicted = run.probabilities.argmax(axis=1)
    matrix = confusion_counts(run.labels, predicted, len(class_names))
    per_class = np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
    overall = float((predicted == run.labels).mean())
    names = {
        "curves": f"{run.run_id}_curves.png",
        "confusion": f"{run.run_id}_confusion_matrix.png",
        "per_class": f"{run.run_id}_per_class_accuracy.png",
        "samples": f"{run.run_id}_sample_predictions.png",
    }
    figures.save_png(figures.training_curves(run.history, f"{run.run_id}: training vs validation"), out / names["curves"])
    figures.save_png(figures.confusion_matrix(matrix, class_names), out / names["confusion"])
    figures.save_png(figures.per_class_accuracy(per_class, class_names, overall), out / names["per_class"])
    sample = run.sample_indices
    figures.save_png(
        figures.sample_predictions(
            run.sample_images, run.labels[sample], run.probabilities[sample], class_names, title=run.sample_title
        ),
        out / names["samples"],
    )
    if run.augmentation_preview is not None:
        names["augmentation"] = f"{run.run_id}_augmentation_preview.png"
        augment = run.manifest.get("config", {}).get("augment", {})
        switched_on = ", ".join(f"{k}={v}" for k, v in augment.items() if v and v != "none") or "none"
        figures.save_png(figures.augmentation_preview(run.augmentation_preview, f"training augmentation ({switched_on})"),
                         out / names["augmentation"])
    per_class_table = pd.DataFrame(
        {"class": class_names, "test images": matrix.sum(axis=1), "top-1 accuracy": per_class}
    )
    return {"files": names, "confused": most_confused(matrix, class_names), "per_class": per_class_table, "overall": overall}


def published_errors(name: str) -> list[tuple[str, int, float]]:
    """(label, epoch, error) of each claim measured by experiment `name`'s final test accuracy
    (`reproduce.CLAIMS` rows with metric "test_accuracy" and no overrides), at the experiment's last epoch."""
    from lenet_keras import config, reproduce

    points = []
    for claim in reproduce.CLAIMS:
        if claim.experiment == name and claim.metric == "test_accuracy" and not claim.overrides:
            epochs = config.load(name).train.epochs
            points.append((f"published: {100 * (1 - claim.published):.3g}% ({claim.key})", epochs, 1 - claim.published))
    return points


def _error_figure(name: str, runs: list[Run]):
    """`figures.error_curves` of `runs`, with the published errors of `published_errors(name)`."""
    from lenet_keras import run_index

    label = "test error" if all(run_index.validation_is_test(r.manifest) for r in runs) else "validation error"
    return figures.error_curves({r.run_id: r.history for r in runs}, label, published_errors(name))


def _describe_data(manifest: dict) -> str:
    """One line (Markdown inline) on the data of a run: what, from where (`display_path`), how many images."""
    data = manifest.get("data", {})
    source = data.get("source")
    return (
        f"{data.get('description') or data.get('dataset', '?')} from `{display_path(source) if source else '?'}`: {data.get('train_images', '?')} training, "
        f"{data.get('val_images', '?')} validation ({data.get('validation', '')}), {data.get('test_images', '?')} test images"
    )


def _run_section(run: Run, info: dict) -> tuple[list[str], list[str]]:
    """The Markdown lines and HTML fragments of one completed run's section (figures and tables)."""
    files = info["files"]
    title = f"{run.run_id}: test accuracy {info['overall']:.4f}"
    md = [f"## {title}", "", f"Command: `{run.manifest.get('command', '')}`", "",
          f"![curves]({files['curves']})", "", f"![confusion matrix]({files['confusion']})", "",
          "Most confused pairs:", "", markdown_table(info["confused"]), "",
          f"![per-class accuracy]({files['per_class']})", "", markdown_table(info["per_class"]), "",
          f"![sample predictions]({files['samples']})", ""]
    page = [f"<h2>{html.escape(title)}</h2>",
            f"<p>Command: <code>{html.escape(run.manifest.get('command', ''))}</code></p>",
            f"<img src='{files['curves']}' alt='curves'>",
            "<div class='row'>", f"<img src='{files['confusion']}' alt='confusion matrix'>",
            "<div><h3>Most confused pairs</h3>", html_table(info["confused"]), "</div></div>",
            "<div class='row'>", f"<img src='{files['per_class']}' alt='per-class accuracy'>",
            html_table(info["per_class"]), "</div>",
            f"<img src='{files['samples']}' alt='sample predictions'>"]
    if "augmentation" in files:
        md += [f"![augmentation preview]({files['augmentation']})", ""]
        page.append(f"<img src='{files['augmentation']}' alt='augmentation preview'>")
    return md, page


def build(experiment: str | Path, runs_dir: str | Path = "runs", reports_dir: str | Path = "reports") -> Path:
    """Render the report of all runs of `experiment` and return the path of its `index.html`.

    Args:
        experiment: an experiment file (its `name`) or an experiment name (`mnist_lenet5`).
        runs_dir: parent folder of the experiment's runs.
        reports_dir: parent folder of the report; `<reports_dir>/<name>/` is replaced whole
            (written beside it first, then swapped in).

    Raises:
        RunDirectoryError: no runs, or a run with an unreadable manifest.
        ConfigError: `experiment` is an invalid experiment file.
    """
    name = str(experiment)
    if name.endswith(".toml"):
        from lenet_keras import config

        name = config.load(experiment).name
    runs = read_runs(Path(runs_dir) / name)
    final = Path(reports_dir) / name
    out = final.with_name(f".{name}.partial")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    table = summary_table(runs)
    drawn = [r for r in runs if r.completed and r.history is not None and len(r.history)]
    if drawn:
        figures.save_png(figures.overlaid_curves({r.run_id: r.history for r in drawn}), out / "all_runs_curves.png")
        figures.save_png(_error_figure(name, drawn), out / "error_curves.png")
    sections = [(run, _run_figures(run, out)) for run in runs if run.completed and run.history is not None]
    skipped = [r for r in runs if not (r.completed and r.history is not None)]

    intro = (f"{len(runs)} run(s) in `{display_path(Path(runs_dir) / name)}`. "
             f"Data: {_describe_data(runs[-1].manifest)}.")
    legend = ("Accuracies are top-1, as fractions; `wall s` is each run's wall-clock time in seconds; "
              "the test metrics use the final epoch's weights.")
    md = [f"# Report: {name}", "", intro, "", legend, "", "## Runs", "", markdown_table(table), ""]
    page = [f"<h1>Report: {html.escape(name)}</h1>", f"<p>{inline_html(intro)}</p>", f"<p>{inline_html(legend)}</p>",
            "<h2>Runs</h2>", html_table(table)]
    if skipped:
        note = "Not completed (left out of the figures): " + ", ".join(
            f"{r.run_id} ({r.manifest.get('status', 'unknown')})" for r in skipped
        )
        md += [note, ""]
        page.append(f"<p class='warn'>{inline_html(note)}</p>")
    warned = [(r.run_id, message) for r in runs for message in r.manifest.get("warnings") or []]
    if warned:
        md += ["## Warnings", "", *[f"- {run_id}: {message}" for run_id, message in warned], ""]
        page += ["<h2>Warnings</h2>", "<ul class='warn'>",
                 *[f"<li>{html.escape(run_id)}: {inline_html(message)}</li>" for run_id, message in warned], "</ul>"]
    if drawn:
        errors = ("Error rates against epochs on a log scale (LeCun et al. 1998 draw theirs so, Fig. 5); stars: "
                  "published final errors of this experiment's claims (`lenet_keras/claims.toml`), if any.")
        md += ["## All runs compared", "", "![all runs](all_runs_curves.png)", "", errors, "",
               "![error rates](error_curves.png)", ""]
        page += ["<h2>All runs compared</h2>", "<img src='all_runs_curves.png' alt='all runs'>",
                 f"<p>{inline_html(errors)}</p>", "<img src='error_curves.png' alt='error rates'>"]
    for run, info in sections:
        run_md, run_page = _run_section(run, info)
        md += run_md
        page += run_page
    write_pages(out, name, md, page)
    publish(out, final)
    return final / "index.html"

