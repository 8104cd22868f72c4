"""`train EXPERIMENT --seeds 0 1 2`: one normal run per seed, skipping seeds already trained.

Each seed's run is `train EXPERIMENT [KEY=VALUE ...] seed=S` in a fresh Python process, so it
is the very run that command alone would make (a run made after other runs in the same
process can differ in its last bits: the Keras/TensorFlow state a process carries). A seed is
skipped when the experiment folder already holds a completed Keras run whose resolved config
(`manifest.json` "config", the seed included) equals this seed's: the same experiment file
and overrides. The summary line gives the test accuracy over the seeds (`compare_stats.summarize`).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lenet_keras import config as config_lib
from lenet_keras import manifest as manifest_lib
from lenet_keras import rundir
from lenet_keras import run_index
from lenet_keras.errors import LenetKerasError


@dataclass(frozen=True)
class SeedRun:
    """One seed's outcome: its run directory and whether it was trained now (False: skipped)."""

    seed: int
    run_dir: Path
    trained: bool


def check_overrides(overrides: list[str]) -> None:
    """Refuse a `seed=` override next to `--seeds`.

    Raises:
        LenetKerasError: naming the override.
    """
    for override in overrides:
        if override.split("=", 1)[0].strip() == "seed":
            raise LenetKerasError(f"train --seeds: the override {override!r} conflicts with --seeds; drop one of them")


def seed_command(experiment: Path, overrides: list[str], seed: int, runs_dir: Path, data_dir: Path | None,
                 resume: bool) -> list[str]:
    """The `python -m lenet_keras train ...` command line of one seed's run."""
    command = [sys.executable, "-m", "lenet_keras", "train", str(experiment), *overrides, f"seed={seed}",
               "--runs-dir", str(runs_dir)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    return command + (["--resume"] if resume else [])


def train_seeds(experiment: Path, overrides: list[str], seeds: list[int], runs_dir: Path,
                data_dir: Path | None = None, resume: bool = False, runner=subprocess.run) -> list[SeedRun]:
    """Train `experiment` once per seed (in order, duplicates dropped), each in a fresh process.

    Args:
        experiment: experiment file or shipped name; overrides: KEY=VALUE (no `seed=`).
        seeds: the seeds (ints); runs_dir, data_dir: as `train`'s options.
        resume: continue each seed's unfinished run of the same config (`train --resume`).
        runner: `subprocess.run`-like callable (tests replace it).

    Returns:
        One `SeedRun` per seed, in the order given.

    Raises:
        LenetKerasError: a `seed=` override; a seed's run failed (its exit status and command;
            the seeds before it keep their runs).
        ConfigError: the experiment file or an override is invalid (before anything runs).
        KeyboardInterrupt: Ctrl-C (the running seed records "interrupted", resumable).
    """
    check_overrides(overrides)
    outcomes = []
    for seed in dict.fromkeys(seeds):
        resolved = config_lib.load(experiment, [*overrides, f"seed={seed}"])
        folder = Path(runs_dir) / resolved.name
        done = run_index.completed_run(folder, rundir.config_block(resolved), "keras")
        if done is not None:
            print(f"seed {seed}: skipped, {done} has completed this config", flush=True)
            outcomes.append(SeedRun(seed, done, False))
            continue
        print(f"seed {seed}: training", flush=True)
        command = seed_command(experiment, overrides, seed, runs_dir, data_dir, resume)
        finished = runner(command)
        if finished.returncode:
            raise LenetKerasError(f"train --seeds: seed {seed} failed (exit {finished.returncode}): {' '.join(command)}")
        made = run_index.completed_run(folder, rundir.config_block(resolved), "keras")
        if made is None:
            raise LenetKerasError(f"train --seeds: seed {seed} exited 0 but {folder} holds no completed run of its config")
        outcomes.append(SeedRun(seed, made, True))
    return outcomes


def summary_line(outcomes: list[SeedRun]) -> str:
    """"test accuracy over N seeds: mean M (95% CI L-H), min-max A-B; T trained, S skipped"."""
    from lenet_keras import compare_stats

    accuracies = []
    for outcome in outcomes:
        test = manifest_lib.read_json(outcome.run_dir / rundir.MANIFEST).get("test") or {}
        accuracies.append(float(test.get("accuracy", float("nan"))))
    s = compare_stats.summarize(accuracies)
    trained = sum(o.trained for o in outcomes)
    return (f"test accuracy over {s['n']} seed(s): mean {s['mean']:.4f} (95% CI {s['ci_low']:.4f}-{s['ci_high']:.4f}), "
            f"min-max {s['min']:.4f}-{s['max']:.4f}; {trained} trained now, {len(outcomes) - trained} skipped")
