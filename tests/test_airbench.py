"""airbench94's ingredients (lenet_keras.airbench, optim.AirbenchSGD/Triangular, models.CifarFast,
alternating flips and reflect translation), each against its closed form or airbench's code,
on real CIFAR images of the JPEG copy; then a 1-epoch run of experiments/cifar_fast.toml."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from lenet_keras import airbench, augment, callbacks, config, data, fast_layers, models, optim, pipeline, report
from lenet_keras.config import AugmentConfig

from .conftest import REPO

SMALL = ["data.dataset=image_folder", "data.path=cifar10-jpeg", "data.train_subset=1024", "data.test_subset=256"]
MEAN, STD = np.float32([0.4914, 0.4822, 0.4465]), np.float32([0.2470, 0.2435, 0.2616])


@pytest.fixture(scope="module")
def cifar(cifar_root):
    """The first 1,024 training and 256 test images of the JPEG copy of CIFAR-10 (skips, or
    fails in CI, only when the folder is absent: `conftest.cifar_root`)."""
    experiment = config.load(REPO / "experiments/cifar_fast.toml", SMALL)
    return data.load(experiment.data, data_dir=cifar_root, download=False)


def _normalized(images):
    return (images.astype(np.float32) / 255.0 - MEAN) / STD


def test_whitening_kernel_is_the_closed_form(cifar):
    images = _normalized(cifar.train_images[:64])
    kernel = airbench.whitening_kernel(images, eps=5e-4)
    assert kernel.shape == (2, 2, 3, 24)
    # closed form, written out: every 2x2 patch by loops, second moments, eigendecomposition
    rows = [images[n, i:i + 2, j:j + 2, :].reshape(-1) for n in range(len(images)) for i in range(31) for j in range(31)]
    flat = np.asarray(rows, np.float64)
    moments = flat.T @ flat / len(flat)
    values, vectors = np.linalg.eigh(moments)
    values, vectors = values[::-1], vectors[:, ::-1]
    filtered = flat @ kernel.reshape(12, 24).astype(np.float64)  # what the 'valid' 2x2 conv computes
    np.testing.assert_allclose(filtered[:, 12:], -filtered[:, :12], atol=1e-5)
    # the outputs are decorrelated, each with second moment lambda / (lambda + eps)
    np.testing.assert_allclose(filtered[:, :12].T @ filtered[:, :12] / len(flat), np.diag(values / (values + 5e-4)),
                               atol=2e-3)
    # and each filter is the eigenvector (up to sign) scaled by 1 / sqrt(lambda + eps)
    for k in range(12):
        column = kernel.reshape(12, 24)[:, k] * np.sqrt(values[k] + 5e-4)
        assert abs(abs(column @ vectors[:, k]) - 1) < 1e-3


def test_whitening_conv_in_the_model_is_frozen_and_set_from_data(cifar):
    model = models.CifarFast()
    images = _normalized(cifar.train_images[:32])
    model.initialize_from_data(images)
    whiten = model.get_layer("whiten")
    np.testing.assert_array_equal(whiten.kernel.numpy(), airbench.whitening_kernel(images))
    trainable = {id(w) for w in model.trainable_weights}
    assert id(whiten.kernel) not in trainable and id(whiten.bias) in trainable
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 1_971_352  # airbench94's count


def test_dirac_init_passes_the_input_channels_through():
    kernel = airbench.dirac_initializer()((3, 3, 24, 64)).numpy()
    identity = np.zeros((3, 3, 24, 24), np.float32)
    identity[1, 1, np.arange(24), np.arange(24)] = 1
    np.testing.assert_array_equal(kernel[..., :24], identity)
    rest = kernel[..., 24:]
    bound = 1 / np.sqrt(3 * 3 * 24)
    assert np.abs(rest).max() <= bound and np.abs(rest).max() > 0.9 * bound and abs(rest.mean()) < 0.01
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 24)).astype(np.float32)
    y = tf.nn.conv2d(x, kernel, 1, "SAME").numpy()
    np.testing.assert_allclose(y[..., :24], x, atol=1e-6)  # the first 24 filters are the identity


def test_lookahead_updates_every_fifth_step_and_ends_on_the_average():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.optimizer.build(model.trainable_variables)
    callback = callbacks.Lookahead(total_steps=20)
    callback.set_model(model)
    kernel = model.weights[0]
    kernel.assign(np.zeros((2, 1), np.float32))
    callback.on_train_begin()
    average = np.zeros((2, 1))
    for step in range(1, 21):
        weights = kernel.numpy() + 1.0  # a training step moves the weights by 1
        kernel.assign(weights)
        model.optimizer.iterations.assign(step)
        callback.on_train_batch_end(step - 1)
        if step % 5 == 0:
            decay = 0.95 ** 5 * (step / 20) ** 3
            average = average + (1 - decay) * (weights - average)
            np.testing.assert_allclose(kernel.numpy(), average, rtol=1e-6)  # weights := average
        else:
            np.testing.assert_allclose(kernel.numpy(), weights)  # untouched between updates
    kernel.assign(kernel.numpy() + 3.0)
    callback.on_train_end()
    np.testing.assert_allclose(kernel.numpy(), average, rtol=1e-6)


def test_alternating_flips_flip_every_image_the_other_way_each_epoch():
    indices = tf.range(1000, dtype=tf.int64)
    epochs = [augment.alternating_flips(7, 1000, indices, e).numpy() for e in range(4)]
    assert 400 < epochs[0].sum() < 600
    np.testing.assert_array_equal(epochs[1], ~epochs[0])
    np.testing.assert_array_equal(epochs[2], epochs[0])
    shuffled = tf.constant([5, 999, 0], tf.int64)  # keyed by the image, not by its batch or position
    np.testing.assert_array_equal(augment.alternating_flips(7, 1000, shuffled, 3).numpy(), epochs[3][[5, 999, 0]])


def test_pipeline_shows_each_image_mirrored_in_consecutive_epochs(cifar):
    config_ = AugmentConfig(horizontal_flip=True, alternating_flip=True)
    train_ds, _, _ = pipeline.pipelines(cifar, 256, 3, augment=config_, epochs=2)
    steps = pipeline.steps_per_epoch(cifar, 256)
    batches = [images.numpy() for images, _ in train_ds]
    originals = cifar.train_images.astype(np.float32) / 255.0
    which = {originals[i].tobytes(): (i, False) for i in range(len(originals))}
    which.update({originals[i][:, ::-1].tobytes(): (i, True) for i in range(len(originals))})
    flipped = []
    for epoch in range(2):
        seen = [which[image.tobytes()] for batch in batches[epoch * steps:(epoch + 1) * steps] for image in batch]
        assert sorted(i for i, _ in seen) == list(range(len(originals)))  # each image once, as itself or mirrored
        flipped.append(dict(seen))
    assert 400 < sum(flipped[0].values()) < 624
    assert all(flipped[0][i] != flipped[1][i] for i in range(len(originals)))


def test_reflect_crop_pads_with_the_mirrored_border(cifar):
    images = tf.constant(cifar.train_images[:64])
    config_ = AugmentConfig(crop_padding=2, crop_mode="reflect")
    out = augment.crop_flip(images, config_, augment.key(0, augment.CROP_FLIP, 0)).numpy()
    padded = np.pad(cifar.train_images[:64], [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    for n in range(64):  # each output is one of the 25 crops of the reflect-padded image
        assert any(np.array_equal(out[n], padded[n, i:i + 32, j:j + 32]) for i in range(5) for j in range(5))
    assert len({tuple(out[n, 0, 0]) for n in range(64)}) > 1


def test_tta_views_are_airbenchs_and_average_the_logits(cifar):
    images = _normalized(cifar.test_images[:8])
    views = airbench.tta_views(tf.constant(images), 2)
    assert [w for _, w in views] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    expected = [images, images[:, :, ::-1], padded[:, :32, :32], padded[:, :32, :32][:, :, ::-1],
                padded[:, 2:, 2:], padded[:, 2:, 2:][:, :, ::-1]]
    for (view, _), want in zip(views, expected):
        np.testing.assert_array_equal(view.numpy(), want)
    # a model linear up to its softmax: averaging logits = logits of the weighted average view
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10, use_bias=False),
                              keras.layers.Activation("softmax")])
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(8))).batch(4)
    got = airbench.tta_probabilities(model, dataset, 2)
    mean_view = sum(w * v.numpy() for v, w in views)
    want = keras.ops.convert_to_numpy(keras.ops.softmax(mean_view.reshape(8, -1) @ model.layers[1].kernel.numpy()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(airbench.tta_probabilities(model, dataset, 0), model.predict(dataset, verbose=0), atol=1e-6)



def test_uncertain_tta_augments_only_the_least_confident_images(cifar):
    images = _normalized(cifar.test_images[:10])
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10), keras.layers.Activation("softmax")])
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(10))).batch(3)  # last batch of 1
    plain, full = airbench.tta_probabilities(model, dataset, 0), airbench.tta_probabilities(model, dataset, 2)
    assert not np.allclose(plain, full, atol=1e-4)
    got = airbench.uncertain_tta_probabilities(model, dataset, 2, fraction=0.45)  # int(4.5) = 4 images
    unsure = np.argsort(plain.max(axis=1))[:4]
    for n in range(10):
        np.testing.assert_allclose(got[n], (full if n in unsure else plain)[n], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(airbench.uncertain_tta_probabilities(model, dataset, 2, 1.0), full, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(airbench.uncertain_tta_probabilities(model, dataset, 2, 0.0), plain, rtol=1e-4, atol=1e-6)
    assert airbench.UNCERTAIN_FRACTION == 0.2  # hiverge's UNCERTAIN_QUANTILE
    assert airbench.TEST_TIME_AUGMENTATIONS["mirror_translate_uncertain"](model, dataset).shape == (10, 10)
    with pytest.raises(ValueError, match="fraction"):
        airbench.uncertain_tta_probabilities(model, dataset, 2, fraction=1.5)

def test_triangular_schedule_matches_airbench():
    schedule = optim.Triangular(11.5, total_steps=476)
    top = int(0.23 * 476)
    factor = lambda s: float(schedule(s)) / 11.5  # noqa: E731
    assert factor(0) == pytest.approx(0.2) and factor(top) == pytest.approx(1.0)
    assert factor(476) == pytest.approx(0.07) and factor(top // 2) == pytest.approx(0.2 + 0.8 * (top // 2) / top)
    assert factor(300) == pytest.approx(1 + (0.07 - 1) * (300 - top) / (476 - top), rel=1e-5)


def test_airbench_sgd_is_pytorchs_nesterov_sgd_on_the_summed_loss():
    """Three steps against the update written out from airbench's PyTorch SGD parameter groups."""
    momentum, batch, lr_hyp, wd_hyp = 0.85, 8, 11.5, 0.0153
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    optimizer = optim.AirbenchSGD(learning_rate=lr_hyp, momentum=momentum, weight_decay=wd_hyp, batch_size=batch,
                                  bias_scaler=64.0, whiten_bias_steps=2)
    weight = keras.Variable(np.float32([0.5, -1.0]), name="kernel")
    beta = keras.Variable(np.float32([0.1]), name="beta")
    whiten_bias = keras.Variable(np.float32([0.2]), name="bias")
    whiten_bias._path = "whiten/bias"  # as a layer named "whiten" names it
    variables = [weight, beta, whiten_bias]
    optimizer.build(variables)
    state = {id(v): (v.numpy().astype(np.float64), np.zeros(v.shape)) for v in variables}
    rng = np.random.default_rng(0)
    for step in range(3):
        grads = [rng.normal(size=v.shape).astype(np.float32) for v in variables]
        optimizer.apply_gradients(zip(grads, variables))
        for v, g_mean, scale in zip(variables, grads, (1.0, 64.0, 1.0)):
            w, buf = state[id(v)]
            if v is whiten_bias and step >= 2:  # frozen after whiten_bias_steps: PyTorch skips it
                np.testing.assert_allclose(v.numpy(), w, rtol=1e-6)
                continue
            lr_group = lr_hyp / kilostep * scale
            g = batch * g_mean + (wd_hyp * batch / kilostep / lr_group) * w
            buf = momentum * buf + g
            w = w - lr_group * (g + momentum * buf)
            state[id(v)] = (w, buf)
            np.testing.assert_allclose(v.numpy(), w, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def cifar_fast_run(tmp_path_factory, cifar):
    """A one-epoch run of cifar_fast.toml on 1,024 training and 256 test images (its run directory),
    trained by the CLI in a fresh process: in this test process, after other tests, a run's
    predictions were not reproduced by its weights reloaded elsewhere (see `_tta_compare`)."""
    runs_dir = tmp_path_factory.mktemp("cifar_fast") / "runs"
    done = subprocess.run([sys.executable, "-m", "lenet_keras", "train", "experiments/cifar_fast.toml", *SMALL,
                           "train.epochs=1", "--runs-dir", str(runs_dir)], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return runs_dir / "cifar_fast" / "run-001"


def test_cifar_fast_one_epoch_writes_a_normal_run_and_report(tmp_path, cifar_fast_run):
    run_dir = cifar_fast_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["test"]["test_time_augmentation"] == "mirror_translate"
    assert 0 <= manifest["test"]["tta_accuracy"] <= 1 and 0 <= manifest["test"]["accuracy"] <= 1
    assert manifest["data"]["train_images"] == 1024 and manifest["data"]["validation"].startswith("the test set")
    saved = np.load(run_dir / "predictions.npz")
    assert saved["tta_probabilities"].shape == (256, 10)
    np.testing.assert_allclose(saved["tta_probabilities"].sum(axis=1), 1, rtol=1e-5)
    assert abs(manifest["test"]["tta_accuracy"] - np.mean(saved["tta_probabilities"].argmax(1) == saved["labels"])) < 1e-9
    index = report.build("cifar_fast", runs_dir=run_dir.parent.parent, reports_dir=tmp_path / "reports")
    assert "run-001" in index.read_text()
    table = report.summary_table(report.read_runs(run_dir.parent))
    assert table.loc[0, "test acc (TTA)"] == manifest["test"]["tta_accuracy"]


def _tta_compare(*args: str) -> subprocess.CompletedProcess:
    """`python -m benchmarks.tta_compare ARGS` from the repository root, as its docstring runs it, in
    a fresh process: rebuilt in a process that had trained (or ran other tests), the model's
    outputs from the same weights differed by up to 0.035 in probability (not understood yet)."""
    return subprocess.run([sys.executable, "-m", "benchmarks.tta_compare", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_tta_compare_reevaluates_the_runs_final_weights(tmp_path, cifar_fast_run, cifar_root):
    done = _tta_compare(str(cifar_fast_run), "--repeats", "2", "--data-dir", str(cifar_root), "--runs-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "| median of 1 |" in done.stdout
    result = json.loads((tmp_path / "bench" / "tta-001.json").read_text())
    row, test = result["runs"][0], json.loads((cifar_fast_run / "manifest.json").read_text())["test"]
    assert row["plain_accuracy"] == 100 * test["accuracy"]
    assert abs(row["all_accuracy"] - 100 * test["tta_accuracy"]) <= 100 / 256  # the run's own TTA, re-run
    assert len(row["all_seconds"]) == len(row["uncertain_seconds"]) == 2 and row["training_seconds"] > 0
    assert row["ratio"] == round(np.median(row["uncertain_seconds"]) / np.median(row["all_seconds"]), 3)
    other = tmp_path / "copy"
    other.mkdir()
    (other / "manifest.json").write_bytes((cifar_fast_run / "manifest.json").read_bytes())
    done = _tta_compare(str(other), "--data-dir", str(cifar_root), "--runs-dir", str(tmp_path))
    assert done.returncode == 2 and "final.weights.h5: missing" in done.stderr
    for name in ("final.weights.h5", "history.csv"):
        (other / name).write_bytes((cifar_fast_run / name).read_bytes())
    saved = dict(np.load(cifar_fast_run / "predictions.npz"))
    np.savez(other / "predictions.npz", **{**saved, "tta_probabilities": saved["tta_probabilities"][::-1]})
    done = _tta_compare(str(other), "--data-dir", str(cifar_root), "--runs-dir", str(tmp_path))
    assert done.returncode == 2 and "does not reproduce the run's TTA probabilities" in done.stderr


def test_scaleless_batch_norm_is_pytorchs_batchnorm_without_weight(cifar):
    """Training: batch statistics, biased variance in the output, unbiased in the moving variance
    (torch.nn.BatchNorm2d); inference: the moving statistics; bfloat16 in, bfloat16 out."""
    x = _normalized(cifar.train_images[:64]) * 2.0 + 0.5  # (64, 32, 32, 3), not zero-mean
    layer = fast_layers.ScalelessBatchNorm(momentum=0.6, epsilon=1e-12)
    layer.build(x.shape)
    layer.beta.assign(np.float32([0.1, -0.2, 0.3]))
    y = layer(x, training=True).numpy()
    mean, variance = x.mean((0, 1, 2), dtype=np.float64), x.var((0, 1, 2), dtype=np.float64)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(variance) + [0.1, -0.2, 0.3], atol=1e-4)
    n = 64 * 32 * 32
    # float32 sums over 65,536 values: the reduction order (op determinism, set by any earlier
    # train.run in this process, changes it) moves the mean by ~1.5e-5 relative
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.4 * mean, rtol=1e-4)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.6 + 0.4 * variance * n / (n - 1), rtol=1e-4)
    # unbiased moving variance, where n / (n - 1) is large enough to tell (n = 18: 6%)
    tiny = x[:2, :3, :3]
    fresh = fast_layers.ScalelessBatchNorm(momentum=0.0, epsilon=1e-12)
    fresh(tiny, training=True)
    np.testing.assert_allclose(fresh.moving_variance.numpy(), tiny.var((0, 1, 2), dtype=np.float64) * 18 / 17,
                               rtol=1e-4)
    inference = layer(x, training=False).numpy()
    expected = (x - layer.moving_mean.numpy()) / np.sqrt(layer.moving_variance.numpy()) + [0.1, -0.2, 0.3]
    np.testing.assert_allclose(inference, expected, atol=1e-4)
    mixed = fast_layers.ScalelessBatchNorm(dtype="mixed_bfloat16")
    mixed.build(x.shape)
    mixed.set_weights(layer.get_weights())
    low = mixed(tf.cast(x, tf.bfloat16), training=False)
    assert low.dtype == tf.bfloat16 and mixed.beta.dtype == "float32"
    np.testing.assert_allclose(tf.cast(low, tf.float32).numpy(), expected, atol=0.05)


def test_xla_gelu_is_the_exact_gelu_with_its_gradient():
    x = tf.constant(np.linspace(-6, 6, 1001, dtype=np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        fused, reference = fast_layers.xla_gelu(x), keras.activations.gelu(x, approximate=False)
    np.testing.assert_allclose(fused.numpy(), reference.numpy(), atol=1e-6)
    np.testing.assert_allclose(tape.gradient(fused, x).numpy(), tape.gradient(reference, x).numpy(), atol=1e-5)
    assert not np.allclose(fused.numpy(), keras.activations.gelu(x, approximate=True).numpy(), atol=1e-5)


def test_freezing_the_whitening_bias_skips_its_gradient_and_keeps_the_weights(cifar):
    """Two epochs, whitening bias trained in the first only: with the callback (no gradient
    computed after epoch 1) the weights equal those of the optimizer's own freeze alone."""
    x = _normalized(cifar.train_images[:256])
    y = keras.utils.to_categorical(cifar.train_labels[:256], 10)

    def train_two_epochs(callbacks):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 2, name="whiten"),
                                  keras.layers.Activation("gelu"), keras.layers.Flatten(),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer=optim.AirbenchSGD(learning_rate=1.0, batch_size=64, whiten_bias_steps=4),
                      loss="categorical_crossentropy")
        biases = []
        record = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: biases.append(model.get_layer("whiten").bias.numpy().copy()))
        model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0, callbacks=[*callbacks, record])
        return model, biases

    frozen, frozen_biases = train_two_epochs([callbacks.FreezeWhitenBias(1)])
    plain, plain_biases = train_two_epochs([])
    assert not frozen.get_layer("whiten").bias.trainable and plain.get_layer("whiten").bias.trainable
    assert len(frozen.trainable_weights) == len(plain.trainable_weights) - 1
    assert not np.allclose(frozen_biases[0], 0) and np.array_equal(frozen_biases[0], frozen_biases[1])
    for a, b in zip(frozen.weights, plain.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(64, 216), (576, 64)])
