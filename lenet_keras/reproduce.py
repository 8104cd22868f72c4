"""`reproduce`: the reproduction scorecard, one row per number the seeds and papers publish.

`CLAIMS` holds every published number this package can be held to, as data (`claims.toml`,
`load_claims`): what was claimed,
the value as printed, where it is printed, the experiment (and overrides) that reproduces it,
which measurement of our runs it is compared with, or the reason it cannot be measured here.
Every measurable row is CPU-sized: the page kept in git (reports/reproduction/) reports 22,697 s of
training on 2 cores for its 15 runs, about an hour for each LeNet-5 1998 run while several shared the
cores.
`run_scorecard` trains what is missing (`lenet_keras.seeds.train_seeds`, one fresh process a
seed, completed seeds skipped, so a rerun is cheap), measures every row over the seeds and
renders `reports/reproduction/index.html` and `index.md`.

Verdict rule (`verdict`; each published number is one run of its authors'):
- "reproduced": the published value lies between our seeds' lowest and highest values, or in
  the 95% confidence interval of our mean (Student t), either widened by half a unit of the
  published number's last printed digit (0.8838 stands for 0.88375-0.88385).
- "consistent, more seeds needed: ours higher/lower by X points (...)": otherwise, when the
  published value (one run of its authors') is still inside the 95% prediction interval of one
  run of ours, mean +- t(0.975, n-1) * s * sqrt(1 + 1/n): one run like theirs could land there,
  so these seeds do not show a difference; X = our median - published, in percentage points
  (seconds for times).
- "differs: ours higher/lower by X points (...)": outside that interval, or with one seed (no
  interval; the parenthesis says which).
- "not measurable here: <why>": the data, hardware or code it needs is not here.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import math
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy import stats

from lenet_keras import compare_stats
from lenet_keras import config as config_lib
from lenet_keras import figures
from lenet_keras import manifest as manifest_lib
from lenet_keras import pages
from lenet_keras import rundir
from lenet_keras import run_index
from lenet_keras import seeds as seeds_lib
from lenet_keras.errors import ConfigError, LenetKerasError

ACCURACY, SECONDS = "accuracy", "seconds"
"""Units of a published value: top-1 accuracy as a fraction (0..1), or seconds."""
METRICS = ("test_accuracy", "val_accuracy", "test_accuracy_at_epoch")
"""What a row measures in each run: the manifest's final test accuracy; history.csv's
val_accuracy after epoch `epoch` (1-based); the test accuracy after epoch `epoch`, read from
history.csv's val_accuracy of a run whose validation set is the test set (validation_split 0)."""
DEFAULT_SEEDS = (0, 1, 2)
"""Seeds of every measured row unless `--seeds` says otherwise."""

@dataclass(frozen=True)
class Claim:
    """One published number and how this package measures the same thing.

    Attributes:
        key: short unique id (`deck-val-3`); claim: what was claimed, in words.
        published: the value, accuracies as fractions (98.722% -> 0.98722), times in seconds;
            unit: ACCURACY or SECONDS; quoted: the words as printed in the source;
            digits: decimal places of `published` as printed (0.98722 -> 5).
        source: the document and where in it.
        experiment: shipped experiment name that reproduces it (None: none does);
            overrides: KEY=VALUE on top; engine: "keras" (`train`) or "numpy" (`scratch`).
        metric: one of METRICS; epoch: 1-based epoch of the epoch metrics.
        not_measurable: why it cannot be measured here (None: it can).
        note: how our measurement differs from the published one's.
    """

    key: str
    claim: str
    published: float
    unit: str
    quoted: str
    digits: int
    source: str
    experiment: str | None = None
    overrides: tuple[str, ...] = ()
    engine: str = "keras"
    metric: str = "test_accuracy"
    epoch: int | None = None
    not_measurable: str | None = None
    note: str = ""


CLAIMS_FILE = Path(__file__).with_name("claims.toml")
"""The published numbers, as data with their sources (shipped in the package)."""

REQUIRED_KEYS = ("key", "claim", "published", "unit", "quoted", "digits", "source")


