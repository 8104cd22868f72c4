"""`compare NAME [NAME ...]`: one report over the runs of several experiments, engines and seeds.

    python -m lenet_keras compare mnist_lenet5 mnist_lenet5_fast peer_deck_keras_lenet5
    python -m lenet_keras compare mnist_lenet5 --where engine=numpy --where train.epochs=20 --label numpy-20
    make compare EXPERIMENTS="mnist_lenet5 mnist_lenet5_fast"

Reads every run directory (`manifest.json` one or two levels down: `run-NNN/`, a sweep's
`trial-NNN/...`) of `RUNS_DIR/<NAME>/` for each NAME (an experiment name, an experiment file,
a sweep or a peer's folder), keeps those matching every `--where KEY=VALUE` (keys of the
flattened config such as `train.batch_size`, or `engine`, `seed`, `status`, `experiment`), groups
completed runs that share engine and config except the seed (`compare_stats.group_runs`), and
writes `REPORTS_DIR/compare-<label>/index.html` and `index.md` with PNG figures: the groups'
test accuracy and training seconds (n, mean with 95% confidence interval, median, min-max),
each group's difference from the baseline group (Welch's t-test: interval, p-value, seeds
needed), the config keys that differ, validation curves against epochs and training seconds,
and every run. It never trains and needs no dataset.
"""

from __future__ import annotations

import html
import re
import shutil
import string
from pathlib import Path

import pandas as pd

from lenet_keras import compare_figures, compare_stats, figures, pages, report, run_index
from lenet_keras.compare_stats import Group
from lenet_keras.errors import ConfigError, RunDirectoryError

LABEL = re.compile(r"[A-Za-z0-9_.+-]+")
"""What a `--label` may contain (it names the folder `compare-<label>`)."""


def experiment_name(name: str | Path) -> str:
    """The runs folder name of NAME: an experiment file's `name`, else NAME as given."""
    text = str(name)
    if text.endswith(".toml"):
        from lenet_keras import config

        return config.load(Path(text)).name
    return text


def run_paths(folder: Path) -> list[Path]:
    """Run directories under `folder` (a `manifest.json` one or two levels down) in
    `run_index.run_order`: `run-NNN` (train's) first, then the others (numpy-NNN, trial-NNN/...),
    numbers by value (run-2 before run-10), independent of the directory listing's order."""
    return [record.path for record in run_index.scan(folder, depth=2)]


def collect_runs(names: list[str], runs_dir: Path) -> list[tuple[str, report.Run]]:
    """(experiment folder name, run) for every run of every NAME, NAMEs in the order given.

    Raises:
        RunDirectoryError: a NAME has no folder or no run in `runs_dir` (lists what there is).
    """
    runs = []
    for name in dict.fromkeys(experiment_name(n) for n in names):
        folder = Path(runs_dir) / name
        paths = run_paths(folder) if folder.is_dir() else []
        if not paths:
            present = sorted(p.name for p in Path(runs_dir).glob("*") if p.is_dir()) if Path(runs_dir).is_dir() else []
            raise RunDirectoryError(f"compare: no runs in {pages.display_path(folder)}; folders in "
                                    f"{pages.display_path(runs_dir)}: {', '.join(present) or 'none'}")
        runs += [(name, report.read_run(path)) for path in paths]
    return runs


def parse_where(items: list[str]) -> list[tuple[str, str]]:
    """`--where KEY=VALUE` options as (key, value) pairs.

    Raises:
        ConfigError: an item without "=" or with an empty key.
    """
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"compare --where {item!r}: expected KEY=VALUE, e.g. engine=keras or train.batch_size=512")
        pairs.append((key.strip(), value.strip()))
    return pairs


def run_fields(experiment: str, run: report.Run) -> dict[str, str]:
    """What `--where` can test for a run: its flat config plus engine, seed, status, experiment, run."""
    manifest = run.manifest
    return {**compare_stats.flat_config(manifest), "seed": str(manifest.get("seed")),
            "status": str(manifest.get("status")), "experiment": experiment, "run": run.run_id}


