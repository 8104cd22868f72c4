"""A run's result does not depend on what ran before it in the same process.

In-process sweeps, `predict`, `rerun` and these tests rebuild models in long-lived processes. The
state that leaked: TensorFlow's global seed, set by one run's `keras.utils.set_random_seed`,
changed the seed pair of Keras's `tf.data` shuffle when the next run decoded an image folder, so it
trained on another subset in another order (`dataformats.without_global_seed` fixes it).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lenet_keras import config, dataformats, predict, train

from .conftest import REPO

CIFAR_FAST_TINY = ["data.dataset=image_folder", "data.path=cifar10-jpeg", "data.train_subset=256",
                   "data.test_subset=64", "train.epochs=1", "train.batch_size=64", "train.histogram_freq=0",
                   "train.precision=float32"]
"""cifar_fast on 256 JPEG-copy images, float32 on every CPU, so the test stays cheap."""


@pytest.fixture()
def tiny_folder(tmp_path):
    """An image folder of 2 classes x 20 distinct 2x2 RGB PNGs (pixel value = 20 * class + index)."""
    from PIL import Image

    for label, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        for index in range(20):
            Image.new("RGB", (2, 2), (20 * label + index,) * 3).save(tmp_path / name / f"{index:02d}.png")
    return tmp_path


def test_an_image_folders_order_does_not_depend_on_the_global_seed_and_keeps_the_callers(tiny_folder):
    import tensorflow as tf

    orders = []
    for seed in (0, 123, None):
        tf.random.set_seed(seed)
        images, labels, total = dataformats.read_image_split(tiny_folder, ("a", "b"), 0)
        assert total == 40 and labels.tolist() == (images[:, 0, 0, 0] // 20).tolist()
        orders.append(images[:, 0, 0, 0].tolist())
    assert orders[0] == orders[1] == orders[2] and orders[0] != sorted(orders[0])  # shuffled, the same way
    tf.random.set_seed(7)
    expected = tf.random.uniform([4]).numpy()  # op seeds after set_seed(7): the 1st draw of its sequence
    tf.random.set_seed(7)
    dataformats.read_image_split(tiny_folder, ("a", "b"), 0)
    np.testing.assert_array_equal(tf.random.uniform([4]).numpy(), expected)


def fingerprint(run_dir):
    """(final weights digest, history without timings, sha of the test probabilities) of a run."""
    import hashlib

    manifest = json.loads((run_dir / "manifest.json").read_text())
    rows = [line.split(",") for line in (run_dir / "history.csv").read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if "seconds" not in name]
    probabilities = np.load(run_dir / "predictions.npz")["probabilities"]
    return (manifest["final_weights"]["values_sha256"], [[row[i] for i in keep] for row in rows],
            hashlib.sha256(probabilities.tobytes()).hexdigest())


def test_a_run_after_another_in_one_process_equals_it_in_a_fresh_process_bit_for_bit(tmp_path, cifar_root, mnist_dir):
    first = config.load(REPO / "experiments/mnist_lenet5.toml",
                        ["seed=3", "train.epochs=1", "data.train_subset=300", "data.test_subset=50",
                         "train.histogram_freq=0"])
    train.run(first, tmp_path / "in_process", data_dir=mnist_dir, verbose=0)
    second = train.run(config.load(REPO / "experiments/cifar_fast.toml", CIFAR_FAST_TINY), tmp_path / "in_process",
                       data_dir=cifar_root, verbose=0)
    done = subprocess.run([sys.executable, "-m", "lenet_keras", "train", "cifar_fast", *CIFAR_FAST_TINY,
                           "--runs-dir", str(tmp_path / "fresh"), "--data-dir", str(cifar_root)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    fresh = tmp_path / "fresh" / "cifar_fast" / "run-001"
    assert fingerprint(second) == fingerprint(fresh)

    # a model rebuilt in this process that has trained serves the run's own test probabilities
    from lenet_keras import data, pipeline

    model, _ = predict.load_run(second)
    test_images = data.load(config.load(REPO / "experiments/cifar_fast.toml", CIFAR_FAST_TINY).data, cifar_root).test_images
    mean, std = predict.scaling(json.loads((second / "manifest.json").read_text()))
    rebuilt = model.predict(pipeline.normalize(test_images, mean, std), verbose=0)
    np.testing.assert_allclose(rebuilt, np.load(second / "predictions.npz")["probabilities"], atol=1e-5)
