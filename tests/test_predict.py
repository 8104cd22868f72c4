"""`predict` and `export` on a real tiny MNIST run, through `cli.main`: checked against the run's
own `predictions.npz` (the probabilities its tf.data test pipeline gave with the final weights)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from lenet_keras import cli, config, train
from lenet_keras.pipeline import normalize

from .conftest import REPO

TINY = ["train.epochs=1", "data.train_subset=600", "data.test_subset=100", "train.batch_size=64",
        "train.histogram_freq=0", "data.mean=[0.1307]", "data.std=[0.3081]"]
"""The brief's tiny run, with a mean/std so that the run's own scaling matters to the results."""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mnist_dir):
    """One real 1-epoch MNIST LeNet-5 run (scaled with mean 0.1307, std 0.3081)."""
    runs_dir = tmp_path_factory.mktemp("predict_runs")
    return train.run(config.load(REPO / "experiments/mnist_lenet5.toml", TINY), runs_dir, data_dir=mnist_dir, verbose=0)


@pytest.fixture(scope="module")
def images(run_dir, tmp_path_factory):
    """Four MNIST test images as 28x28 grayscale PNGs: one file alone, three in a folder (named so
    that sorting by name reverses their order); (single png, folder, uint8 (4, 28, 28, 1) in the
    order predict reports them)."""
    from PIL import Image

    samples = np.load(run_dir / "predictions.npz")["sample_images"][:4]
    root = tmp_path_factory.mktemp("images")
    single, folder = root / "one.png", root / "folder"
    folder.mkdir()
    Image.fromarray(samples[0, :, :, 0], "L").save(single)
    for i, name in zip((1, 2, 3), ("c.png", "b.png", "a.png")):
        Image.fromarray(samples[i, :, :, 0], "L").save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return single, folder, samples[[0, 3, 2, 1]]


def run_probabilities(run_dir, order=(0, 3, 2, 1)):
    """The run's own test probabilities (predictions.npz, tf.data path, final weights) of the
    sample images in `order` (default: the order `images` gives them)."""
    saved = np.load(run_dir / "predictions.npz")
    return saved["probabilities"][saved["sample_indices"][list(order)]]


def checkpoint_probabilities(checkpoint, pixels):
    """What the .keras file `checkpoint` predicts for uint8 (N, 28, 28, 1) images scaled as the run did."""
    import keras

    import lenet_keras.models  # noqa: F401

    return keras.models.load_model(checkpoint).predict(normalize(pixels, [0.1307], [0.3081]), verbose=0)


def read_rows(path):
    return list(csv.DictReader(path.open(newline="")))


def test_predict_prints_top3_and_writes_csv_like_the_models_own_predict(run_dir, images, tmp_path, capsys):
    single, folder, pixels = images
    out = tmp_path / "predictions.csv"
    assert cli.main(["predict", str(run_dir), str(single), str(folder), "--out", str(out)]) == 0
    paths = [single, folder / "a.png", folder / "b.png", folder / "c.png"]
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed[:4]] == [str(p) for p in paths]
    assert printed[4] == f"predictions: {out}"
    rows = read_rows(out)
    assert list(rows[0]) == ["path", "rank", "class", "probability"] and len(rows) == 4 * 3
    expected = run_probabilities(run_dir)
    for i, path in enumerate(paths):
        mine = rows[3 * i: 3 * i + 3]
        assert [r["path"] for r in mine] == [str(path)] * 3 and [r["rank"] for r in mine] == ["1", "2", "3"]
        probabilities = [float(r["probability"]) for r in mine]
        assert probabilities == sorted(probabilities, reverse=True)
        assert mine[0]["class"] == str(int(np.argmax(expected[i])))  # class names of MNIST: "0".."9"
        assert probabilities[0] == pytest.approx(float(expected[i].max()), abs=2e-6)


def test_predict_with_every_class_sums_to_one_and_matches_every_probability(run_dir, images, tmp_path):
    single, folder, pixels = images
    out = tmp_path / "all.csv"
    assert cli.main(["predict", str(run_dir), str(single), str(folder), "--top", "10", "--out", str(out)]) == 0
    rows = read_rows(out)
    assert len(rows) == 4 * 10
    expected = run_probabilities(run_dir)
    for i in range(4):
        got = {int(r["class"]): float(r["probability"]) for r in rows[10 * i: 10 * i + 10]}
        assert sum(got.values()) == pytest.approx(1.0, abs=1e-4)
        assert [got[c] for c in range(10)] == pytest.approx(expected[i].tolist(), abs=2e-6)


@pytest.mark.parametrize("size, mode, says", [((32, 32), "L", "32x32 image with 1 channel"),
                                              ((28, 28), "RGB", "28x28 image with 3 channels")])
def test_an_image_of_another_size_or_channels_is_exit_2_naming_the_file(run_dir, images, tmp_path, capsys,
                                                                          size, mode, says):
    from PIL import Image

    bad = tmp_path / "bad.png"
    Image.new(mode, size).save(bad)
    assert cli.main(["predict", str(run_dir), str(images[0]), str(bad)]) == 2
    error = capsys.readouterr().err
    assert f"{bad}: {says}" in error and "expects 28x28 images with 1 channel" in error
    assert "Traceback" not in error


def test_a_run_directory_without_best_keras_is_exit_2_naming_it(run_dir, images, tmp_path, capsys):
    shutil.copy(run_dir / "manifest.json", tmp_path / "manifest.json")
    assert cli.main(["predict", str(tmp_path), str(images[0])]) == 2
    assert f"{tmp_path / 'best.keras'}: missing" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path)]) == 2
    assert f"{tmp_path / 'best.keras'}: missing" in capsys.readouterr().err


def test_predict_help_says_images_are_not_resized(capsys):
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    assert "no automatic resize" in " ".join(capsys.readouterr().out.split())


def test_export_writes_a_savedmodel_that_serves_the_same_probabilities_and_refuses_to_overwrite(
        run_dir, images, capsys):
    import tensorflow as tf

    out = run_dir / "export" / "savedmodel"
    assert cli.main(["export", str(run_dir), "--format", "savedmodel"]) == 0
    assert capsys.readouterr().out.strip() == f"exported: {out}"
    assert (out / "saved_model.pb").is_file() and not list(out.parent.glob(".tmp-*"))
    pixels = images[2]
    loaded = tf.saved_model.load(str(out))  # kept referenced: its variables die with it
    served = loaded.serve(tf.constant(normalize(pixels, [0.1307], [0.3081])))
    np.testing.assert_allclose(served.numpy(), run_probabilities(run_dir), atol=1e-5)
    before = sorted(p.name for p in out.iterdir())
    assert cli.main(["export", str(run_dir)]) == 2
    assert f"{out}: already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


def test_the_run_recorded_the_scaling_predict_applies(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert (manifest["config"]["data"]["mean"], manifest["config"]["data"]["std"]) == ([0.1307], [0.3081])


@pytest.fixture(scope="module")
def run_with_other_best(run_dir, tmp_path_factory):
    """A copy of `run_dir` whose best.keras holds other weights than its final ones (the output
    layer's weights halved), as when the best validation epoch is not the last."""
    import keras

    import lenet_keras.models  # noqa: F401

    copy = tmp_path_factory.mktemp("other_best") / run_dir.name
    shutil.copytree(run_dir, copy)
    model = keras.models.load_model(copy / "best.keras")
    kernel = model.layers[-1].kernel
    kernel.assign(kernel * 0.5)
    model.save(copy / "best.keras")
    return copy


def test_predict_serves_the_final_weights_of_the_manifests_test_accuracy_unless_asked_for_best(
        run_with_other_best, images, tmp_path):
    single, folder, pixels = images
    final_csv, best_csv = tmp_path / "final.csv", tmp_path / "best.csv"
    assert cli.main(["predict", str(run_with_other_best), str(single), str(folder), "--top", "10",
                     "--out", str(final_csv)]) == 0
    assert cli.main(["predict", str(run_with_other_best), str(single), str(folder), "--top", "10",
                     "--weights", "best", "--out", str(best_csv)]) == 0
    final, best = run_probabilities(run_with_other_best), checkpoint_probabilities(run_with_other_best / "best.keras", pixels)
    assert np.abs(final - best).max() > 1e-3  # the two checkpoints do disagree
    for out, expected in ((final_csv, final), (best_csv, best)):
        rows = read_rows(out)
        for i in range(4):
            got = {int(r["class"]): float(r["probability"]) for r in rows[10 * i: 10 * i + 10]}
            assert [got[c] for c in range(10)] == pytest.approx(expected[i].tolist(), abs=2e-6)


def test_a_run_without_final_weights_is_exit_2_naming_the_file_and_the_best_option(run_dir, images, tmp_path, capsys):
    for name in ("manifest.json", "best.keras"):
        shutil.copy(run_dir / name, tmp_path / name)
    assert cli.main(["predict", str(tmp_path), str(images[0])]) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / 'final.weights.h5'}: missing" in error and "--weights best" in error
    assert cli.main(["predict", str(tmp_path), str(images[0]), "--weights", "best"]) == 0
