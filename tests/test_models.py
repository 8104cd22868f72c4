"""LeNet-5: architecture, parameter count, shapes and .keras round trip."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from lenet_keras import models  # noqa: E402
from lenet_keras.config import ModelConfig  # noqa: E402
from lenet_keras.errors import ConfigError  # noqa: E402


def test_deck_lenet5_matches_the_deck_summary():
    model = models.LeNet5()
    assert isinstance(model, keras.Sequential)
    assert model.count_params() == models.LENET5_PARAMETERS == 61_706
    shapes = [layer.output.shape[1:] for layer in model.layers]
    assert shapes == [(28, 28, 6), (14, 14, 6), (10, 10, 16), (5, 5, 16), (1, 1, 120), (120,), (84,), (10,)]
    assert [layer.count_params() for layer in model.layers] == [156, 0, 2416, 0, 48120, 0, 10164, 850]
    assert model.layers[0].activation.__name__ == "tanh"
    assert model.layers[1].__class__.__name__ == "AveragePooling2D"


def test_classic_variant_pads_to_32x32_and_has_the_same_parameters():
    model = models.build(ModelConfig(name="lenet5_classic"), (28, 28, 1), 10)
    assert model.count_params() == 61_706
    assert model.layers[0].output.shape[1:] == (32, 32, 1)  # zero padding
    assert model.layers[1].output.shape[1:] == (28, 28, 6)  # conv1 'valid', as the paper seed's table
    assert model.layers[1].padding == "valid"


def test_output_is_a_probability_distribution_per_image():
    model = models.LeNet5(num_classes=7)
    images = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    probabilities = np.asarray(model(images))
    assert probabilities.shape == (5, 7) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_constructor_does_not_compile():
    assert models.LeNet5().compiled is False


def test_saved_model_loads_back_as_lenet5_with_same_outputs(tmp_path):
    model = models.LeNet5(variant="classic")
    images = np.random.default_rng(1).random((3, 28, 28, 1), dtype=np.float32)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, models.LeNet5) and loaded.variant == "classic"
    np.testing.assert_allclose(np.asarray(loaded(images)), np.asarray(model(images)), rtol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="variant"):
        models.LeNet5(variant="modern")
    with pytest.raises(ValueError, match=r"input_shape=\(20, 20, 1\)"):
        models.LeNet5(input_shape=(20, 20, 1))
    with pytest.raises(ConfigError, match="model.name.*'resnet'.*lenet5"):
        models.build(ModelConfig(name="resnet"), (28, 28, 1), 10)


def test_cifar_cnn_matches_the_notebook():
    model = models.CifarCNN()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == models.CIFAR_CNN_TRAINABLE_PARAMETERS == 4_079_429
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size[0], c.use_bias) for c in convs] == [
        (64, 5, False), (119, 5, False), (221, 3, False), (256, 5, False), (256, 3, False), (256, 5, False)
    ]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert {(n.epsilon, n.momentum) for n in norms} == {(1e-5, 0.9)}
    dropouts = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.SpatialDropout2D)]
    assert dropouts == [0.04, 0.05, 0.02, 0.09, 0.08]
    images = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    assert np.asarray(model(images)).shape == (2, 10)
    assert model.layers[-4].output.shape[1:] == (8, 8, 256)  # two 2x2 poolings: 32 -> 8


def test_relu_variant_and_mixed_precision_keep_a_float32_output():
    import keras

    from lenet_keras import config, data, train

    relu = models.build(ModelConfig(name="lenet5_relu"), (28, 28, 1), 10)
    assert relu.count_params() == models.LENET5_PARAMETERS
    assert any(isinstance(layer, keras.layers.MaxPooling2D) for layer in relu.layers)
    experiment = config.from_dict({"train": {"precision": "mixed_bfloat16"}})
    images = np.zeros((8, 28, 28, 1), np.uint8)
    dataset = data.ImageData("tiny", "", tuple("0123456789"), images, np.zeros(8, np.int64), images[:2],
                             np.zeros(2, np.int64), images[:2], np.zeros(2, np.int64))
    model = train.compiled_model(experiment, dataset)
    assert model.layers[0].compute_dtype == "bfloat16" and model.layers[0].kernel.dtype == "float32"
    assert model(np.zeros((2, 28, 28, 1), np.float32)).dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for whatever comes next


def test_wide_variant_moves_parameters_into_the_convolutions_and_round_trips(tmp_path):
    import keras

    wide = models.build(ModelConfig(name="lenet5_wide"), (28, 28, 1), 10)
    assert wide.count_params() == 65_162 <= 70_000  # issue 19: the LeNet-5 family keeps at most 70,000
    convolutions = [layer for layer in wide.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in convolutions] == [16, 32, 64]
    assert [layer.output.shape[1:] for layer in convolutions] == [(28, 28, 16), (10, 10, 32), (1, 1, 64)]
    assert [layer.units for layer in wide.layers if isinstance(layer, keras.layers.Dense)] == [10]  # no F6
    wide.save(tmp_path / "wide.keras")
    again = keras.saving.load_model(tmp_path / "wide.keras")
    assert isinstance(again, models.LeNet5) and again.variant == "wide" and again.count_params() == 65_162


def test_wide_bn_variant_normalizes_each_bias_free_convolution_with_the_fused_kernel(tmp_path):
    import keras

    from lenet_keras import fast_layers

    model = models.build(ModelConfig(name="lenet5_wide_bn"), (28, 28, 1), 10)
    assert model.count_params() == 65_386 <= 70_000  # the LeNet-5 family keeps at most 70,000
    trained = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert (trained, model.count_params() - trained) == (65_162, 224)  # offsets trained; moving statistics not
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "ScalelessBatchNorm", "Activation", "MaxPooling2D"] * 2 + [
        "Conv2D", "ScalelessBatchNorm", "Activation", "Flatten", "Dense"]
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in convolutions] == [16, 32, 64]
    assert not any(layer.use_bias for layer in convolutions)  # the normalization's offset replaces the bias
    norms = [layer for layer in model.layers if isinstance(layer, fast_layers.ScalelessBatchNorm)]
    assert [(n.momentum, n.epsilon) for n in norms] == [(0.9, 1e-5)] * 3
    # training normalizes with the batch statistics: each channel of conv1's output has mean ~0, std ~1
    images = np.random.default_rng(0).random((64, 28, 28, 1)).astype(np.float32)
    normalized = keras.Sequential(model.layers[:2])(images, training=True).numpy()
    np.testing.assert_allclose(normalized.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalized.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
    model.save(tmp_path / "wide_bn.keras")
    again = keras.saving.load_model(tmp_path / "wide_bn.keras")
    assert isinstance(again, models.LeNet5) and again.variant == "wide_bn"
    np.testing.assert_array_equal(again.predict(images, verbose=0), model.predict(images, verbose=0))


def test_data_dependent_initialization_is_declared_through_one_protocol():
    fast = models.build(ModelConfig(name="cifar_fast"), (32, 32, 3), 10)
    assert isinstance(fast, models.InitializedFromData)
    assert fast.initialization_images == models.CifarFast.initialization_images == 5000  # airbench94's
    for name, shape in (("lenet5", (28, 28, 1)), ("lenet5_classic", (28, 28, 1)), ("cifar_cnn", (32, 32, 3))):
        assert not isinstance(models.build(ModelConfig(name=name), shape, 10), models.InitializedFromData), name
    images = np.random.default_rng(0).standard_normal((64, 32, 32, 3)).astype(np.float32)
    fast.initialize_from_data(images)  # what the runner calls: float32 (N, H, W, C), normalized
    kernel = np.asarray(fast.get_layer("whiten").kernel)
    assert kernel.shape == (2, 2, 3, 24) and np.isfinite(kernel).all() and np.abs(kernel).max() > 0


def test_cifar_fast_silu_swaps_only_the_conv_groups_activation(tmp_path):
    def activations(model):
        return [layer.activation for layer in model.layers if isinstance(layer, keras.layers.Activation)][:-1]

    gelu = activations(models.build(ModelConfig(name="cifar_fast"), (32, 32, 3), 10))
    silu_model = models.build(ModelConfig(name="cifar_fast_silu"), (32, 32, 3), 10)
    silu = activations(silu_model)
    assert len(gelu) == len(silu) == 7 and silu[0] is gelu[0]  # the GELU after whitening stays
    x = np.linspace(-3, 3, 13, dtype=np.float32)
    for function in silu[1:]:
        np.testing.assert_allclose(np.asarray(function(x)), x / (1 + np.exp(-x)), rtol=1e-5, atol=1e-6)
    assert silu_model.count_params() == models.build(ModelConfig(name="cifar_fast"), (32, 32, 3), 10).count_params()
    silu_model.save(tmp_path / "silu.keras")
    assert keras.saving.load_model(tmp_path / "silu.keras").activation == "silu"
    with pytest.raises(ValueError, match="'relu'"):
        models.CifarFast(activation="relu")