def load_claims(path: Path = CLAIMS_FILE) -> tuple[Claim, ...]:
    """The `[[claim]]` tables of the TOML file `path`, in order, as `Claim`s.

    Raises:
        ConfigError: the file cannot be read or parsed, or a claim misses a required key
            (`REQUIRED_KEYS`), has a key `Claim` does not know, a unit other than ACCURACY or
            SECONDS, a metric not in METRICS, or a key used twice (the message names the file,
            the claim and the key).
    """
    try:
        tables = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("claim", [])
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the claims ({error})") from error
    known = {f.name for f in dataclasses.fields(Claim)}
    claims, seen = [], set()
    for number, table in enumerate(tables, start=1):
        where = f"{path}: claim {number} ({table.get('key', 'no key')})"
        if missing := [k for k in REQUIRED_KEYS if k not in table]:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        if unknown := sorted(set(table) - known):
            raise ConfigError(f"{where}: unknown key {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        if table["unit"] not in (ACCURACY, SECONDS) or table.get("metric", "test_accuracy") not in METRICS:
            raise ConfigError(f"{where}: unit {table['unit']!r} / metric {table.get('metric')!r}: expected unit "
                              f"{ACCURACY} or {SECONDS}, metric one of {', '.join(METRICS)}")
        if table["key"] in seen:
            raise ConfigError(f"{where}: key {table['key']!r} used twice")
        seen.add(table["key"])
        claims.append(Claim(**{**table, "overrides": tuple(table.get("overrides", ())),
                               "published": float(table["published"])}))
    return tuple(claims)


CLAIMS = load_claims()
"""Every published number of the seeds (the documents the project was made from) and papers the package is held to, in page order."""


@dataclass(frozen=True)
class Row:
    """A scored claim: our values over `seeds` from the run directories `runs` (same order), the
    verdict and the command that regenerates it."""

    claim: Claim
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    verdict: str
    command: str
    runs: tuple[Path, ...] = ()


def prediction_interval(summary: dict) -> tuple[float, float]:
    """The 95% Student-t prediction interval of one more run, mean +- t(0.975, n-1) * std * sqrt(1 + 1/n),
    from a `compare_stats.summarize` result; (mean, mean) when std is 0; NaNs for n < 2."""
    n, mean, std = summary["n"], summary["mean"], summary["std"]
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf(1 - (1 - compare_stats.CONFIDENCE) / 2, n - 1) * std * math.sqrt(1 + 1 / n)
    return mean - half, mean + half


def verdict(published: float, values, digits: int, unit: str = ACCURACY) -> str:
    """The verdict on `published` given our `values` (same unit; see the module docstring's rule).

    Args:
        published: the published value; values: ours, one per seed (non-finite ones ignored);
        digits: decimal places of `published` as printed; unit: ACCURACY (differences in
            percentage points) or SECONDS.

    Returns:
        "reproduced"; "consistent, more seeds needed: ours higher|lower by X points|s (inside
        the 95% range of one run of ours, N seeds)"; "differs: ours higher|lower by X points|s"
        followed by "(1 seed, no interval)" or "(outside the 95% range of one run of ours)";
        "not measured: no completed run" when there is no value.
    """
    summary = compare_stats.summarize(values)
    if summary["n"] == 0:
        return "not measured: no completed run"
    tolerance = 0.5 * 10 ** -digits
    inside = lambda low, high: math.isfinite(low) and low - tolerance <= published <= high + tolerance  # noqa: E731
    if inside(summary["min"], summary["max"]) or inside(summary["ci_low"], summary["ci_high"]):
        return "reproduced"
    gap = summary["median"] - published
    size = f"{abs(gap) * 100:.2f} points" if unit == ACCURACY else f"{abs(gap):.2f} s"
    direction = f"ours {'higher' if gap > 0 else 'lower'} by {size}"
    if summary["n"] > 1 and inside(*prediction_interval(summary)):
        return f"consistent, more seeds needed: {direction} (inside the 95% range of one run of ours, {summary['n']} seeds)"
    resolved = "1 seed, no interval" if summary["n"] == 1 else "outside the 95% range of one run of ours"
    return f"differs: {direction} ({resolved})"


def run_value(run_dir: Path, claim: Claim) -> float:
    """`claim.metric` of one completed run (accuracy as a fraction).

    Raises:
        LenetKerasError: the run lacks that epoch, or a "test_accuracy_at_epoch" run's validation
            set is not the test set; ValueError: an unknown metric.
    """
    manifest = manifest_lib.read_json(Path(run_dir) / rundir.MANIFEST)
    if claim.metric == "test_accuracy":
        return float((manifest.get("test") or {}).get("accuracy", math.nan))
    if claim.metric not in METRICS:
        raise ValueError(f"unknown metric {claim.metric!r} (one of {', '.join(METRICS)})")
    if claim.metric == "test_accuracy_at_epoch" and not run_index.validation_is_test(manifest):
        raise LenetKerasError(f"{run_dir}: its validation set is not the test set, so history.csv holds no test accuracy "
                              f"per epoch (row {claim.key} needs data.validation_split=0)")
    history = pd.read_csv(Path(run_dir) / "history.csv")
    row = history[history["epoch"] == claim.epoch - 1]
    if row.empty:
        raise LenetKerasError(f"{run_dir}/history.csv has no epoch {claim.epoch} (row {claim.key})")
    return float(row["val_accuracy"].iloc[0])


def train_numpy_seeds(experiment: Path, overrides: list[str], seeds, runs_dir: Path, data_dir: Path | None,
                      runner=subprocess.run) -> list[Path]:
    """`scratch EXPERIMENT ... seed=S` once per seed in a fresh process, seeds with a completed run of the
    same config skipped (as `seeds.train_seeds` does for Keras); the run directories in seed order.

    Raises:
        LenetKerasError: a seed's run failed or left no completed run.
    """
    made = []
    for seed in dict.fromkeys(seeds):
        resolved = config_lib.load(experiment, [*overrides, f"seed={seed}"])
        folder, config = Path(runs_dir) / resolved.name, rundir.config_block(resolved)
        done = run_index.completed_run(folder, config, "numpy")
        if done is None:
            command = [sys.executable, "-m", "lenet_keras", "scratch", str(experiment), *overrides, f"seed={seed}",
                       "--runs-dir", str(runs_dir), *(["--data-dir", str(data_dir)] if data_dir else [])]
            print(f"seed {seed}: training (NumPy)", flush=True)
            if runner(command).returncode:
                raise LenetKerasError(f"reproduce: seed {seed} failed: {' '.join(command)}")
            done = run_index.completed_run(folder, config, "numpy")
            if done is None:
                raise LenetKerasError(f"reproduce: seed {seed} exited 0 but {folder} holds no completed NumPy run")
        else:
            print(f"seed {seed}: skipped, {done} has completed this config", flush=True)
        made.append(done)
    return made


def train_claim(claim: Claim, runs_dir: Path, data_dir: Path | None, seeds) -> list[Path]:
    """Train (or find) `claim`'s runs, one per seed; their run directories in seed order.

    Raises:
        LenetKerasError, ConfigError: from `seeds.train_seeds` / `train_numpy_seeds`.
    """
    experiment = config_lib.experiments_dir() / f"{claim.experiment}.toml"
    if claim.engine == "numpy":
        return train_numpy_seeds(experiment, list(claim.overrides), seeds, runs_dir, data_dir)
    return [o.run_dir for o in seeds_lib.train_seeds(experiment, list(claim.overrides), list(seeds), runs_dir, data_dir)]


def row_command(claim: Claim, seeds, runs_dir: Path) -> str:
    """The shell command that trains `claim`'s runs (`reproduce` then reads them), or "" when none can."""
    if claim.experiment is None or claim.not_measurable:
        return ""
    where = "" if Path(runs_dir) == Path("runs") else f" --runs-dir {pages.display_path(runs_dir)}"
    keys = "".join(f" {o}" for o in claim.overrides)
    if claim.engine == "numpy":
        listed = " ".join(map(str, seeds))
        return f"for s in {listed}; do python -m lenet_keras scratch {claim.experiment}{keys} seed=$s{where}; done"
    return f"python -m lenet_keras train {claim.experiment}{keys} --seeds {' '.join(map(str, seeds))}{where}"


def score(claim: Claim, runs_dir: Path, data_dir: Path | None, seeds, trained: dict) -> Row:
    """Measure and judge one claim; `trained` caches run directories (or the error) per experiment + overrides."""
    command = row_command(claim, seeds, runs_dir)
    if claim.not_measurable:
        return Row(claim, (), (), f"not measurable here: {claim.not_measurable}", command)
    group = (claim.engine, claim.experiment, claim.overrides)
    if group not in trained:
        try:
            trained[group] = train_claim(claim, runs_dir, data_dir, seeds)
        except LenetKerasError as error:
            trained[group] = error
    if isinstance(trained[group], Exception):
        return Row(claim, (), (), f"not measured: training failed: {trained[group]}", command)
    try:
        values = tuple(run_value(run_dir, claim) for run_dir in trained[group])
    except (LenetKerasError, OSError, KeyError) as error:
        return Row(claim, (), (), f"not measured: {error}", command)
    return Row(claim, tuple(dict.fromkeys(seeds)), values,
               verdict(claim.published, values, claim.digits, claim.unit), command, tuple(trained[group]))


def run_scorecard(runs_dir: str | Path = "runs/reproduction", reports_dir: str | Path = "reports", data_dir: str | Path | None = None,
                  seeds=DEFAULT_SEEDS, claims: tuple[Claim, ...] = CLAIMS) -> Path:
    """Train what is missing, score every claim and render `<reports_dir>/reproduction/`; return its index.html.

    Args:
        runs_dir: parent of the run directories (completed seeds there are reused, not retrained).
        reports_dir: parent of the report folder `reproduction/` (replaced whole, never half-written).
        data_dir: as `train --data-dir` (None: the usual look-up, e.g. $LENET_KERAS_DATA).
        seeds: the seeds of every measured row.
        claims: the rows (default `CLAIMS`; tests pass their own).

    A row whose training fails is marked "not measured: training failed: ..." and the others go
    on. Prints one progress line per row.
    """
    runs_dir, trained, rows = Path(runs_dir), {}, []
    for number, claim in enumerate(claims, start=1):
        print(f"[{number}/{len(claims)}] {claim.claim} ({claim.key})", flush=True)
        rows.append(score(claim, runs_dir, None if data_dir is None else Path(data_dir), seeds, trained))
        print(f"[{number}/{len(claims)}] {claim.key}: {rows[-1].verdict}", flush=True)
    return render(rows, Path(reports_dir), runs_dir)


def format_value(value: float, unit: str, digits: int = 2) -> str:
    """An accuracy fraction as a percentage with `digits` decimals ("98.72%"), seconds as "3.83 s"; "" for NaN."""
    if value is None or not math.isfinite(value):
        return ""
    return f"{value * 100:.{digits}f}%" if unit == ACCURACY else f"{value:.{digits}f} s"


def table_row(row: Row) -> dict[str, object]:
    """One scorecard table row (all texts): claim, source, published, experiment, ours (n, median,
    95% CI of the mean, min-max, 95% range of one run), verdict, command."""
    claim, summary = row.claim, compare_stats.summarize(row.values)
    unit, shown = claim.unit, max(claim.digits - 2, 0) if claim.unit == ACCURACY else claim.digits
    pair = lambda a, b: f"{format_value(a, unit)}-{format_value(b, unit)}" if math.isfinite(a) else ""  # noqa: E731
    experiment = f"`{claim.experiment}" + "".join(f" {o}" for o in claim.overrides) + "`" if claim.experiment else ""
    if claim.engine == "numpy" and experiment:
        experiment += " (NumPy engine)"
    return {"claim": claim.claim, "source": claim.source, "published": format_value(claim.published, unit, shown),
            "experiment": experiment, "n": summary["n"] or "", "ours median": format_value(summary["median"], unit),
            "95% CI of mean": pair(summary["ci_low"], summary["ci_high"]),
            "min-max": pair(summary["min"], summary["max"]) if summary["n"] else "",
            "95% range of one run": pair(*prediction_interval(summary)),
            "verdict": row.verdict, "command": f"`{row.command}`" if row.command else ""}


def differences_figure(rows: list[Row]):
    """A forest plot of our values minus the published one (percentage points) for the measured accuracy
    rows: the median (dot), min-max (thick) and the 95% range of one run (thin); None when none is measured."""
    import matplotlib.pyplot as plt  # after lenet_keras.figures chose the Agg backend

    measured = [r for r in rows if r.values and r.claim.unit == ACCURACY]
    if not measured:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(measured) + 1.4))
    for y, row in enumerate(reversed(measured)):
        s = compare_stats.summarize(row.values)
        low, high = prediction_interval(s)
        shift = lambda v: (v - row.claim.published) * 100  # noqa: E731
        if math.isfinite(low):
            ax.plot([shift(low), shift(high)], [y, y], color="#9ecae1", lw=1.5)
        ax.plot([shift(s["min"]), shift(s["max"])], [y, y], color="#3182bd", lw=4)
        ax.plot(shift(s["median"]), y, "o", color="#08519c")
    ax.axvline(0, color="#b2182b", lw=1)
    ax.set_yticks(range(len(measured)), [r.claim.key for r in reversed(measured)])
    ax.set_xlabel("ours minus published (percentage points of accuracy)")
    ax.set_title("published (red line) vs ours: median, min-max, 95% range of one run")
    fig.tight_layout()
    return fig


