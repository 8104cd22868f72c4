"""Test-time augmentation of every test image against only the uncertain ones, on trained runs
(issue 19: the hiverge cifar10-speedrun route).

    python -m benchmarks.tta_compare RUN_DIR [RUN_DIR ...] [--repeats 3] [--data-dir DIR]
    python -m benchmarks.tta_compare runs/airbench_compare/run-*     # the runs of make cifar-fast-bench

A development tool of the repository (not part of the installed package): run it from the
repository root.

For each run directory of an experiment with test-time augmentation (e.g. `cifar_fast.toml`):
rebuild its model from the manifest's experiment, load `final.weights.h5` (the weights the run
evaluated), check that they reproduce the run's own TTA probabilities (predictions.npz), run each
way once untimed, then evaluate the test set `--repeats` times each way, alternating, both timed
as the run times its TTA (`tta_seconds`: tracing included):
  "all"        `airbench.tta_probabilities`, airbench's six views of every image
               (`train.test_time_augmentation = "mirror_translate"`);
  "uncertain"  `airbench.uncertain_tta_probabilities`, a plain pass, then the six views of only
               the 20% least confident images (`"mirror_translate_uncertain"`, hiverge's
               `UNCERTAIN_QUANTILE`; chosen there, not here).
Printed per run and as medians over runs: test accuracy plain (the manifest's) / all / uncertain
(percent), the seconds of each (min/median/max over repeats), the ratio uncertain/all of the
medians, and the seconds saved as a share of the run's training seconds (epoch seconds less
per-epoch validation, plus TTA: `benchmarks.airbench_compare`'s count). Results go to
`runs/bench/tta-NNN.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import airbench_compare
from lenet_keras import data as data_lib
from lenet_keras import manifest as manifest_lib
from lenet_keras import pipeline, rundir, train
from lenet_keras.errors import LenetKerasError

PROBABILITY_TOLERANCE = 1e-3
"""How far the reloaded weights' all-image TTA probabilities may be from the run's own
(predictions.npz `tta_probabilities`) before the run is refused: the same computation on the
same weights, so only rounding may differ."""


def load_run(run_dir: Path, data_dir: Path | None, cache: dict):
    """(model with the run's final weights, test `tf.data.Dataset`, test labels int (N,), manifest).

    `cache` maps a data config to its loaded `ImageData`, so runs on the same data decode it once.

    Raises:
        LenetKerasError: no manifest, no final.weights.h5, or no test-time augmentation in the run.
    """
    experiment = train.recorded_experiment(run_dir)
    if experiment.train.test_time_augmentation == "none":
        raise LenetKerasError(f"{run_dir}: its experiment has train.test_time_augmentation = 'none'")
    weights = run_dir / "final.weights.h5"
    if not weights.is_file():
        raise LenetKerasError(f"{weights}: missing (did the run finish?)")
    if experiment.data not in cache:
        cache[experiment.data] = data_lib.load(experiment.data, data_dir, download=False)
    dataset = cache[experiment.data]
    model = train.compiled_model(experiment, dataset)
    model.load_weights(weights)
    _, _, test = pipeline.pipelines(dataset, experiment.train.batch_size, experiment.seed, experiment.data.mean,
                                    experiment.data.std, experiment.augment, epochs=experiment.train.epochs)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return model, test, dataset.test_labels, manifest


def timed(function, *args) -> tuple[np.ndarray, float]:
    """(function(*args), seconds it took)."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def compare_run(run_dir: Path, data_dir: Path | None, repeats: int, cache: dict) -> dict:
    """Accuracies (percent) and seconds of plain, all-image and uncertain-image TTA for one run.

    Raises:
        LenetKerasError: as `load_run`, or the weights do not reproduce the run's TTA probabilities.
    """
    from lenet_keras import airbench

    model, test, labels, manifest = load_run(run_dir, data_dir, cache)
    accuracy = lambda probabilities: 100 * float(np.mean(probabilities.argmax(axis=1) == labels))  # noqa: E731
    saved = np.load(run_dir / "predictions.npz")["tta_probabilities"]
    again = airbench.tta_probabilities(model, test, 2)  # also the untimed warm-up
    if again.shape != saved.shape or np.abs(again - saved).max() > PROBABILITY_TOLERANCE:
        raise LenetKerasError(f"{run_dir}: final.weights.h5 does not reproduce the run's TTA probabilities "
                              "(predictions.npz): not the weights the run evaluated")
    airbench.uncertain_tta_probabilities(model, test, 2)  # untimed warm-up
    ways = {"all": lambda: airbench.tta_probabilities(model, test, 2),
            "uncertain": lambda: airbench.uncertain_tta_probabilities(model, test, 2)}
    seconds = {way: [] for way in ways}
    accuracies = {}
    for _ in range(repeats):
        for way, evaluate in ways.items():
            probabilities, spent = timed(evaluate)
            seconds[way].append(round(spent, 3))
            accuracies[way] = accuracy(probabilities)
    median = {way: statistics.median(values) for way, values in seconds.items()}
    training = airbench_compare.training_seconds(run_dir)
    return {"run_dir": str(run_dir), "plain_accuracy": 100 * manifest["test"]["accuracy"],
            "all_accuracy": accuracies["all"], "uncertain_accuracy": accuracies["uncertain"],
            "all_seconds": seconds["all"], "uncertain_seconds": seconds["uncertain"],
            "ratio": round(median["uncertain"] / median["all"], 3), "training_seconds": training,
            "saved_share_of_training": round((median["all"] - median["uncertain"]) / training, 4)}


def _spread(values: list[float]) -> str:
    """'median (min-max)' of `values`."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def table(rows: list[dict]) -> str:
    """The printed table: one line a run, then medians over runs."""
    lines = ["| run | plain % | all-image TTA % | uncertain TTA % | all s | uncertain s | uncertain/all | saved / training s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['run_dir']} | {row['plain_accuracy']:.2f} | {row['all_accuracy']:.2f} | "
                     f"{row['uncertain_accuracy']:.2f} | {_spread(row['all_seconds'])} | {_spread(row['uncertain_seconds'])} | "
                     f"{row['ratio']:.3f} | {100 * row['saved_share_of_training']:.1f}% |")
    median = lambda key: statistics.median(row[key] for row in rows)  # noqa: E731
    lines.append(f"| median of {len(rows)} | {median('plain_accuracy'):.2f} | {median('all_accuracy'):.2f} | "
                 f"{median('uncertain_accuracy'):.2f} | | | {median('ratio'):.3f} | "
                 f"{100 * median('saved_share_of_training'):.1f}% |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The command line (`--help`)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.tta_compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories with test-time augmentation")
    p.add_argument("--repeats", type=int, default=3, help="timed evaluations of each way per run (default 3)")
    p.add_argument("--data-dir", type=Path, default=None, help="as `train --data-dir` (default: $LENET_KERAS_DATA, ...)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="results go to RUNS_DIR/bench/tta-NNN.json")
    return p


def main(argv: list[str] | None = None) -> int:
    """Compare the two evaluations on every RUN_DIR; print the table, write runs/bench/tta-NNN.json."""
    args = parser().parse_args(argv)
    if args.repeats < 1:
        print(f"error: --repeats {args.repeats}: expected at least 1", file=sys.stderr)
        return 2
    cache: dict = {}
    try:
        rows = [compare_run(run_dir, args.data_dir, args.repeats, cache) for run_dir in args.run_dirs]
    except LenetKerasError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(rows))
    path = rundir.next_numbered_path(args.runs_dir / "bench", "tta", ".json")
    command = "python -m benchmarks.tta_compare " + " ".join(sys.argv[1:] if argv is None else argv)
    manifest_lib.write_json_atomic(path, {"command": command, "table": table(rows), "runs": rows})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
