"""The NumPy 1998 LeNet-5 (`lenet_keras.scratch.lenet1998`) equals the Keras one: penalties, the MAP
criterion's gradients, the Gauss-Newton second derivatives and one SDLM update, weights copied from Keras."""

from __future__ import annotations

import numpy as np
import pytest

from lenet_keras.scratch.lenet1998 import PARAMETERS, ScratchLeNet5_1998, StochasticDiagonalLM

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from lenet_keras import lenet1998, optim  # noqa: E402  (after the skip: both import TensorFlow)

J, ETA, MU = 1.0, 5e-4, 0.02


@pytest.fixture(scope="module")
def pair():
    """A Keras LeNet5_1998 with weights scaled past the squashing's linear range and F6 near one
    code (so f' and the posterior matter), its NumPy copy in float64, 8 images and their labels."""
    keras.utils.set_random_seed(3)
    model = lenet1998.LeNet5_1998(rubbish_penalty=J)
    for variable in model.trainable_variables:
        if not variable.path.endswith("F6/kernel"):
            variable.assign(variable * 8.0)
    code = lenet1998.digit_codes()[3]  # F6 near digit 3's code: p_3 between 0 and 1, so its terms count
    model.get_layer("F6").bias.assign(np.arctanh(0.9 * code / lenet1998.SQUASH_AMPLITUDE) / lenet1998.SQUASH_SLOPE)
    rng = np.random.default_rng(4)
    images = rng.random((8, 28, 28, 1)).astype(np.float32) ** 3
    labels = rng.integers(0, 10, 8)
    return model, ScratchLeNet5_1998(J, dtype=np.float64).from_keras(model), images, labels


def _keras_arrays(model):
    """The Keras weights as the NumPy layers hold them (C3 spread onto Table I)."""
    out = []
    for name in ("C1", "S2", "C3", "S4", "C5", "F6"):
        layer = model.get_layer(name)
        kernel = layer.full_kernel(layer.kernel) if name == "C3" else layer.kernel
        out.append({"kernel": np.asarray(kernel), "bias": np.asarray(layer.bias)})
    return out


def test_parameters_initialization_and_weight_exchange(pair):
    model, _, images, _ = pair
    network = ScratchLeNet5_1998(J, seed=0)
    assert network.count_params() == PARAMETERS == lenet1998.LeNet5_1998.PARAMETERS
    c3 = network.layers[4].params["kernel"]
    assert np.all(c3[network.c3_mask == 0] == 0)
    assert np.abs(c3[:, :, :, 15]).max() <= 2.4 / 150 and np.abs(c3[:, :, :, 0]).max() > 2.4 / 150  # per-map fan-in
    fresh = lenet1998.LeNet5_1998(rubbish_penalty=J)
    network.to_keras(fresh)
    np.testing.assert_allclose(network.predict(images), fresh.predict(images, verbose=0), atol=1e-5)


def test_penalties_and_gradients_equal_tensorflows(pair):
    model, network, images, labels = pair
    one_hot = np.eye(10, dtype=np.float32)[labels]
    with tf.GradientTape() as tape:
        penalties = model.penalties(images)
        loss = tf.reduce_mean(lenet1998.map_criterion(one_hot, penalties, J))
    expected = tape.gradient(loss, model.trainable_variables)
    ours_loss, ours_penalties = network.loss_and_gradients(images.astype(np.float64), labels)
    np.testing.assert_allclose(ours_penalties, penalties.numpy(), rtol=1e-4)
    assert ours_loss == pytest.approx(float(loss), rel=1e-5)
    ours = [layer.grads[key] for layer in network.trainable for key in ("kernel", "bias")]
    for variable, theirs, mine in zip(model.trainable_variables, expected, ours):
        if variable.path.endswith("C3/kernel"):
            theirs = model.get_layer("C3").full_kernel(theirs)
        scale = np.abs(theirs.numpy()).max()
        np.testing.assert_allclose(mine, theirs.numpy(), atol=2e-4 * scale, err_msg=variable.path)