TABLE_STYLE = ("body{max-width:1500px}table.runs{table-layout:fixed;width:100%}"
               "table.runs td,table.runs th{text-align:left;vertical-align:top;overflow-wrap:anywhere}"
               "table.runs th:nth-child(5){width:2.5em}table.runs th:nth-child(10){width:13em}")
"""The page's tables fit its width: fixed layout, long cells (sources, commands) wrap."""
RULE = ("Verdict rule: **reproduced** when the published value lies between our seeds' lowest and highest values, "
        "or inside the 95% confidence interval of our mean (Student t), either widened by half a unit of the "
        "published number's last printed digit (0.8838 stands for 0.88375-0.88385). Otherwise **consistent, more "
        "seeds needed** when the published value is still inside the 95% range of one run of ours (the Student-t "
        "prediction interval mean ± t(0.975, n-1) · s · √(1 + 1/n): each published number is one run, which could "
        "land there), and **differs** when it is outside it (a real difference), each with our median minus the "
        "published value in percentage points. One seed gives no interval (differs, 1 seed). **not measurable here**: what it needs (data, hardware, code) is not here; the "
        "reason is given. Nothing is chosen on the test set: epochs are the published ones, weights the final ones.")
NOT_SCORED = ("Not scored: the training losses and training accuracies the seeds print (they depend on each code's "
              "loss and on how it averages over an epoch), the per-class accuracies of the notebook (seed 004), the "
              "ImageNet error rates quoted in the lecture slides (seed 001, about other networks) and parameter "
              "counts (checked exactly by the test suite: 61,706 for LeNet-5, 4,079,429 for the notebook's CNN).")


