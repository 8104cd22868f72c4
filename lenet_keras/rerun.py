"""Reproduce a run from its manifest and say whether the numbers came out the same.

`rerun(run_dir)` reads `run_dir/manifest.json`, trains the recorded experiment again (same
resolved config and seed) into a new run directory of the same experiment, then compares the
two `history.csv` files epoch by epoch (every column except the wall-clock `epoch_seconds`),
the test metrics and the digest of the final weights. It warns when the package versions or
the machine differ from the original's, the usual reasons for a difference (see README,
"Reproducibility").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lenet_keras import manifest as manifest_lib

TIMING_COLUMNS = ("epoch_seconds",)
"""history.csv columns that measure wall-clock time and are expected to differ."""


@dataclass
class Comparison:
    """The outcome of comparing a run with its rerun."""

    identical: bool
    difference: str = ""
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The comparison as printable lines: the verdict first, then one line per warning."""
        head = ["identical: every history.csv value (timing columns aside), the test metrics and the final weights "
                "are equal"
                if self.identical else f"different: {self.difference}"]
        return head + [f"warning: {w}" for w in self.warnings]


def compare(original: Path, again: Path) -> Comparison:
    """Compare two run directories' histories and test metrics (see the module docstring)."""
    import numpy as np
    import pandas as pd

    first, second = manifest_lib.read_run_manifest(original), manifest_lib.read_run_manifest(again)
    warnings = []
    if first.get("versions") != second.get("versions"):
        changed = sorted(k for k in set(first.get("versions", {})) | set(second.get("versions", {}))
                         if first.get("versions", {}).get(k) != second.get("versions", {}).get(k))
        warnings.append(f"package versions differ ({', '.join(changed)}): numbers may differ legitimately")
    if first.get("machine") != second.get("machine"):
        warnings.append("the machine differs (CPU model, core count or devices): numbers may differ legitimately")
    a, b = (pd.read_csv(Path(p) / "history.csv") for p in (original, again))
    columns = [c for c in a.columns if c not in TIMING_COLUMNS]
    if list(b.columns) != list(a.columns):
        return Comparison(False, f"history.csv columns differ: {list(a.columns)} vs {list(b.columns)}", warnings)
    for epoch in range(max(len(a), len(b))):
        if epoch >= len(a) or epoch >= len(b):
            return Comparison(False, f"epochs run differ: {len(a)} vs {len(b)}", warnings)
        for column in columns:
            x, y = a[column].iloc[epoch], b[column].iloc[epoch]
            if not (x == y or (pd.isna(x) and pd.isna(y))):
                return Comparison(False, f"{column} first differs at epoch {epoch}: {x!r} vs {y!r} "
                                         f"(difference {float(y) - float(x):+.3g})", warnings)
    for key in ("loss", "accuracy"):
        x, y = first.get("test", {}).get(key), second.get("test", {}).get(key)
        if x != y and not (x is not None and y is not None and np.isnan(x) and np.isnan(y)):
            return Comparison(False, f"test {key} differs: {x!r} vs {y!r}", warnings)
    x, y = (m.get("final_weights", {}).get("values_sha256") for m in (first, second))
    if x and y and x != y:
        return Comparison(False, "the final weights differ (every metric above is equal)", warnings)
    return Comparison(True, "", warnings)


def rerun(run_dir: str | Path, data_dir=None, verbose: int | None = None) -> tuple[Path, Comparison]:
    """Train the run recorded in `run_dir` again, into a new run directory beside it.

    Returns:
        (the new run directory, the comparison with the original).

    Raises:
        RunDirectoryError: a missing or broken manifest (see `lenet_keras.manifest.read_run_manifest`).
        ConfigError: the recorded config is no longer valid for this version of the package.
    """
    from lenet_keras import train

    run_dir = Path(run_dir)
    experiment = train.recorded_experiment(run_dir)
    new_dir = train.run(experiment, runs_dir=run_dir.parent.parent, data_dir=data_dir, verbose=verbose)
    return new_dir, compare(run_dir, new_dir)
