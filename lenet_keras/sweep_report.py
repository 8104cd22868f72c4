"""The report of a sweep: `reports/<sweep>/index.html` and `index.md`, from `runs/<sweep>/`.

What it shows: the trials table (`trials.csv`, best trial first and highlighted, with the
command line that reruns it), validation curves of every trial coloured by each
hyperparameter, a heatmap of the objective over every pair of grid axes (the best value over
the other axes), and for Optuna sweeps the optimization history and the parameter
importances (Optuna's matplotlib plots).

With `repeats` > 1 (several seeds per trial, `sweep_study`), the objective is the mean over the
seeds; the table adds each trial's min-max and standard deviation over the seeds, and a figure
draws every trial's mean with its min-max as an error bar and each seed's value as a dot. The
learning curves are those of each trial's first seed.

The HTML trials table fits the page: long texts (errors, rerun commands) fold into a
`<details>` element whose summary is their first words, and break anywhere rather than
stretching the row (`trials_html`).
"""

from __future__ import annotations

import html
import itertools
import shutil
from pathlib import Path

import pandas as pd

from lenet_keras import figures
from lenet_keras import pages
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
    if "command" in table:  # the base experiment's path as the reader gives it, not machine-absolute
        table["command"] = table["command"].fillna("").astype(str).str.replace(
            str(sweep.base_path), pages.display_path(sweep.base_path), regex=False)

    maximize = sweep.direction == "maximize"
    complete = table[table["state"] == "complete"].sort_values(["objective", "trial"], ascending=[not maximize, True], kind="stable")
    best = complete.iloc[0] if len(complete) else None
    keys = [d.key for d in sweep.space]
    md, page = _head(sweep, table, best)
    summary = _summary(sweep, table)
    md += ["## Trials", "", pages.markdown_table(summary.drop(columns=["command"], errors="ignore")), ""]
    page += ["<h2>Trials</h2>", trials_html(summary)]

    best_label = f"trial {int(best['trial'])}" if best is not None else None
    if "objective min" in table and len(complete):
        _spread_figure(sweep, complete, out, md, page)
    _curve_figures(sweep, table, best_label, out, md, page)
    if sweep.method == "grid" and len(keys) >= 2 and len(complete):
        _heatmap_figures(sweep, complete, keys, maximize, out, md, page)
    if sweep.method == "optuna":
        md, page = _optuna_figures(sweep, runs_dir, out, md, page)
    pages.write_pages(out, sweep.name, md, page)
    pages.publish(out, final)
    return final / "index.html"


def _head(sweep, table: pd.DataFrame, best) -> tuple[list[str], list[str]]:
    """The report's title, introduction and best trial (with its rerun command): (Markdown lines, HTML parts)."""
    keys = [d.key for d in sweep.space]
    title = f"Sweep: {sweep.name}"
    seeds = (f" (the mean over {sweep.repeats} seeds per trial: the experiment's seed, +1, ...)"
             if sweep.repeats > 1 else "")
    states = ", ".join(f"{n} {s}" for s, n in table["state"].value_counts().items())
    intro = [f"{sweep.method} search over {', '.join(keys)}; base experiment ", sweep.base_path.name,
             f" with {' '.join(sweep.base_overrides) or 'no fixed overrides'}. Objective: the best epoch's "
             f"{sweep.metric} ({sweep.direction}){seeds}. {len(table)} trials: {states}."]
    md = [f"# {title}", "", f"{intro[0]}`{intro[1]}`{intro[2]}", ""]
    page = [STYLE, f"<h1>{html.escape(title)}</h1>",
            f"<p>{html.escape(intro[0])}<code>{html.escape(intro[1])}</code>{html.escape(intro[2])}</p>"]
    if best is not None:
        point = ", ".join(f"{k} = {best[k]}" for k in keys)
        spread = (f" (seeds {best['seeds']}: min {best['objective min']:.4f}, max {best['objective max']:.4f}, "
                  f"std {best['objective std']:.4f})" if "objective min" in best else "")
        text = (f"Best trial: {int(best['trial'])} ({point}): {sweep.metric} {best['objective']:.4f}{spread}, "
                f"test accuracy {best['test accuracy']:.4f}.")
        md += [f"**{text}**", "", "Rerun it:", "", f"    {best['command']}", ""]
        page.append(f"<div class='best'><p><strong>{html.escape(text)}</strong></p><p>Rerun it: "
                    f"<code>{html.escape(str(best['command']))}</code></p></div>")
    return md, page


def _summary(sweep, table: pd.DataFrame) -> pd.DataFrame:
    """The trials table's rows (complete trials first, best first) and columns; with several
    seeds per trial, 'min-max' and 'std' of the objective over the seeds after 'objective'."""
    maximize = sweep.direction == "maximize"
    shown = table.sort_values(["state", "objective"], ascending=[True, not maximize], key=lambda c: (
        c.map({"complete": 0, "pruned": 1, "fail": 2}).fillna(3) if c.name == "state" else c))
    if "objective min" in shown:
        shown = shown.assign(**{
            "min-max": [f"{lo:.4f}-{hi:.4f}" if pd.notna(lo) else "" for lo, hi in zip(shown["objective min"], shown["objective max"])],
            "std": shown["objective std"]})
    columns = ["trial", "state", *(d.key for d in sweep.space), "objective", "min-max", "std", f"final {sweep.metric}",
               "test accuracy", "epochs run", "wall seconds", "error", "command"]
    return shown[[c for c in columns if c in shown]]