def details_table(rows: list[Row]) -> pd.DataFrame:
    """Per row: the key, the words quoted from the source, how ours differs, and our value per seed."""
    return pd.DataFrame([{"row": r.claim.key, "quoted": r.claim.quoted, "how ours differs": r.claim.note,
                          "ours per seed": ", ".join(f"{s}: {format_value(v, r.claim.unit)} ({pages.display_path(d)})"
                                                     for s, v, d in zip(r.seeds, r.values, r.runs))} for r in rows])


def render(rows: list[Row], reports_dir: Path, runs_dir: Path) -> Path:
    """Write `<reports_dir>/reproduction/index.html`, `index.md` (and the differences figure) atomically.

    The page depends on the run directories alone (no clock): rendering it again from the same
    runs gives the same text."""
    final = reports_dir / "reproduction"
    out = final.with_name(".reproduction.partial")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    table, details = pd.DataFrame([table_row(r) for r in rows]), details_table(rows)
    counts = pd.Series([r.verdict.split(":")[0].split(" (")[0] for r in rows]).value_counts()
    runs = list(dict.fromkeys(d for r in rows for d in r.runs))
    training = sum(float(manifest_lib.read_json(d / rundir.MANIFEST).get("wall_seconds") or 0) for d in runs)
    intro = (f"{len(rows)} published numbers from the seeds and papers, scored against runs in "
             f"`{pages.display_path(runs_dir)}`. Verdicts: "
             + ", ".join(f"{count} {name}" for name, count in counts.items())
             + f". The {len(runs)} runs scored took {training:.0f} s of training in all (their manifests' wall_seconds). "
             "Regenerate: `make reproduce`, or `python -m lenet_keras reproduce`.")
    md = ["# Reproduction scorecard", "", intro, "", "## Verdict rule", "", RULE, "", "## Scorecard", "",
          pages.markdown_table(table), ""]
    page = ["<h1>Reproduction scorecard</h1>", f"<p>{pages.inline_html(intro)}</p>", "<h2>Verdict rule</h2>",
            f"<p>{pages.inline_html(RULE)}</p>", "<h2>Scorecard</h2>",
            f"<style>{TABLE_STYLE}</style>", pages.html_table(table)]
    figure = differences_figure(rows)
    if figure is not None:
        figures.save_png(figure, out / "differences.png")
        md += ["## Ours against published", "", "![ours minus published](differences.png)", ""]
        page += ["<h2>Ours against published</h2>", "<img src='differences.png' alt='ours minus published'>"]
    md += ["## Rows in detail", "", pages.markdown_table(details), "", "## Not scored", "", NOT_SCORED, ""]
    page += ["<h2>Rows in detail</h2>", pages.html_table(details), "<h2>Not scored</h2>",
             f"<p>{html.escape(NOT_SCORED)}</p>"]
    pages.write_pages(out, "reproduction scorecard", md, page)
    pages.publish(out, final)
    return final / "index.html"


def handle(args: argparse.Namespace) -> None:
    """The `reproduce` command's handler: `run_scorecard` with the parsed options; prints the page's path."""
    index = run_scorecard(args.runs_dir, args.reports_dir, args.data_dir, seeds=tuple(args.seeds))
    print(f"scorecard: {index} (and {index.with_suffix('.md').name} beside it)")
