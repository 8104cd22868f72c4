"""A real 1-epoch training on a few thousand real MNIST images, its run directory and report."""

import csv
import json

import numpy as np
import pytest

from lenet_keras import callbacks, config, pages, report, train
from lenet_keras.errors import RunDirectoryError

from .conftest import REPO, assert_png

SMALL = ["train.epochs=1", "data.train_subset=3000", "data.test_subset=500", "train.batch_size=128"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_dir):
    """Two real runs of the MNIST experiment (the second with another seed), trained once."""
    runs_dir = tmp_path_factory.mktemp("runs")
    first = train.run(config.load(REPO / "experiments/mnist_lenet5.toml", SMALL), runs_dir, data_dir=mnist_dir, verbose=0)
    second = train.run(
        config.load(REPO / "experiments/mnist_lenet5.toml", [*SMALL, "seed=7"]), runs_dir, data_dir=mnist_dir, verbose=0
    )
    return runs_dir, first, second


def test_run_directory_has_every_file(runs):
    runs_dir, first, second = runs
    assert first == runs_dir / "mnist_lenet5" / "run-001" and second.name == "run-002"
    for name in ("manifest.json", "history.csv", "best.keras", "predictions.npz"):
        assert (first / name).is_file() and (first / name).stat().st_size > 0, name
    assert list((first / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert not list(first.rglob(".tmp-*")) and not list(first.rglob("*.tmp"))  # manifest.atomic_path's temp names


def test_best_checkpoint_loads_back_as_lenet5(runs):
    import keras

    from lenet_keras.models import LeNet5

    model = keras.models.load_model(runs[1] / "best.keras")
    assert isinstance(model, LeNet5) and model.count_params() == 61706


def test_history_csv_has_one_row_per_epoch_with_learning_rate_and_seconds(runs):
    rows = list(csv.DictReader((runs[1] / "history.csv").open()))
    assert len(rows) == 1
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds"}
    # 3000 images -> 2400 for training -> 19 steps of 128: lr = 1e-2 * 0.98 ** (19 / 10000)
    assert float(rows[0]["learning_rate"]) == pytest.approx(1e-2 * 0.98 ** (19 / 10000), rel=1e-5)
    assert float(rows[0]["epoch_seconds"]) > 0
    assert 0.3 < float(rows[0]["val_accuracy"]) <= 1.0  # it learned something in one epoch


def test_manifest_records_config_versions_data_machine_and_metrics(runs):
    m = json.loads((runs[1] / "manifest.json").read_text())
    assert m["status"] == "completed" and m["error"] is None
    assert m["config"]["train"]["epochs"] == 1 and m["seed"] == 42
    assert {"python", "keras", "numpy"} <= set(m["versions"])
    assert "tensorflow-cpu" in m["versions"] or "tensorflow" in m["versions"]
    assert m["data"]["checksums_sha256"]["t10k-images-idx3-ubyte"].startswith("0fa7898d")
    assert (m["data"]["train_images"], m["data"]["val_images"], m["data"]["test_images"]) == (2400, 600, 500)
    assert m["model"] == {"name": "lenet5", "parameters": 61706}
    assert m["machine"]["cpu_count"] >= 1 and "gpus" in m["machine"]
    assert "commit" in m["git"]
    assert m["started_utc"] <= m["ended_utc"] and m["wall_seconds"] > 0
    assert 0 < m["test"]["accuracy"] <= 1 and m["test"]["loss"] > 0
    predictions = np.load(runs[1] / "predictions.npz")
    assert predictions["probabilities"].shape == (500, 10)
    assert float((predictions["probabilities"].argmax(1) == predictions["labels"]).mean()) == pytest.approx(
        m["test"]["accuracy"], abs=1e-6
    )


def test_tensorboard_event_files_hold_the_scalars_graph_histograms_and_image(runs):
    from tensorboard.backend.event_processing import event_accumulator as ea

    def tags(sub):
        acc = ea.EventAccumulator(str(runs[1] / "tensorboard" / sub), size_guidance={ea.TENSORS: 0})
        acc.Reload()
        return acc

    train_events = tags("train")
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_epoch_seconds"} <= set(train_events.Tags()["tensors"])
    assert any(t.endswith("kernel/histogram") for t in train_events.Tags()["tensors"])
    assert train_events.Tags()["graph"] is True
    import tensorflow as tf

    loss = train_events.Tensors("epoch_loss")
    history_loss = float(next(csv.DictReader((runs[1] / "history.csv").open()))["loss"])
    assert len(loss) == 1 and float(tf.make_ndarray(loss[0].tensor_proto)) == pytest.approx(history_loss, rel=1e-6)
    assert {"epoch_loss", "epoch_accuracy"} <= set(tags("validation").Tags()["tensors"])
    assert {"test_accuracy", "test_loss", "sample_test_predictions"} <= set(tags("test").Tags()["tensors"])


def test_same_seed_same_first_epoch(runs, mnist_dir, tmp_path):
    """Seeds + op determinism: a repeat of run-001 gives the same history (timing aside)."""
    repeat = train.run(config.load(REPO / "experiments/mnist_lenet5.toml", SMALL), tmp_path, data_dir=mnist_dir, verbose=0)

    def metrics(path):
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader((path / "history.csv").open())]

    assert metrics(repeat) == metrics(runs[1])
    assert metrics(runs[2]) != metrics(runs[1])  # another seed differs


def test_existing_run_directory_is_never_overwritten(runs, mnist_dir):
    runs_dir, first, _ = runs
    before = (first / "manifest.json").read_bytes()
    with pytest.raises(RunDirectoryError, match="already exists"):
        train.run(config.load(REPO / "experiments/mnist_lenet5.toml", SMALL), runs_dir, data_dir=mnist_dir, run_id="run-001")
    assert (first / "manifest.json").read_bytes() == before


def test_report_renders_from_run_directories(runs, tmp_path):
    runs_dir = runs[0]
    index = report.build(REPO / "experiments/mnist_lenet5.toml", runs_dir=runs_dir, reports_dir=tmp_path)
    out = index.parent
    assert index == tmp_path / "mnist_lenet5" / "index.html"
    sizes = {"curves": (9, 3.4), "confusion_matrix": (5.5, 5.5 * 0.9), "per_class_accuracy": (7, 0.28 * 10 + 1.2),
             "sample_predictions": (8 * 1.15, 4 * 1.6)}
    for run_id in ("run-001", "run-002"):
        for figure, size in sizes.items():
            assert_png(out / f"{run_id}_{figure}.png", size)
    assert_png(out / "all_runs_curves.png", (9, 3.6))
    assert not list(out.rglob(".tmp-*"))
    html, md = index.read_text(), (out / "index.md").read_text()
    for text in (html, md):
        assert "run-001" in text and "run-002" in text and "Most confused pairs" in text
    m = json.loads((runs[1] / "manifest.json").read_text())
    assert f"{m['test']['accuracy']:.4f}" in md
    assert "| seed |" in md  # the config key that differs between the two runs is a column
    # issue 17 item 7: no Markdown in the HTML, a table of contents, the data folder as pages.display_path shows it
    assert "`" not in html and "<nav class='toc'>" in html and "- [Runs](#runs)" in md
    assert f"<code>{pages.display_path(m['data']['source'])}</code>" in html


def test_report_lists_unfinished_runs_without_drawing_them(runs, tmp_path, monkeypatch):
    import shutil

    runs_dir = tmp_path / "runs"
    shutil.copytree(runs[0], runs_dir)
    broken = runs_dir / "mnist_lenet5" / "run-002"
    m = json.loads((broken / "manifest.json").read_text())
    m.update(status="failed", error="RuntimeError: boom")
    (broken / "manifest.json").write_text(json.dumps(m))
    (broken / "predictions.npz").unlink()
    drawn = []
    real_overlay = report.figures.overlaid_curves
    monkeypatch.setattr(report.figures, "overlaid_curves", lambda histories: drawn.append(list(histories))
                        or real_overlay(histories))
    index = report.build("mnist_lenet5", runs_dir=runs_dir, reports_dir=tmp_path / "reports")
    assert drawn == [["run-001"]]  # the failed run has a history row but is not in the overlay
    assert "run-002 (failed)" in index.read_text()
    assert not (index.parent / "run-002_confusion_matrix.png").exists()
    assert (index.parent / "run-001_confusion_matrix.png").exists()


def test_report_without_runs_says_how_to_make_one(tmp_path):
    with pytest.raises(RunDirectoryError, match="no runs in .*mnist_lenet5.*python -m lenet_keras train"):
        report.build("mnist_lenet5", runs_dir=tmp_path, reports_dir=tmp_path / "reports")


def test_rerun_from_the_manifest_is_identical(runs, mnist_dir):
    from lenet_keras import rerun

    runs_dir, first, _ = runs
    new_dir, comparison = rerun.rerun(first, data_dir=mnist_dir, verbose=0)
    assert new_dir.parent == first.parent and new_dir != first
    assert comparison.identical, comparison.lines()
    assert comparison.lines()[0].startswith("identical")


def test_rerun_names_the_first_difference_and_broken_manifests(runs, tmp_path):
    import shutil

    from lenet_keras import rerun

    _, first, second = runs  # second: another seed
    comparison = rerun.compare(first, second)
    assert not comparison.identical and "first differs at epoch 0" in comparison.difference
    broken = tmp_path / "broken"
    shutil.copytree(first, broken)
    (broken / "manifest.json").write_text('{"config": ')
    with pytest.raises(RunDirectoryError, match="manifest.json is broken"):
        rerun.rerun(broken)
    with pytest.raises(RunDirectoryError, match="has no manifest.json"):
        rerun.rerun(tmp_path)


def test_a_diverging_run_ends_failed_and_the_report_still_renders(mnist_dir, tmp_path):
    from lenet_keras.errors import TrainingDivergedError

    experiment = config.load(REPO / "experiments/mnist_lenet5.toml", [
        "train.epochs=2", "data.train_subset=600", "data.test_subset=100", "train.batch_size=32",
        "train.histogram_freq=0", "optimizer.learning_rate=1e38",  # overflows float32 weights -> inf loss
    ])
    with pytest.raises(TrainingDivergedError, match="NaN or infinite in epoch 1"):
        train.run(experiment, tmp_path / "runs", data_dir=mnist_dir, verbose=0)
    manifest = json.loads((tmp_path / "runs/mnist_lenet5/run-001/manifest.json").read_text())
    assert manifest["status"] == "failed" and "TrainingDivergedError" in manifest["error"]
    index = report.build("mnist_lenet5", runs_dir=tmp_path / "runs", reports_dir=tmp_path / "reports")
    assert "run-001 (failed)" in (index.parent / "index.md").read_text()


@pytest.mark.parametrize("accuracy, loss, expected", [
    (0.1397, 6.1e7, "far too high"),      # measured: deck recipe, optimizer.learning_rate=1e6, epoch 1
    (0.15, 2.29, "too low"),              # chance level with a loss near ln(10): no blow-up
    (0.21, 2.1, None),                    # above 2/10: learning
])
def test_chance_level_message_names_the_likely_cause(accuracy, loss, expected):
    message = callbacks.chance_level_message(0, accuracy, loss, 10)
    assert (message is None) if expected is None else (expected in message and "epoch 1" in message)


def test_a_run_that_trains_to_nothing_warns_records_and_reports_it(mnist_dir, tmp_path, capsys):
    experiment = config.load(REPO / "experiments/mnist_lenet5.toml", [
        "train.epochs=1", "data.train_subset=1200", "data.test_subset=100", "train.batch_size=32",
        "train.histogram_freq=0", "optimizer.learning_rate=1e6",  # finite loss, chance-level accuracy
    ])
    run_dir = train.run(experiment, tmp_path / "runs", data_dir=mnist_dir, verbose=0)
    assert "WARNING: epoch 1: training accuracy" in capsys.readouterr().err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and len(manifest["warnings"]) == 1
    assert "learning rate is most likely far too high" in manifest["warnings"][0]
    index = report.build("mnist_lenet5", runs_dir=tmp_path / "runs", reports_dir=tmp_path / "reports")
    md = (index.parent / "index.md").read_text()
    assert "## Warnings" in md and manifest["warnings"][0] in md and "completed (warning)" in md


def test_a_run_projected_over_an_hour_says_so_with_the_cheaper_alternatives(capsys):
    assert callbacks.long_run_message(3599, 20, "CPU") is None
    message = callbacks.long_run_message(22 * 3600, 150, "CPU")
    assert "22.0 h on CPU" in message and "150 epochs, 8.8 min each" in message
    assert "train.epochs=N" in message and "make cifar-fast" in message
    record = {}
    throughput = callbacks.Throughput(batch_size=128, steps_per_epoch=352, epochs=150, record=record, quiet=True)
    throughput.report(11, 1, images_per_s=95.0)  # the notebook CNN's rate on 2 cores: ~22 h
    assert record["projected_training_seconds"] > 3600
    assert "WARNING: this run is projected to train for" in capsys.readouterr().err
