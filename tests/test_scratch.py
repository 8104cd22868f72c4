"""The NumPy LeNet-5 equals TensorFlow: layer and network gradients, finite differences, weight exchange."""

import numpy as np
import pytest

from lenet_keras.scratch import layers as L
from lenet_keras.scratch.network import PARAMETERS, SGD, ScratchLeNet5

tf = pytest.importorskip("tensorflow")


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _check_layer(layer, x, tf_forward, params=()):
    """Forward and backward of `layer` against tf.GradientTape on float64; returns the largest relative error."""
    rng = np.random.default_rng(1)
    y = layer.forward(x)
    dy = rng.normal(size=y.shape)
    dx = layer.backward(dy)
    tx = tf.constant(x)
    tparams = [tf.constant(layer.params[k]) for k in params]
    with tf.GradientTape() as tape:
        tape.watch([tx, *tparams])
        ty = tf_forward(tx, *tparams)
        objective = tf.reduce_sum(ty * dy)
    grads = tape.gradient(objective, [tx, *tparams])
    errors = [_rel(y, ty), _rel(dx, grads[0])] + [_rel(layer.grads[k], g) for k, g in zip(params, grads[1:])]
    assert max(errors) < 1e-6, errors
    return max(errors)


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("stride,padding", [(1, "same"), (1, "valid"), (2, "same"), (3, "valid")])
def test_conv2d_matches_tensorflow(stride, padding):
    x = RNG.normal(size=(3, 11, 10, 2))
    conv = L.Conv2D(RNG.normal(size=(5, 5, 2, 4)), RNG.normal(size=4), stride=stride, padding=padding)
    _check_layer(conv, x, lambda a, k, b: tf.nn.conv2d(a, k, stride, padding.upper()) + b, ("kernel", "bias"))


def test_pooling_dense_and_activations_match_tensorflow():
    x = RNG.normal(size=(2, 10, 9, 3))  # 9: a column dropped by 'valid' pooling
    _check_layer(L.AveragePooling2D(2), x, lambda a: tf.nn.avg_pool2d(a, 2, 2, "VALID"))
    _check_layer(L.MaxPooling2D(2), x, lambda a: tf.nn.max_pool2d(a, 2, 2, "VALID"))
    _check_layer(L.Tanh(), x, tf.tanh)
    _check_layer(L.ReLU(), x, tf.nn.relu)
    dense = L.Dense(RNG.normal(size=(6, 4)), RNG.normal(size=4))
    _check_layer(dense, RNG.normal(size=(5, 6)), lambda a, k, b: a @ k + b, ("kernel", "bias"))
    logits, targets = RNG.normal(size=(4, 10)) * 30, np.eye(10)[[1, 2, 3, 9]]
    loss, grad = L.softmax_cross_entropy(logits, targets)
    t = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(t)
        tf_loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(targets, t))
    assert abs(loss - float(tf_loss)) < 1e-9 and _rel(grad, tape.gradient(tf_loss, t)) < 1e-9
    with pytest.raises(ValueError, match="expected 2 input channels"):
        L.Conv2D(np.zeros((5, 5, 2, 4)), np.zeros(4)).forward(np.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"expected images of shape \(N, H, W, C\)"):
        L.AveragePooling2D(2).forward(np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"expected input \(N, 6\)"):
        dense.forward(np.zeros((2, 7)))


@pytest.fixture(scope="module")
def keras_pair():
    """A Keras LeNet5 built in float64 and the NumPy network holding its weights."""
    import keras

    from lenet_keras.models import LeNet5

    keras.mixed_precision.set_global_policy("float64")
    try:
        keras.utils.set_random_seed(3)
        model = LeNet5()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, ScratchLeNet5(dtype=np.float64).from_keras(model)


def test_whole_network_gradients_equal_tensorflow_and_finite_differences(keras_pair):
    import keras

    model, net = keras_pair
    assert net.count_params() == PARAMETERS == model.count_params()
    x = RNG.uniform(size=(8, 28, 28, 1))
    y = np.eye(10)[RNG.integers(0, 10, 8)]
    loss, _ = net.loss_and_gradients(x, y)
    with tf.GradientTape() as tape:
        tf_loss = keras.losses.CategoricalCrossentropy(dtype="float64")(y, model(x))
    tf_grads = tape.gradient(tf_loss, model.trainable_weights)
    mine = [layer.grads[k] for layer in net.trainable for k in ("kernel", "bias")]
    errors = [_rel(a, b) for a, b in zip(mine, tf_grads)]
    assert abs(loss - float(tf_loss)) < 1e-6 * abs(loss) and max(errors) < 1e-6, errors
    print(f"largest relative gradient difference vs TensorFlow: {max(errors):.2e}")
    # central finite differences on sampled coordinates of every parameter
    for layer in net.trainable:
        for key, param in layer.params.items():
            for index in [tuple(RNG.integers(0, s) for s in param.shape) for _ in range(3)]:
                analytic, saved, h = layer.grads[key][index], param[index], 1e-5
                param[index] = saved + h
                up = L.softmax_cross_entropy(net.logits(x), y)[0]
                param[index] = saved - h
                down = L.softmax_cross_entropy(net.logits(x), y)[0]
                param[index] = saved
                assert abs((up - down) / (2 * h) - analytic) <= 1e-6 + 1e-4 * abs(analytic), (layer.name, key, index)