STYLE = ("<style>.trials-wrap{max-width:100%;overflow-x:auto}"
         "table.trials{border-collapse:collapse;font-size:.85em;margin:.5em 0}"
         "table.trials td,table.trials th{padding:.25em .45em;border-bottom:1px solid #ddd;text-align:right;"
         "vertical-align:top}"
         "table.trials td.text{text-align:left}"
         "table.trials td.fold{max-width:20em;overflow-wrap:anywhere}"
         "table.trials details summary{cursor:pointer;color:#555}"
         "table.trials details code,.best code{white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word}"
         "</style>")
"""The sweep report's own CSS (the trials table; the best trial's rerun command wraps too)."""
FOLD_CHARACTERS = 60
"""Texts in the trials table longer than this (or of several lines) fold into a `<details>` element."""


def trials_html(table: pd.DataFrame) -> str:
    """The trials table as HTML (class `trials`, in a `div.trials-wrap`) that fits the page.

    Floats show 4 decimals, missing values nothing. A text cell longer than `FOLD_CHARACTERS`
    or of several lines (an error, a rerun command) folds: `<details>` whose `<summary>` is its
    first words (about 40 characters, then an ellipsis) and whose body is the full text, which
    breaks anywhere (CSS `overflow-wrap:anywhere`) within the column's maximum width (20em), so
    no row or the table is stretched by it; short texts break only between words. Headers may break after the '.' and '_' of dotted keys.
    """
    head = "".join(f"<th>{_breakable(str(c))}</th>" for c in table.columns)
    rows = []
    for values in table.itertuples(index=False):
        cells = []
        for value in values:
            if isinstance(value, str):
                folded = _folded(value)
                cells.append(f"<td class='text{' fold' if folded.startswith('<details>') else ''}'>{folded}</td>")
            elif value is None or isinstance(value, float) and pd.isna(value):
                cells.append("<td></td>")
            else:
                number = float(value) if isinstance(value, float) else value
                text = (f"{number:.4f}" if abs(number) < 10 else f"{number:.1f}") if isinstance(number, float) else str(number)
                cells.append(f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='trials-wrap'><table class='trials'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _breakable(header: str) -> str:
    """`header` escaped, with a line-break opportunity (`<wbr>`) after every '.' and '_' of a dotted key."""
    return "".join(html.escape(c) + ("<wbr>" if c in "._" else "") for c in header)


def _folded(text: str) -> str:
    """`text` escaped; folded into `<details>` (summary: its first words) when long or of several lines."""
    if len(text) <= FOLD_CHARACTERS and "\n" not in text:
        return html.escape(text)
    first = text.splitlines()[0] if text.strip() else text
    words, summary = first.split(), ""
    for word in words:
        if len(summary) + len(word) > 40:
            break
        summary = f"{summary} {word}".strip()
    summary = summary or first[:40]
    return f"<details><summary>{html.escape(summary)} ...</summary><code>{html.escape(text)}</code></details>"


def _spread_figure(sweep, complete: pd.DataFrame, out: Path, md: list, page: list) -> None:
    """`objective_spread.png` in `out`: each complete trial's mean objective over the seeds with its
    min-max as an error bar and each seed's value as a dot; appended to `md` and `page`."""
    import matplotlib.pyplot as plt

    ordered = complete.sort_values("trial")
    x = ordered["trial"].to_numpy()
    mean = ordered["objective"].to_numpy(dtype=float)
    below = mean - ordered["objective min"].to_numpy(dtype=float)
    above = ordered["objective max"].to_numpy(dtype=float) - mean
    figure, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.errorbar(x, mean, yerr=[below, above], fmt="o", color="#2b83ba", capsize=4, label="mean, min-max over seeds")
    for number, values in zip(x, ordered["objective per seed"]):
        seeds = [float(v) for v in str(values).split()] if isinstance(values, str) else []
        ax.plot([number] * len(seeds), seeds, ".", color="#555555", alpha=0.7)
    ax.plot([], [], ".", color="#555555", label="one seed")
    ax.set(xlabel="trial", ylabel=f"{sweep.metric} (best epoch)",
           title=f"objective per trial over {sweep.repeats} seeds")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7)
    figure.tight_layout()
    name = "objective_spread.png"
    figures.save_png(figure, out / name)
    md += ["## Spread over seeds", "", f"![objective per trial over seeds]({name})", ""]
    page += ["<h2>Spread over seeds</h2>", f"<img src='{name}' alt='objective per trial over seeds'>"]


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
