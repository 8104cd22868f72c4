"""The report of a sweep: `reports/<sweep>/index.html` and `index.md`, from `runs/<sweep>/`.

What it shows: the trials table (`trials.csv`, best trial first and highlighted, with the
command line that reruns it), validation curves of every trial coloured by each
hyperparameter, a heatmap of the objective over every pair of grid axes (the best value over
the other axes), and for Optuna sweeps the optimization history and the parameter
importances (Optuna's matplotlib plots).
"""

from __future__ import annotations

import html
import itertools
import shutil
from pathlib import Path

import pandas as pd

from lenet_keras import figures
from lenet_keras import report as report_lib
from lenet_keras import sweep_study


def _histories(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """'trial N' -> its history.csv, for the trials whose run folder has a non-empty one."""
    histories = {}
    for _, row in table.iterrows():
        if not isinstance(row["run directory"], str) or not row["run directory"]:
            continue
        path = Path(row["run directory"]) / "history.csv"
        if path.is_file() and path.stat().st_size:
            histories[f"trial {row['trial']}"] = pd.read_csv(path)
    return histories


def build(sweep: sweep_study.Sweep, runs_dir: str | Path = "runs", reports_dir: str | Path = "reports") -> Path:
    """Render the sweep's report and return the path of its `index.html`.

    Raises:
        RunDirectoryError: the sweep has no `trials.csv` yet (run the sweep first).
    """
    from lenet_keras.errors import RunDirectoryError

    runs_dir = Path(runs_dir)
    csv = runs_dir / sweep.name / "trials.csv"
    if not csv.is_file():
        raise RunDirectoryError(f"no {csv}: run the sweep first (python -m lenet_keras sweep {sweep.path})")
    table = pd.read_csv(csv, keep_default_na=True)
    final = Path(reports_dir) / sweep.name
    out = final.with_name(f".{sweep.name}.partial")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    maximize = sweep.direction == "maximize"
    complete = table[table["state"] == "complete"].sort_values(["objective", "trial"], ascending=[not maximize, True], kind="stable")
    best = complete.iloc[0] if len(complete) else None
    keys = [d.key for d in sweep.space]
    shown = table.sort_values(["state", "objective"], ascending=[True, not maximize], key=lambda c: (
        c.map({"complete": 0, "pruned": 1, "fail": 2}).fillna(3) if c.name == "state" else c))
    columns = ["trial", "state", *keys, "objective", f"final {sweep.metric}", "test accuracy", "epochs run",
               "wall seconds", "error"]
    summary = shown[[c for c in columns if c in shown]]

    title = f"Sweep: {sweep.name}"
    intro = (f"{sweep.method} search over {', '.join(keys)}; base experiment `{sweep.base_path.name}` with "
             f"{' '.join(sweep.base_overrides) or 'no fixed overrides'}. Objective: the best epoch's "
             f"{sweep.metric} ({sweep.direction}). {len(table)} trials: "
             + ", ".join(f"{n} {s}" for s, n in table["state"].value_counts().items()) + ".")
    md = [f"# {title}", "", intro, ""]
    page = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
    if best is not None:
        point = ", ".join(f"{k} = {best[k]}" for k in keys)
        text = (f"Best trial: {int(best['trial'])} ({point}): {sweep.metric} {best['objective']:.4f}, "
                f"test accuracy {best['test accuracy']:.4f}.")
        md += [f"**{text}**", "", "Rerun it:", "", f"    {best['command']}", ""]
        page.append(f"<div class='best'><p><strong>{html.escape(text)}</strong></p><p>Rerun it: "
                    f"<code>{html.escape(str(best['command']))}</code></p></div>")
    md += ["## Trials", "", report_lib.markdown_table(summary), ""]
    page += ["<h2>Trials</h2>", report_lib.html_table(summary)]

    best_label = f"trial {int(best['trial'])}" if best is not None else None
    _curve_figures(sweep, table, best_label, out, md, page)
    if sweep.method == "grid" and len(keys) >= 2 and len(complete):
        _heatmap_figures(sweep, complete, keys, maximize, out, md, page)
    if sweep.method == "optuna":
        md, page = _optuna_figures(sweep, runs_dir, out, md, page)
    report_lib.write_pages(out, sweep.name, md, page)
    report_lib.publish(out, final)
    return final / "index.html"


def _curve_figures(sweep, table: pd.DataFrame, best_label: str | None, out: Path, md: list, page: list) -> None:
    """One learning-curve PNG per hyperparameter in `out` (trials coloured by its value), appended
    to the Markdown lines `md` and the HTML parts `page`; nothing when no trial has a history."""
    histories = _histories(table)
    if not histories:
        return
    md.append("## Learning curves")
    page.append("<h2>Learning curves</h2>")
    for i, key in enumerate(d.key for d in sweep.space):
        values = {f"trial {r['trial']}": r[key] for _, r in table.iterrows() if f"trial {r['trial']}" in histories}
        name = f"curves_by_{i}.png"
        figures.save_png(figures.curves_by_hyperparameter(histories, values, key, sweep.metric, best_label), out / name)
        md += ["", f"![{sweep.metric} by {key}]({name})"]
        page.append(f"<img src='{name}' alt='{html.escape(sweep.metric)} by {html.escape(key)}'>")
    md.append("")


def _heatmap_figures(sweep, complete: pd.DataFrame, keys: list[str], maximize: bool, out: Path, md: list,
                     page: list) -> None:
    """One heatmap PNG per pair of grid axes `keys` in `out` (each cell: the best objective of the
    `complete` trials there, over the other axes; the highest when `maximize`), appended to `md` and `page`."""
    md.append("## Heatmaps (best over the other axes)")
    page.append("<h2>Heatmaps</h2><p>Each cell: the best objective among the complete trials at that "
                "pair of values (over the other axes); the best cell is outlined.</p>")
    for n, (x, y) in enumerate(itertools.combinations(keys, 2)):
        pivot = complete.pivot_table(index=y, columns=x, values="objective", aggfunc="max" if maximize else "min")
        name = f"heatmap_{n}.png"
        figures.save_png(figures.heatmap(pivot, f"{sweep.metric} (best epoch)", maximize), out / name)
        md += ["", f"![{x} x {y}]({name})"]
        page.append(f"<img src='{name}' alt='{html.escape(x)} x {html.escape(y)}'>")
    md.append("")


def _optuna_figures(sweep, runs_dir, out, md, page):
    """Optuna's optimization history and parameter importances as PNGs in `out`, appended to `md` and `page`."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from optuna.trial import TrialState

    study = sweep_study.open_study_and_storage(sweep, runs_dir)[0]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = [("optimization_history.png", "optimization history", ovm.plot_optimization_history, 1)]
    if len(sweep.space) > 1:
        plots.append(("parameter_importances.png", "parameter importances (fANOVA)", ovm.plot_param_importances, 2))
    md.append("## Optuna")
    page.append("<h2>Optuna</h2>")
    for name, label, plot, needed in plots:
        if len(complete) < needed:
            md += ["", f"{label}: needs at least {needed} complete trial(s)."]
            page.append(f"<p>{label}: needs at least {needed} complete trial(s).</p>")
            continue
        ax = plot(study)
        figure = ax.figure if hasattr(ax, "figure") else plt.gcf()
        figure.set_size_inches(6.4, 3.8)
        figures.save_png(figure, out / name)
        md += ["", f"![{label}]({name})"]
        page.append(f"<img src='{name}' alt='{label}'>")
    md.append("")
    return md, page