def test_second_derivatives_and_one_update_equal_the_keras_optimizers(pair):
    model, network, images, labels = pair
    expected_h = lenet1998.gauss_newton_diagonal(model, images, J)
    ours_h = network.gauss_newton_diagonal(images.astype(np.float64))
    posterior = lenet1998.map_posterior(model.penalties(images), J).numpy()
    assert 0.1 < posterior[:, 3].min() and posterior[:, 3].max() < 0.9, posterior[:, 3]
    flat = [h[key] for h in ours_h for key in ("kernel", "bias")]
    for variable, theirs, mine in zip(model.trainable_variables, expected_h, flat):
        if variable.path.endswith("C3/kernel"):
            theirs = model.get_layer("C3").full_kernel(theirs)
        assert np.abs(theirs.numpy()).max() > 1e-4, variable.path  # not a comparison of zeros
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-3, atol=1e-3 * np.abs(theirs.numpy()).max(),
                                   err_msg=variable.path)

    sdlm = optim.StochasticDiagonalLM(learning_rate=ETA, damping=MU)
    sdlm.build(model.trainable_variables)
    sdlm.set_curvature(expected_h)
    one_hot = np.eye(10, dtype=np.float32)[labels[:1]]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(lenet1998.map_criterion(one_hot, model.penalties(images[:1]), J))
    sdlm.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    ours = StochasticDiagonalLM(MU)
    ours.curvature = ours_h
    network.loss_and_gradients(images[:1].astype(np.float64), labels[:1])
    before = [layer.params["kernel"].copy() for layer in network.trainable]
    ours.apply(network, ETA)
    for mine, theirs, old in zip([layer.params for layer in network.trainable], _keras_arrays(model), before):
        assert np.abs(mine["kernel"] - old).max() > 0  # the step moved the weights
        for key in ("kernel", "bias"):
            np.testing.assert_allclose(mine[key], theirs[key], atol=2e-5 * max(np.abs(theirs[key]).max(), 1))


def test_the_numpy_engine_trains_the_papers_recipe_into_a_run_directory(tmp_path, mnist_dir):
    import json

    from lenet_keras import config
    from lenet_keras.scratch import train

    experiment = config.load("mnist_lenet5_1998", ["data.train_subset=1200", "data.validation_split=0.25",
                                                   "train.epochs=3", "schedule.epoch_boundaries=[1, 2, 8, 12]",
                                                   "schedule.learning_rates=[5e-5, 2e-5, 1e-5, 5e-6, 1e-6]"])
    run_dir = train.run(experiment, runs_dir=tmp_path, data_dir=mnist_dir, verbose=False)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["model"]["parameters"] == PARAMETERS
    history = (run_dir / "history.csv").read_text().splitlines()
    rates = [float(line.split(",")[3]) for line in history[1:]]
    assert rates == [5e-5, 2e-5, 1e-5]  # the schedule's eta per pass
    val_accuracy = [float(line.split(",")[5]) for line in history[1:]]
    assert val_accuracy[-1] > 0.5, history  # 900 single-image updates a pass learn the digits


@pytest.mark.parametrize("override,message", [
    ("train.batch_size=2", "train.batch_size = 2 (only 1"),
    ("optimizer.name=sgd", "optimizer.name = 'sgd' (only 'sdlm')"),
    ("augment.distorted_copies=2", "[augment]"),
])
def test_the_numpy_engine_refuses_what_it_does_not_implement(override, message):
    from lenet_keras import config
    from lenet_keras.errors import ConfigError
    from lenet_keras.scratch import train

    with pytest.raises(ConfigError, match="NumPy engine does not support") as refused:
        train.check_supported(config.load("mnist_lenet5_1998", [override]))
    assert message in str(refused.value)
