"""A sweep's export: `runs/<sweep>/trials.csv`.

No HParams experiment summary is written: each trial's session is the one every run writes
(`lenet_keras.hparams_log`, its whole flattened config, the swept keys among them), and a
summary under the logdir would make TensorBoard show only the swept keys for every run below
it, `runs/` included. Owns: the table of every trial of the study
(`trials_table`: hyperparameters, final and best metrics, test accuracy, objective, with
`repeats` > 1 its spread over the seeds (`sweep_study.SPREAD_COLUMNS`), wall seconds, run
directory, the command that reruns it, error) and its atomic write
(`write_trials_csv`).
"""

from __future__ import annotations

import os
from pathlib import Path

from lenet_keras import manifest as manifest_lib
from lenet_keras import sweep_study
from lenet_keras.sweep_study import METRICS, Sweep

def trials_table(sweep: Sweep, study, runs_dir: Path):
    """One row per trial (pandas DataFrame): number, state, every hyperparameter, final and
    best metrics (fractions), epochs run, wall seconds, run directory, command, error."""
    import pandas as pd


    rows = []
    for t in study.get_trials(deepcopy=False):
        params = t.params or t.system_attrs.get("fixed_params", {})
        row = {"trial": t.number, "state": t.state.name.lower()}
        row.update({d.key: params.get(d.key) for d in sweep.space})
        run_dir = Path(runs_dir) / sweep.name / t.user_attrs.get("run_dir", f"trial-{t.number:03d}")
        history = None
        if (run_dir / "history.csv").is_file() and (run_dir / "history.csv").stat().st_size:
            history = pd.read_csv(run_dir / "history.csv")
        manifest = manifest_lib.read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").is_file() else {}
        for metric in METRICS:
            column = history[metric] if history is not None and metric in history else None
            row[f"final {metric}"] = float(column.iloc[-1]) if column is not None and len(column) else None
            best = (column.max() if "accuracy" in metric else column.min()) if column is not None and len(column) else None
            row[f"best {metric}"] = float(best) if best is not None else None
        row["test accuracy"] = manifest.get("test", {}).get("accuracy")
        row["objective"] = t.value
        if sweep.repeats > 1:  # the mean over the seeds' runs; the per-run columns are the first seed's
            row.update(sweep_study.spread_columns(t.user_attrs))
        row["epochs run"] = len(history) if history is not None else 0
        row["wall seconds"] = t.user_attrs.get("wall_seconds")
        row["run directory"] = str(run_dir) if run_dir.is_dir() else ""
        row["command"] = t.user_attrs.get("command", "")
        lost = (f"worker lost (no heartbeat for {sweep_study.GRACE_SECONDS} s); its point was queued again"
                if t.state.name == "FAIL" else "")
        row["error"] = t.user_attrs.get("error", t.user_attrs.get("stopped_early", lost))
        rows.append(row)
    return pd.DataFrame(rows)


def write_trials_csv(sweep: Sweep, study, runs_dir: Path) -> Path:
    """`runs/<sweep>/trials.csv`, written atomically (temporary file, then rename)."""
    path = Path(runs_dir) / sweep.name / "trials.csv"
    temporary = path.with_suffix(".csv.tmp")
    trials_table(sweep, study, runs_dir).to_csv(temporary, index=False)
    os.replace(temporary, path)
    return path