def test_newton_schulz_keeps_the_singular_vectors_and_moves_the_values_towards_one(shape):
    """Muon's iteration is an odd polynomial of G: U p(S) V^T. Singular values spread over a
    factor of 10 come out within 0.3-1.3 after 3 steps (Jordan: 'about Uniform(0.5, 1.5)')."""
    rng = np.random.default_rng(0)
    rank = min(shape)
    u = np.linalg.qr(rng.normal(size=(shape[0], rank)))[0]
    v = np.linalg.qr(rng.normal(size=(shape[1], rank)))[0]
    s = np.logspace(0, -1, rank)
    matrix = (u * s) @ v.T
    result = optim.newton_schulz(keras.ops.convert_to_tensor(matrix.astype(np.float32))).numpy()
    assert result.shape == shape
    core = u.T @ result @ v  # diagonal when the singular vectors are kept
    assert np.abs(core - np.diag(np.diag(core))).max() < 1e-3
    assert 0.3 < np.diag(core).min() and np.diag(core).max() < 1.3


def _muon_reference(variables, grads, steps, lrs):
    """airbench94_muon's PyTorch update, written out in NumPy in PyTorch's layouts: conv weights
    (out, in, kh, kw), Muon on reshape(len(g), -1); SGD(nesterov, weight_decay=wd/lr) on the norm
    biases; Adam(betas=(0.75, 0.85)) on the whitening bias and the head; loss summed over the
    batch; every rate times LambdaLR's 1 - step / total."""
    def ns(g):
        x = g / (np.linalg.norm(g) + 1e-7)
        tall = x.shape[0] > x.shape[1]
        x = x.T if tall else x
        for _ in range(3):
            a = x @ x.T
            x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
        return x.T if tall else x

    kernel, beta, bias, head = (v.astype(np.float64) for v in variables)
    kernel = kernel.transpose(3, 2, 0, 1)  # Keras (kh, kw, in, out) -> PyTorch (out, in, kh, kw)
    buffers = {name: 0.0 for name in ("kernel", "beta", "m_whiten_bias", "v_whiten_bias", "m_head", "v_head")}
    total, batch, wd = steps, 4, 0.00382
    for t, g in enumerate(grads):
        f = 1 - t / total
        gk, gb, gw, gh = (batch * x.astype(np.float64) for x in g)
        gk = gk.transpose(3, 2, 0, 1)
        buffers["kernel"] = 0.6 * buffers["kernel"] + gk
        update = gk + 0.6 * buffers["kernel"]
        kernel = kernel * (len(kernel) ** 0.5 / np.linalg.norm(kernel))
        kernel = kernel - f * lrs["muon"] * ns(update.reshape(len(update), -1)).reshape(update.shape)
        gb = gb + wd / lrs["norm_bias"] * beta
        buffers["beta"] = 0.85 * buffers["beta"] + gb
        beta = beta - f * lrs["norm_bias"] * (gb + 0.85 * buffers["beta"])
        new = {}
        for name, w, gx in (("whiten_bias", bias, gw), ("head", head, gh)):
            m = buffers["m_" + name] = 0.75 * buffers["m_" + name] + 0.25 * gx
            v = buffers["v_" + name] = 0.85 * buffers["v_" + name] + 0.15 * gx ** 2
            step = (m / (1 - 0.75 ** (t + 1))) / (np.sqrt(v / (1 - 0.85 ** (t + 1))) + 1e-8)
            new[name] = w - f * lrs[name] * step
        bias, head = new["whiten_bias"], new["head"]
    return kernel.transpose(2, 3, 1, 0), beta, bias, head