def test_weights_copied_both_ways_give_the_same_predictions(mnist_dir):
    from lenet_keras import data
    from lenet_keras.config import DataConfig
    from lenet_keras.models import LeNet5

    test = data.load_mnist(DataConfig(test_subset=1000, train_subset=100), [mnist_dir])
    images = test.test_images.astype(np.float32) / 255.0
    model = LeNet5()
    net = ScratchLeNet5(seed=5).from_keras(model)
    assert np.max(np.abs(net.predict(images) - model.predict(images, verbose=0))) < 1e-5
    other = ScratchLeNet5(seed=9)
    other.to_keras(model)
    assert np.max(np.abs(other.predict(images) - model.predict(images, verbose=0))) < 1e-5
    with pytest.raises(ValueError, match="weight shapes"):
        ScratchLeNet5(input_shape=(32, 32, 1)).from_keras(model)


def test_sgd_follows_keras_momentum_and_exponential_decay():
    import keras

    net = ScratchLeNet5(dtype=np.float64)
    dense = net.trainable[-1]
    start = dense.params["bias"].copy()
    grads = [RNG.normal(size=start.shape) for _ in range(3)]
    optimizer = SGD(0.1, momentum=0.9, decay_steps=2, decay_rate=0.5)
    variable = keras.Variable(start, dtype="float64")
    reference = keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5), momentum=0.9)
    for g in grads:
        for layer in net.trainable:
            layer.grads = {k: np.zeros_like(v) for k, v in layer.params.items()}
        dense.grads["bias"] = g
        optimizer.apply(net)
        reference.apply_gradients([(tf.constant(g), variable)])
    np.testing.assert_allclose(dense.params["bias"], variable.numpy(), rtol=1e-6, atol=1e-7)  # Keras: lr in float32


def test_short_training_on_real_mnist_lowers_the_loss_and_writes_a_run(mnist_dir, tmp_path):
    import csv
    import json

    from lenet_keras import config, report
    from lenet_keras.errors import ConfigError
    from lenet_keras.scratch import train

    from .conftest import REPO

    experiment = config.load(REPO / "experiments/mnist_lenet5.toml",
                             ["train.epochs=3", "data.train_subset=2000", "data.test_subset=300", "train.batch_size=64"])
    run_dir = train.run(experiment, tmp_path, data_dir=mnist_dir, verbose=False)
    assert run_dir.name == "numpy-001"
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert list(rows[0]) == list(train.COLUMNS) and len(rows) == 3
    losses = [float(r["loss"]) for r in rows]
    assert losses[2] < losses[1] < losses[0]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["model"]["parameters"] == PARAMETERS
    assert manifest["test"]["accuracy"] > 0.5
    epochs = sum(float(r["epoch_seconds"]) for r in rows)
    assert 0 < manifest["validation_seconds"] < manifest["training_seconds"]  # timed apart, validation is a pass
    assert manifest["training_seconds"] + manifest["validation_seconds"] == pytest.approx(epochs, abs=2e-3)
    index = report.build("mnist_lenet5", runs_dir=tmp_path, reports_dir=tmp_path / "reports")
    assert "numpy-001" in index.read_text()
    with pytest.raises(ConfigError, match="model.name = 'lenet5_relu'"):
        train.run(config.load(REPO / "experiments/mnist_lenet5_fast.toml"), tmp_path, data_dir=mnist_dir)


def test_nan_loss_is_training_diverged_exit_2_and_manifest_failed(mnist_dir, tmp_path, capsys):
    import json

    from lenet_keras import cli, config
    from lenet_keras.errors import TrainingDivergedError
    from lenet_keras.scratch import train

    from .conftest import REPO

    tiny = ["train.epochs=1", "data.train_subset=300", "data.test_subset=100", "train.batch_size=32",
            "optimizer.learning_rate=1e38"]  # overflows within a few batches (1e30 stays finite: loss ~1e31)
    experiment = config.load(REPO / "experiments/mnist_lenet5.toml", tiny)
    with np.errstate(all="ignore"), pytest.raises(TrainingDivergedError, match=r"loss became (nan|inf) in epoch 1, batch [2-9] .*numpy-001"):
        train.run(experiment, tmp_path / "api", data_dir=mnist_dir, verbose=False)
    manifest = json.loads((tmp_path / "api" / "mnist_lenet5" / "numpy-001" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "TrainingDivergedError" in manifest["error"]

    with np.errstate(all="ignore"):
        code = cli.main(["scratch", str(REPO / "experiments/mnist_lenet5.toml"), *tiny, "--data-dir", str(mnist_dir),
                         "--runs-dir", str(tmp_path / "cli")])
    assert code == 2
    assert "error: training loss became" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "cli" / "mnist_lenet5" / "numpy-001" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