def select(runs: list[tuple[str, report.Run]], where: list[tuple[str, str]]) -> list[tuple[str, report.Run]]:
    """The runs whose fields (`run_fields`) equal every (key, value) of `where` (as text; numbers
    also by value, so `optimizer.learning_rate=1e-2` matches 0.01).

    Raises:
        ConfigError: a key no run has (the message lists the keys there are), or no run left.
    """
    fields = [run_fields(experiment, run) for experiment, run in runs]
    known = set().union(*fields) if fields else set()
    for key, _ in where:
        if key not in known:
            raise ConfigError(f"compare --where {key}=...: no run has the key {key!r}; keys: {', '.join(sorted(known))}")
    kept = [pair for pair, f in zip(runs, fields) if all(_same(f.get(key), value) for key, value in where)]
    if not kept:
        raise ConfigError("compare --where " + " ".join(f"{k}={v}" for k, v in where) + ": no run matches")
    return kept


def _same(recorded: str | None, wanted: str) -> bool:
    if recorded is None:
        return False
    if recorded == wanted:
        return True
    try:
        return float(recorded) == float(wanted)
    except ValueError:
        return recorded.lower() == wanted.lower() and wanted.lower() in ("true", "false")


def lettered(groups: list[Group]) -> list[Group]:
    """Prefix each group's label with a letter (A, B, ... then A2, B2 ...) for tables and legends."""
    letters = string.ascii_uppercase
    for i, group in enumerate(groups):
        group.label = f"{letters[i % 26]}{'' if i < 26 else i // 26 + 1}: {group.label}"
    return groups


def find_baseline(groups: list[Group], baseline: str | None) -> Group:
    """The reference group: the first, or the one `baseline` names (its letter, its label, or its
    experiment name: the first group of that experiment).

    Raises:
        ConfigError: `baseline` names no group (the message lists the groups).
    """
    if baseline is None:
        return groups[0]
    for group in groups:
        letter = group.label.split(":", 1)[0]
        if baseline in (letter, group.label, group.label.split(": ", 1)[-1], group.config.get("name")):
            return group
    raise ConfigError(f"compare --baseline {baseline!r}: no such group; groups: " + "; ".join(g.label for g in groups))


def validation_is_test(group: Group) -> bool:
    """True when the group's runs validate on the test set (`run_index.validation_is_test`)."""
    return any(run_index.validation_is_test(run.manifest) for run in group.runs)


def short_key(key: str) -> str:
    """A config key as a legend shows it: its last part (`train.batch_size` -> `batch_size`), or
    its section for a `name` (`model.name` -> `model`)."""
    section, _, last = key.rpartition(".")
    return section.rsplit(".", 1)[-1] if last == "name" and section else last


LEGEND_FIRST = ("train.precision", "precision", "model.name", "optimizer.name", "schedule.name", "train.epochs",
                "epochs", "train.batch_size", "batch_size", "optimizer.learning_rate")
"""Config keys a legend names first when they differ (the rest follow alphabetically)."""


def legend_label(group: Group, keys: list[str], shown: int = 3) -> str:
    """The group's label and its values of the differing config `keys` (`LEGEND_FIRST` first, at
    most `shown`, keys by `short_key`), e.g. "A: mnist_lenet5 · keras: model=lenet5, epochs=20 (+4)"."""
    keys = sorted((k for k in keys if k not in ("name", "engine")),
                  key=lambda k: (LEGEND_FIRST.index(k) if k in LEGEND_FIRST else len(LEGEND_FIRST), k))
    parts = [f"{short_key(k)}={group.config.get(k, '-')}" for k in keys[:shown]]
    more = f" (+{len(keys) - shown})" if len(keys) > shown else ""
    test = " [validated on the test set]" if validation_is_test(group) else ""
    return group.label + (": " + ", ".join(parts) + more if parts else "") + test


def _interval(mean: float, low: float, high: float, scale: float = 100, digits: int = 2) -> str:
    if mean != mean:
        return ""
    text = f"{scale * mean:.{digits}f}"
    return text + (f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]" if low == low else " (n=1: no interval)")


