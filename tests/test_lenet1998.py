"""LeCun et al. 1998's LeNet-5 (`lenet_keras.lenet1998`) and its optimizer (`optim.StochasticDiagonalLM`):
the architecture against the paper, the MAP criterion against a hand-computed value, one SDLM step
against a NumPy transcription of Eqs. 21-27 on a tiny network."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from lenet_keras import augment, config, lenet1998, models, optim
from lenet_keras.errors import ConfigError

# Table I of the paper, as printed: rows are S2's maps 0-5, columns C3's maps 0-15, X = connected.
TABLE_I = (
    "X...XXX..XXXX.XX",
    "XX...XXX..XXXX.X",
    "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX",
    "..XXX..XXXX.XX.X",
    "...XXX..XXXX.XXX",
)


def table_i_columns() -> tuple[tuple[int, ...], ...]:
    """Table I read column by column: for each C3 map, the S2 maps marked X."""
    return tuple(tuple(m for m in range(6) if TABLE_I[m][column] == "X") for column in range(16))


def test_c3_connections_are_table_i_of_the_paper():
    assert tuple(tuple(sorted(maps)) for maps in lenet1998.C3_TABLE) == table_i_columns()
    assert sum(map(len, lenet1998.C3_TABLE)) == 60
    model = lenet1998.LeNet5_1998()
    c3 = model.get_layer("C3")
    connected = np.abs(c3.full_kernel(c3.kernel).numpy()).sum(axis=(0, 1)) > 0  # (6 inputs, 16 maps)
    assert connected.T.tolist() == [[m in maps for m in range(6)] for maps in table_i_columns()]


def test_parameter_counts_are_the_papers():
    model = lenet1998.LeNet5_1998()
    counts = {layer.name: layer.count_params() for layer in model.layers if layer.count_params()}
    assert counts == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164}
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == 60_000 == model.PARAMETERS
    assert model.output_shape == (None, 10)


def test_rbf_codes_are_plus_minus_one_digit_bitmaps():
    codes = lenet1998.digit_codes()
    assert codes.shape == (10, 84) and codes.dtype == np.float32
    assert set(np.unique(codes)) == {-1.0, 1.0}
    assert all(len(row) == 10 and all(len(bitmap) == 7 for bitmap in row) for row in lenet1998.DIGIT_BITMAPS)
    assert len(lenet1998.DIGIT_BITMAPS) == 12
    distances = (codes[:, None, :] != codes[None]).sum(axis=-1)  # Hamming distances between digits
    assert distances[~np.eye(10, dtype=bool)].min() >= 5  # every two codes differ in 5 pixels or more
    one = codes[1].reshape(12, 7)
    assert (one[:, 3] == 1).all()  # the 1's vertical stroke in the middle column


def test_inputs_are_centred_in_a_32x32_field_at_the_papers_levels():
    model = lenet1998.LeNet5_1998()
    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 0, 0, 0] = 1.0
    field = model.get_layer("levels")(model.get_layer("field_32x32")(image)).numpy()[0, :, :, 0]
    assert field.shape == (32, 32)
    assert field[2, 2] == pytest.approx(1.175) and field[0, 0] == pytest.approx(-0.1)
    assert np.isclose(field, -0.1).sum() == 32 * 32 - 1


def test_squashing_function_and_initialization_follow_appendix_a():
    assert float(lenet1998.ScaledTanh()(tf.constant([1.0]))[0]) == pytest.approx(1.7159 * math.tanh(2 / 3))
    assert float(lenet1998.ScaledTanh()(tf.constant([1.0]))[0]) == pytest.approx(1.0, abs=2e-4)  # f(1) = 1
    keras.utils.set_random_seed(1)
    model = lenet1998.LeNet5_1998()
    limits = {"C1": 2.4 / 25, "C5": 2.4 / 400, "F6": 2.4 / 120}  # (S2's 6 coefficients: too few to fill +-2.4 / 4)
    for name, limit in limits.items():
        kernel = np.abs(model.get_layer(name).kernel.numpy())
        assert kernel.max() <= limit and kernel.max() > 0.9 * limit
    assert np.abs(model.get_layer("S2").kernel.numpy()).max() <= 2.4 / 4
    c3 = model.get_layer("C3").kernel.numpy()  # fan-in 25 x 3, 25 x 4 or 25 x 6 by map
    assert np.abs(c3[..., :18]).max() <= 2.4 / 75 and np.abs(c3[..., 54:]).max() <= 2.4 / 150


def test_map_criterion_against_a_hand_computed_value():
    # E = y_c + log(e^-j + sum_i e^-y_i) with y = (1, 2, 3), c = 0, j = 2:
    # 1 + log(e^-2 + e^-1 + e^-2 + e^-3) = 1 + log(0.6883370760) = 0.6265233750
    labels = tf.constant([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    penalties = tf.constant([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    errors = lenet1998.map_criterion(labels, penalties, 2.0).numpy()
    assert errors[0] == pytest.approx(0.6265233750, abs=1e-6)
    assert errors[1] == pytest.approx(0.6265233750 + 1.0, abs=1e-6)  # y_c = 2 instead of 1
    posterior = lenet1998.map_posterior(penalties, 2.0).numpy()
    assert -np.log(posterior[0, 0]) == pytest.approx(errors[0], abs=1e-6)
    assert posterior.sum(axis=1) == pytest.approx([1 - math.exp(-2) / 0.6883370760] * 2)


def test_the_model_trains_on_the_criterion_and_predicts_the_smallest_penalty():
    model = lenet1998.LeNet5_1998(rubbish_penalty=3.0)
    images = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    labels = np.eye(10, dtype=np.float32)[[0, 1, 2, 3]]
    penalties = model.penalties(images)
    expected = float(tf.reduce_mean(lenet1998.map_criterion(labels, penalties, 3.0)))
    assert float(model.compute_loss(images, labels)) == pytest.approx(expected, rel=1e-6)
    probabilities = model(images).numpy()
    assert (probabilities.argmax(axis=1) == penalties.numpy().argmin(axis=1)).all()
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(4), abs=1e-6)
    assert isinstance(model, models.OwnCriterion)


def test_the_model_saves_and_loads(tmp_path):
    model = lenet1998.LeNet5_1998(rubbish_penalty=1.5)
    images = np.random.default_rng(1).random((2, 28, 28, 1), dtype=np.float32)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, lenet1998.LeNet5_1998) and loaded.rubbish_penalty == 1.5
    np.testing.assert_array_equal(loaded(images).numpy(), model(images).numpy())


# --- one SDLM step on a tiny network, against NumPy ----------------------------------------------

A, S = 1.7159, 2.0 / 3.0
TINY_TABLE = ((0,), (0, 1), (1,))
TINY_CODES = np.array([[1, -1, 1, -1], [-1, -1, 1, 1], [1, 1, -1, -1]], np.float32)


def tiny_network():
    """6x6x2 -> sparse conv 3@3x3 (TINY_TABLE) -> f -> 2x2 subsampling -> f -> 12 -> 4 units -> f -> RBF (3)."""
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((6, 6, 2)), lenet1998.MappedConv2D(3, 3, TINY_TABLE), lenet1998.ScaledTanh(),
        lenet1998.Subsampling(), lenet1998.ScaledTanh(), keras.layers.Flatten(), lenet1998.FullConnection(4),
        lenet1998.ScaledTanh(), lenet1998.EuclideanRBF(TINY_CODES), lenet1998.SmallestPenalty(),
    ])


def f(a):
    return A * np.tanh(S * a)


def df(a):
    return A * S * (1 - np.tanh(S * a) ** 2)


def numpy_pattern(weights, x, label, j):
    """One pattern through the tiny network, transcribed loop by loop from the paper: returns the
    gradient (Eqs. 21-23, back-propagation) and the Gauss-Newton diagonal (Eqs. 25-27) of E for
    each parameter, as dicts of arrays shaped like `weights`'."""
    W, b1, coef, b2, K, b3 = (weights[k] for k in ("W", "b1", "coef", "b2", "K", "b3"))
    a1 = np.zeros((4, 4, 3))
    for r in range(4):
        for c in range(4):
            for o, maps in enumerate(TINY_TABLE):
                a1[r, c, o] = b1[o] + sum(W[u, v, m, o] * x[r + u, c + v, m] for m in maps for u in range(3)
                                          for v in range(3))
    x1 = f(a1)
    sums = np.array([[[x1[2 * r:2 * r + 2, 2 * c:2 * c + 2, o].sum() for o in range(3)] for c in range(2)]
                     for r in range(2)])
    squared_sums = np.array([[[(x1[2 * r:2 * r + 2, 2 * c:2 * c + 2, o] ** 2).sum() for o in range(3)]
                              for c in range(2)] for r in range(2)])
    a2 = coef * sums + b2
    z = f(a2).reshape(-1)
    a3 = z @ K + b3
    x3 = f(a3)
    y = ((x3[None] - TINY_CODES) ** 2).sum(axis=1)
    weights_e = np.exp(-y)
    p = weights_e / (np.exp(-j) + weights_e.sum())
    # first derivatives
    dy = -p.copy()
    dy[label] += 1
    dx3 = (dy[:, None] * 2 * (x3[None] - TINY_CODES)).sum(axis=0)
    da3 = df(a3) * dx3
    dz = K @ da3
    da2 = df(a2) * dz.reshape(2, 2, 3)
    dx1 = np.zeros_like(x1)
    for r in range(4):
        for c in range(4):
            dx1[r, c] = coef * da2[r // 2, c // 2]
    da1 = df(a1) * dx1
    grad = {"K": np.outer(z, da3), "b3": da3, "coef": (da2 * sums).sum(axis=(0, 1)), "b2": da2.sum(axis=(0, 1)),
            "b1": da1.sum(axis=(0, 1)), "W": np.zeros_like(W)}
    # second derivatives, Eqs. 25-27
    d2y = p * (1 - p)
    d2x3 = 2 * (1 - p.sum()) + (d2y[:, None] * 4 * (x3[None] - TINY_CODES) ** 2).sum(axis=0)
    d2a3 = df(a3) ** 2 * d2x3
    d2z = (K ** 2) @ d2a3
    d2a2 = df(a2) ** 2 * d2z.reshape(2, 2, 3)
    d2x1 = np.zeros_like(x1)
    for r in range(4):
        for c in range(4):
            d2x1[r, c] = coef ** 2 * d2a2[r // 2, c // 2]
    d2a1 = df(a1) ** 2 * d2x1
    hess = {"K": np.outer(z ** 2, d2a3), "b3": d2a3, "coef": (d2a2 * squared_sums).sum(axis=(0, 1)),
            "b2": d2a2.sum(axis=(0, 1)), "b1": d2a1.sum(axis=(0, 1)), "W": np.zeros_like(W)}
    for o, maps in enumerate(TINY_TABLE):
        for m in maps:
            for u in range(3):
                for v in range(3):
                    patch = x[u:u + 4, v:v + 4, m]
                    grad["W"][u, v, m, o] = (da1[:, :, o] * patch).sum()
                    hess["W"][u, v, m, o] = (d2a1[:, :, o] * patch ** 2).sum()
    return grad, hess


def test_one_sdlm_step_matches_a_numpy_transcription_of_the_paper():
    model = tiny_network()
    conv = model.layers[0]
    connections = [(m, o) for o, maps in enumerate(TINY_TABLE) for m in maps]
    full = np.zeros((3, 3, 2, 3))
    for c, (m, o) in enumerate(connections):
        full[:, :, m, o] = conv.kernel.numpy()[:, :, c]
    weights = {"W": full, "b1": conv.bias.numpy(), "coef": model.layers[2].kernel.numpy(),
               "b2": model.layers[2].bias.numpy(), "K": model.layers[5].kernel.numpy(),
               "b3": model.layers[5].bias.numpy()}
    weights = {k: v.astype(np.float64) * (4.0 if k != "W" else 6.0) for k, v in weights.items()}  # past f's linear range
    for variable, key in zip(model.trainable_variables, ("W", "b1", "coef", "b2", "K", "b3")):
        value = weights[key]
        if key == "W":
            value = np.stack([value[:, :, m, o] for m, o in connections], axis=-1)
        variable.assign(value.astype(np.float32))
    rng = np.random.default_rng(5)
    images = rng.random((3, 6, 6, 2)).astype(np.float32) * 1.275 - 0.1
    labels, j, eta, mu = np.array([2, 0, 1]), 1.5, 0.05, 0.02

    expected_h = {k: np.zeros_like(v) for k, v in weights.items()}
    for image, label in zip(images.astype(np.float64), labels):  # h_kk averaged over the patterns
        _, hess = numpy_pattern(weights, image, label, j)
        for k in hess:
            expected_h[k] += hess[k] / len(images)
    grad, _ = numpy_pattern(weights, images[0].astype(np.float64), labels[0], j)  # then one step on pattern 0
    expected = {k: weights[k] - eta / (mu + expected_h[k]) * grad[k] for k in weights}

    h = lenet1998.gauss_newton_diagonal(model, images, j)
    sdlm = optim.StochasticDiagonalLM(learning_rate=eta, damping=mu)
    sdlm.build(model.trainable_variables)
    sdlm.set_curvature(h)
    one_hot = np.eye(3, dtype=np.float32)[labels]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(lenet1998.map_criterion(one_hot[:1], model.layers[-2](
            keras.Sequential(model.layers[:-2])(images[:1])), j))
    sdlm.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    for variable, key in zip(model.trainable_variables, ("W", "b1", "coef", "b2", "K", "b3")):
        value = expected[key]
        if key == "W":
            value = np.stack([value[:, :, m, o] for m, o in connections], axis=-1)
        assert expected_h[key].max() > 0.01, key  # the curvature matters in this step
        np.testing.assert_allclose(variable.numpy(), value, rtol=2e-4, atol=1e-6, err_msg=key)


# --- configuration -----------------------------------------------------------------------------

def test_the_shipped_experiments_are_valid_and_pin_the_papers_schedule():
    for name in ("mnist_lenet5_1998", "mnist_lenet5_1998_distorted"):
        experiment = config.load(name)
        optim.check_names(experiment)
        models.check_name(experiment.model)
        assert experiment.schedule.epoch_boundaries == (2, 5, 8, 12) and experiment.train.epochs == 20
        paper = np.array([5e-4, 2e-4, 1e-4, 5e-5, 1e-5])  # eta for passes 1-2, 3-5, 6-8, 9-12, 13-20
        np.testing.assert_allclose(experiment.schedule.learning_rates, np.minimum(paper, 5e-5))  # capped (header)
        assert experiment.train.batch_size == 1 and experiment.data.validation_split == 0
        assert experiment.optimizer.damping == 0.02 and experiment.optimizer.curvature_patterns == 500
    distorted = config.load("mnist_lenet5_1998_distorted").augment
    assert distorted.distorted_copies == 9  # 540,000 copies of 60,000 images


@pytest.mark.parametrize("overrides, message", [
    (["optimizer.name=sdlm"], "needs model.name = 'lenet5_1998'"),
    (["model.rubbish_penalty=1.0"], "does not take it"),
    (["model.name=lenet5_1998", "optimizer.name=sdlm", "schedule.name=piecewise_constant",
      "schedule.epoch_boundaries=[2]", "schedule.learning_rates=[0.01]"], "one more learning rate"),
    (["model.name=lenet5_1998", "optimizer.name=sdlm", "schedule.name=piecewise_constant",
      "schedule.epoch_boundaries=[2]", "schedule.learning_rates=[0.02, 0.01]"], "differs from"),
])
def test_bad_combinations_are_refused(overrides, message):
    experiment = config.load("mnist_lenet5", overrides)
    with pytest.raises(ConfigError, match=message):
        models.check_name(experiment.model)
        optim.check_names(experiment)


def test_distorted_copies_are_fixed_per_image_and_copy():
    settings = config.AugmentConfig(distorted_copies=3, translate_pixels=2, scale=0.1, squeeze=0.1, shear=0.3)
    table = augment.distortion_table(7, 5, 3)
    assert table.shape == (3, 5, 5)
    np.testing.assert_array_equal(table.numpy(), augment.distortion_table(7, 5, 3).numpy())
    image = np.zeros((1, 28, 28, 1), np.uint8)
    image[0, 10:18, 12:16] = 255
    images = np.repeat(image, 64, axis=0)
    index = np.full(64, 2, np.int64)
    out = augment.distort(images, index, table, settings, augment.key(7, augment.DISTORTED_COPY, 0, 0)).numpy()
    distinct = {o.tobytes() for o in out}
    assert image[0].tobytes() in distinct and len(distinct) == 4  # the image itself and its 3 copies
    identity = augment.distortion_transforms(tf.zeros((1, 5)), settings, 28, 28).numpy()
    np.testing.assert_allclose(identity, [[1, 0, 0, 0, 1, 0, 0, 0]], atol=1e-6)
    shift = augment.distortion_transforms(tf.constant([[1.0, 0, 0, 0, 0]]), settings, 28, 28).numpy()
    np.testing.assert_allclose(shift, [[1, 0, -2, 0, 1, 0, 0, 0]], atol=1e-5)  # 2 pixels right: sample 2 left


# --- the runner: XLA steps, one update per pattern, kill and resume ------------------------------

DISTORTED = "mnist_lenet5_1998_distorted"
TINY_1998 = ["data.train_subset=600", "data.test_subset=100", "train.epochs=2", "schedule.epoch_boundaries=[1]",
             "schedule.learning_rates=[5e-5, 2e-5]", "optimizer.curvature_patterns=100",
             "train.steps_per_execution=100"]


def test_the_distorted_recipe_killed_mid_pass_resumes_to_the_same_weights(tmp_path, mnist_dir):
    """A fresh-process run and one SIGKILLed in its second pass (after 200 of 600 single-pattern
    updates, XLA-compiled) then resumed end on the same weights, history and test metrics: the
    curvature is re-estimated from a draw keyed by (seed, epoch), the distorted copies by the seed."""
    from .test_resume import KILLER, _history_without_timing, _weights
    from .conftest import REPO

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KILL_EPOCH": "1", "KILL_BATCH": "199"}
    first = subprocess.run(
        [sys.executable, "-m", "lenet_keras", "train", DISTORTED, *TINY_1998, "--runs-dir", str(tmp_path),
         "--run-id", "first", "--data-dir", str(mnist_dir)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    killed = subprocess.run([sys.executable, "-c", KILLER, DISTORTED, str(tmp_path), str(mnist_dir), *TINY_1998],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir, reference = tmp_path / DISTORTED / "killed", tmp_path / DISTORTED / "first"
    resumed = subprocess.run([sys.executable, "-m", "lenet_keras", "train", "--resume", str(run_dir),
                              "--data-dir", str(mnist_dir)], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _history_without_timing(run_dir) == _history_without_timing(reference)
    a, b = _weights(reference), _weights(run_dir)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["test"] == json.loads((reference / "manifest.json").read_text())["test"]
    assert manifest["test"]["accuracy"] > 0.3  # it learned (chance: 0.1) from 2 x 600 single-pattern updates


def test_the_papers_learning_rates_change_at_the_first_step_of_passes_3_6_9_and_13():
    experiment = config.load("mnist_lenet5_1998", ["optimizer.learning_rate=5e-4",  # the paper's own rates
                                                   "schedule.learning_rates=[5e-4, 2e-4, 1e-4, 5e-5, 1e-5]"])
    optim.check_names(experiment)
    schedule = optim.SCHEDULES["piecewise_constant"](experiment.optimizer, experiment.schedule, 200, 10)
    first_steps = {pass_: (pass_ - 1) * 10 for pass_ in (1, 2, 3, 5, 6, 8, 9, 12, 13, 20)}
    rates = {pass_: float(schedule(step)) for pass_, step in first_steps.items()}
    eta = experiment.optimizer.learning_rate
    assert [rates[p] / eta for p in sorted(rates)] == pytest.approx([1, 1, 0.4, 0.4, 0.2, 0.2, 0.1, 0.1, 0.02, 0.02])
    assert float(schedule(29)) == pytest.approx(0.4 * eta) and float(schedule(20)) == pytest.approx(0.4 * eta)


def test_the_report_marks_the_papers_published_errors():
    from lenet_keras import report

    assert report.published_errors("mnist_lenet5_1998") == [("published: 0.95% (lecun-1998)", 20, pytest.approx(0.0095))]
    assert report.published_errors("mnist_lenet5_1998_distorted")[0][1:] == (20, pytest.approx(0.008))
    assert report.published_errors("mnist_lenet5_classic") == []  # its claims are at an epoch, not final


def test_without_reshuffling_every_epoch_presents_the_images_in_the_same_order(mnist_dir):
    from lenet_keras import data, pipeline

    dataset = data.load(config.load("mnist_lenet5", ["data.train_subset=50", "data.validation_split=0"]).data,
                        mnist_dir)

    def labels(reshuffle):
        train, _, _ = pipeline.pipelines(dataset, 10, seed=3, epochs=2, reshuffle=reshuffle)
        order = np.concatenate([np.argmax(y, axis=1) for _, y in train])
        return order[:50], order[50:]

    first, second = labels(False)
    np.testing.assert_array_equal(first, second)
    first, second = labels(True)
    assert (first != second).any() and sorted(first) == sorted(second)


def test_images_per_second_are_measured_when_keras_calls_back_once_per_1000_steps():
    from lenet_keras import callbacks

    record = {}
    throughput = callbacks.Throughput(batch_size=1, steps_per_epoch=60_000, epochs=20, record=record, quiet=True)
    throughput.on_train_batch_end(999)  # the first call: the loop traced, the clock starts
    assert record == {}
    throughput.on_train_batch_end(1999)
    assert record["images_per_second_first_steps"] > 0 and "projected_training_seconds" in record


def test_label_smoothing_is_refused_for_the_papers_criterion(mnist_dir):
    from lenet_keras import data, train

    experiment = config.load("mnist_lenet5_1998", ["train.label_smoothing=0.1", "data.train_subset=20",
                                                   "data.test_subset=10"])
    with pytest.raises(ConfigError, match="train.label_smoothing = 0.1: model 'lenet5_1998'"):
        train.compiled_model(experiment, data.load(experiment.data, mnist_dir))