def test_airbench_muon_is_airbench94_muons_four_optimizers():
    """Three steps of optim.AirbenchMuon against `_muon_reference`, with the linear-decay schedule."""
    lrs = {"muon": 0.24, "norm_bias": 0.053, "whiten_bias": 0.08, "head": 0.0099}
    optimizer = optim.AirbenchMuon(learning_rate=optim.Triangular(0.24, 3, start=1.0, peak=0.0, end=0.0),
                                   batch_size=4, bias_learning_rate=lrs["norm_bias"], head_learning_rate=lrs["head"],
                                   whiten_bias_learning_rate=lrs["whiten_bias"])
    rng = np.random.default_rng(1)
    shapes = {"group1_conv1/kernel": (3, 3, 5, 8), "group1_norm1/beta": (8,), "whiten/bias": (6,),
              "head/kernel": (8, 10)}
    variables = []
    for path, shape in shapes.items():
        variable = keras.Variable(rng.normal(size=shape).astype(np.float32), name=path.split("/")[-1])
        variable._path = path  # as the named layers of models.CifarFast name them
        variables.append(variable)
    start = [v.numpy() for v in variables]
    optimizer.build(variables)
    grads = [[rng.normal(size=v.shape).astype(np.float32) for v in variables] for _ in range(3)]
    for g in grads:
        optimizer.apply_gradients(zip(g, variables))
    expected = _muon_reference(start, grads, 3, lrs)
    for variable, want in zip(variables, expected):
        np.testing.assert_allclose(variable.numpy(), want, rtol=2e-4, atol=2e-5, err_msg=variable.path)


def test_airbench_muon_refuses_a_variable_it_has_no_rule_for():
    dense = keras.Variable(np.zeros((3, 2), np.float32), name="kernel")
    dense._path = "dense/kernel"
    with pytest.raises(ValueError, match=r"airbench_muon: variable 'dense/kernel' \(shape \(3, 2\)\) is not"):
        optim.AirbenchMuon(learning_rate=0.24).build([dense])