def _span(low: float, high: float, scale: float = 100, digits: int = 2) -> str:
    return "" if low != low else f"{scale * low:.{digits}f}-{scale * high:.{digits}f}"


def groups_display(stats: pd.DataFrame) -> pd.DataFrame:
    """`compare_stats.group_table` as the report prints it: accuracies in percent, seconds to 0.1."""
    rows = []
    for row in stats.to_dict(orient="records"):
        acc = [row[f"test acc {k}"] for k in ("mean", "ci_low", "ci_high", "median", "min", "max")]
        sec = [row[f"train s {k}"] for k in ("mean", "ci_low", "ci_high", "median", "min", "max")]
        rows.append({"group": row["group"], "n": row["n"], "seeds": row["seeds"],
                     "test acc % mean [95% CI]": _interval(*acc[:3]), "median": _interval(acc[3], float("nan"), 0)
                     .replace(" (n=1: no interval)", ""), "min-max": _span(*acc[4:]),
                     "train s mean [95% CI]": _interval(*sec[:3], scale=1, digits=1),
                     "train s median": "" if sec[3] != sec[3] else f"{sec[3]:.1f}", "train s min-max": _span(*sec[4:], 1, 1),
                     "train images/s": "" if row["images/s"] != row["images/s"] else f"{row['images/s']:.0f}"})
    return pd.DataFrame(rows)


def _needed(value: float) -> str:
    return "-" if value != value else f"{value:.0f}"


def _p(value: float) -> str:
    return "" if value != value else (f"{value:.2g}" if value >= 1e-4 else "<1e-4")


def _difference_cell(row: dict, key: str, scale: float, digits: int) -> str:
    """A difference with its interval, or "(zero spread: no test)" after it when both groups' runs all agree."""
    if row.get(f"{key} zero spread"):
        return f"{scale * row[f'Δ {key}']:.{digits}f} (zero spread: no test)"
    return _interval(row[f"Δ {key}"], row[f"Δ {key} ci_low"], row[f"Δ {key} ci_high"], scale=scale, digits=digits)


def differences_display(table: pd.DataFrame) -> pd.DataFrame:
    """`compare_stats.difference_table` as printed: test accuracy in percentage points, seconds, ratio."""
    rows = []
    for row in table.to_dict(orient="records"):
        rows.append({"group": row["group"], "vs": row["vs"].split(":", 1)[0],
                     "Δ test acc (points) [95% CI]": _difference_cell(row, "test acc", 100, 2),
                     "p (acc)": _p(row["test acc p"]), "seeds needed (acc)": _needed(row["test acc seeds needed"]),
                     "Δ train s [95% CI]": _difference_cell(row, "train s", 1, 1),
                     "p (s)": _p(row["train s p"]), "seeds needed (s)": _needed(row["train s seeds needed"])})
    return pd.DataFrame(rows)


def config_differences(groups: list[Group]) -> pd.DataFrame:
    """The config keys whose values differ between groups: one row per key, one column per group letter."""
    keys = compare_stats.differing_keys(groups)
    return pd.DataFrame([{"key": key, **{g.label.split(":", 1)[0]: g.config.get(key, "-") for g in groups}}
                         for key in keys])


def runs_display(runs: list[tuple[str, report.Run]], groups: list[Group]) -> pd.DataFrame:
    """Every selected run: folder, group letter (blank: not completed), seed ("-": unseeded), status, epochs,
    test accuracy (%), training seconds without validation ("" when not recorded apart), epoch seconds
    (the sum of history.csv's), what its validation set is."""
    letter = {id(run): g.label.split(":", 1)[0] for g in groups for run in g.runs}
    rows = []
    for experiment, run in runs:
        m = compare_stats.run_measures(run) if run.manifest.get("status") == "completed" else {}
        accuracy, seconds = m.get("test_accuracy", float("nan")), m.get("training_seconds", float("nan"))
        training = compare_stats.training_seconds_only(run.manifest)
        rows.append({"run": f"{experiment}/{run.path.name}", "group": letter.get(id(run), ""),
                     "seed": "-" if run.manifest.get("seed") is None else str(run.manifest["seed"]), "status": run.manifest.get("status", "unknown"),
                     "epochs": 0 if run.history is None else len(run.history),
                     "test acc %": "" if accuracy != accuracy else f"{100 * accuracy:.2f}",
                     "train s": "" if training != training else f"{training:.1f}",
                     "epoch s": "" if seconds != seconds else f"{seconds:.1f}",
                     "validation": (run.manifest.get("data") or {}).get("validation", "")})
    return pd.DataFrame(rows)


