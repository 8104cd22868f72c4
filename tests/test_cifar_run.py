"""A 1-epoch run of the CIFAR notebook recipe on a few hundred real images of the JPEG copy of
CIFAR-10 (shared/datasets/cifar10-jpeg): the run directory and every report figure."""

import json

import pytest

from lenet_keras import config, report, train

from .conftest import REPO


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory, cifar_root):
    root = cifar_root
    experiment = config.load(REPO / "experiments/cifar_cnn_notebook.toml", [
        "data.dataset=image_folder", "data.path=cifar10-jpeg", "data.train_subset=320",
        "data.test_subset=64", "train.epochs=1", "train.batch_size=32",
    ])
    runs_dir = tmp_path_factory.mktemp("runs")
    run_dir = train.run(experiment, runs_dir, data_dir=root, verbose=0)
    return runs_dir, run_dir


def test_cifar_run_directory_and_manifest(cifar_run):
    _, run_dir = cifar_run
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "completed" and m["model"]["name"] == "cifar_cnn"
    assert "JPEG copy of CIFAR-10" in m["data"]["description"]
    assert m["data"]["checksums_sha256"]["folder_digest"].startswith("c217601e")
    assert m["speed"]["images_per_second_first_steps"] > 0 and m["speed"]["device"]
    assert (run_dir / "best.keras").is_file()


def test_cifar_report_has_every_figure(cifar_run, tmp_path):
    runs_dir, run_dir = cifar_run
    index = report.build("cifar_cnn_notebook", runs_dir=runs_dir, reports_dir=tmp_path)
    for figure in ("curves", "confusion_matrix", "per_class_accuracy", "sample_predictions", "augmentation_preview"):
        assert (index.parent / f"{run_dir.name}_{figure}.png").is_file(), figure
    text = (index.parent / "index.md").read_text()
    assert "JPEG copy of CIFAR-10" in text and "not the official CIFAR-10" in text
    assert "truck" in text  # per-class table names the classes


def test_interrupted_cifar_run_resumes_to_the_same_weights(tmp_path, cifar_root):
    """Dropout, AutoAugment, crop/flip and MixUp all continue as if never interrupted."""
    import keras
    import numpy as np

    from lenet_keras import resume

    root = cifar_root
    experiment = config.load(REPO / "experiments/cifar_cnn.toml", [
        "data.dataset=image_folder", "data.path=cifar10-jpeg", "data.train_subset=160",
        "data.test_subset=32", "train.epochs=2", "train.batch_size=32",
    ])

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 2:
                raise KeyboardInterrupt

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    whole = train.run(experiment, tmp_path, data_dir=root, run_id="whole", verbose=0)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        train.run(experiment, tmp_path, data_dir=root, run_id="cut", verbose=0, callbacks=(CtrlC(),))
    cut = tmp_path / "cifar_cnn" / "cut"
    assert interrupted.value.run_dir == cut  # the CLI's "continue with: ... --resume RUN_DIR"
    assert json.loads((cut / "manifest.json").read_text())["status"] == "interrupted"
    assert resume.backup_epoch(cut) == 1
    assert train.run(experiment, tmp_path, data_dir=root, resume=True, verbose=0) == cut
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (whole, cut)]
    assert manifests[1]["status"] == "completed" and manifests[1]["resumed"][0]["from_epoch"] == 1
    assert manifests[0]["final_weights"]["values_sha256"] == manifests[1]["final_weights"]["values_sha256"]
    assert manifests[0]["test"] == manifests[1]["test"]
    histories = [np.loadtxt(d / "history.csv", delimiter=",", skiprows=1) for d in (whole, cut)]
    timing = (whole / "history.csv").read_text().split("\n")[0].split(",").index("epoch_seconds")
    np.testing.assert_array_equal(np.delete(histories[0], timing, 1), np.delete(histories[1], timing, 1))