def verdict(row: dict, key: str, name: str, scale: float, unit: str) -> str:
    """One sentence on a difference: its value and interval, and whether the seeds resolve it."""
    d, low, high, p = (row[f"Δ {key}"], row[f"Δ {key} ci_low"], row[f"Δ {key} ci_high"], row[f"{key} p"])
    if d != d:
        return f"{name}: no value"
    if row.get(f"{key} zero spread"):
        return (f"{name} {scale * d:+.2f} {unit}: every run of both groups gave the same value (zero spread), so no "
                "test or interval applies")
    if low != low:
        return f"{name} {scale * d:+.2f} {unit}: one run in a group, no interval (train more seeds: --seeds)"
    resolved = low > 0 or high < 0
    needed = row[f"{key} seeds needed"]
    return (f"{name} {scale * d:+.2f} {unit} [95% CI {scale * low:+.2f}, {scale * high:+.2f}], p = {_p(p)}: "
            + ("resolved by these seeds" if resolved else "not resolved by these seeds")
            + ("" if needed != needed else f"; a difference this large needs {needed:.0f} seeds per group "
               "to be found 80% of the time"))


def statistics_note(basis: str) -> str:
    """The page's paragraph on what is measured and how it is tested; `basis`: `compare_stats.seconds_basis`."""
    return (f"Test accuracy is top-1 on each run's test set, in percent; training seconds are "
            f"{compare_stats.SECONDS_BASES[basis]} (start-up and data loading are left out). " + STATISTICS_RULES)


STATISTICS_RULES = (
    "Intervals are 95% confidence intervals of the mean over a group's runs (Student's t, "
    "`scipy.stats`); differences use Welch's t-test (`scipy.stats.ttest_ind`, unequal variances). A difference "
    "is resolved when its interval excludes 0 (p < 0.05). \"Seeds needed\" is the number of seeds per group a "
    "two-sided t-test at the 5% level needs to find a true difference as large as the one observed 80% of the "
    "time, given the observed spread (noncentral t, `scipy.stats.nct`)."
)


def _table(md: list[str], page: list[str], title: str, table: pd.DataFrame, text: str = "") -> None:
    md += [f"## {title}", "", *([text, ""] if text else []), pages.markdown_table(table), ""]
    page += [f"<h2>{html.escape(title)}</h2>", *([f"<p>{pages.inline_html(text)}</p>"] if text else []),
             pages.html_table(table)]


def _figure(md: list[str], page: list[str], file: str, alt: str) -> None:
    md += [f"![{alt}]({file})", ""]
    page.append(f"<img src='{file}' alt='{html.escape(alt)}'>")


def _draw(out: Path, groups: list[Group], stats: pd.DataFrame) -> None:
    """The report's two figures: test accuracy per group, validation curves."""
    keys = compare_stats.differing_keys(groups)
    curves = [compare_figures.CurveGroup(legend_label(g, keys), g.label,
                                         tuple(r.history for r in g.runs if r.history is not None),
                                         tuple(compare_stats.run_measures(r)["test_accuracy"] for r in g.runs),
                                         validation_is_test(g)) for g in groups]
    intervals = list(zip(stats["test acc mean"], stats["test acc ci_low"], stats["test acc ci_high"]))
    figures.save_png(compare_figures.test_accuracy_by_group(curves, intervals), out / "test_accuracy.png")
    figures.save_png(compare_figures.validation_curves(curves), out / "validation_curves.png")


def page_lines(title: str, intro: str, runs, groups: list[Group], baseline: Group,
               stats: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The Markdown lines and HTML fragments of the whole comparison page (`stats`: `compare_stats.group_table`)."""
    note = statistics_note(compare_stats.seconds_basis([run for group in groups for run in group.runs]))
    md, page = [f"# {title}", "", intro, "", note, ""], [
        f"<h1>{html.escape(title)}</h1>", f"<p>{pages.inline_html(intro)}</p>", f"<p>{pages.inline_html(note)}</p>"]
    _table(md, page, "Groups", groups_display(stats), "Runs with equal engine and config except the seed form a group.")
    _figure(md, page, "test_accuracy.png", "test accuracy per group")
    differences = compare_stats.difference_table(groups, baseline)
    if len(differences):
        sentences = [f"{row['group'].split(':', 1)[0]} vs {baseline.label.split(':', 1)[0]}: "
                     + verdict(row, "test acc", "test accuracy", 100, "points") + "; "
                     + verdict(row, "train s", "training time", 1, "s") for row in differences.to_dict(orient="records")]
        _table(md, page, f"Differences from {baseline.label}", differences_display(differences))
        md += [f"- {s}" for s in sentences] + [""]
        page += ["<ul>", *[f"<li>{pages.inline_html(s)}</li>" for s in sentences], "</ul>"]
    config_table = config_differences(groups)
    if len(config_table):
        partial = compare_stats.partial_keys(groups)
        note = ("Config keys (flattened) with different values; `-`: the group's config has no such key."
                + (f" Recorded by some groups only: {', '.join(partial)}." if partial else ""))
        _table(md, page, "What differs between groups", config_table, note)
    md += ["## Validation curves", ""]
    page.append("<h2>Validation curves</h2>")
    _figure(md, page, "validation_curves.png", "validation curves")
    _table(md, page, "Runs", runs_display(runs, groups), "Runs with an empty group did not complete and are left out.")
    return md, page


def build(names: list[str], runs_dir: str | Path = "runs", reports_dir: str | Path = "reports",
          label: str | None = None, baseline: str | None = None, where: list[str] = ()) -> Path:
    """Render the comparison of the runs of `names` and return the path of its `index.html`.

    Args:
        names: experiment names, experiment files or folders of `runs_dir` (sweeps, peers).
        runs_dir: parent of the experiments' run folders.
        reports_dir: parent of `compare-<label>/`, replaced whole (written beside it, then swapped in).
        label: names the report folder; default the experiment names joined by "-vs-".
        baseline: the reference group (letter, label or experiment name); default the first group.
        where: `KEY=VALUE` filters (`select`).

    Raises:
        RunDirectoryError: a NAME has no runs; ConfigError: a bad label, filter or baseline;
        ValueError: no completed run among those selected.
    """
    folders = list(dict.fromkeys(experiment_name(n) for n in names))
    label = label or "-vs-".join(folders)
    if not LABEL.fullmatch(label):
        raise ConfigError(f"compare --label {label!r}: use letters, digits and . _ + - only (it names a folder)")
    filters = parse_where(list(where))
    runs = select(collect_runs(folders, Path(runs_dir)), filters)
    groups = lettered(compare_stats.group_runs([run for _, run in runs]))
    reference = find_baseline(groups, baseline)
    final = Path(reports_dir) / f"compare-{label}"
    out = final.with_name(f".{final.name}.partial")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    stats = compare_stats.group_table(groups)
    _draw(out, groups, stats)
    where_text = (" matching " + ", ".join(f"`{k}={v}`" for k, v in filters)) if filters else ""
    intro = (f"{len(runs)} run(s) from {', '.join(f'`{pages.display_path(Path(runs_dir) / f)}`' for f in folders)}"
             f"{where_text}, in {len(groups)} group(s); baseline {reference.label}.")
    md, page = page_lines(f"Comparison: {label}", intro, runs, groups, reference, stats)
    pages.write_pages(out, f"compare-{label}", md, page)
    pages.publish(out, final)
    return final / "index.html"
