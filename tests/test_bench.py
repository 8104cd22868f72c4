"""The benchmark's own arithmetic on the real model and one real (short) LeNet-5 measurement."""

import pytest

from lenet_keras import bench, models
from lenet_keras.config import ModelConfig

LENET5_FORWARD_MACS = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 120 * 400 + 120 * 84 + 84 * 10
"""Multiply-adds of one LeNet-5 forward pass (conv1, conv2, conv3, dense 84, dense 10)."""


def test_forward_flops_count_the_convolutions_and_matmuls():
    model = models.build(ModelConfig(name="lenet5"), (28, 28, 1), 10)
    flops = bench.forward_flops(model, (28, 28, 1))
    # 2 FLOPs per multiply-add, plus the small change of biases, pooling and softmax
    assert 2 * LENET5_FORWARD_MACS <= flops <= 1.05 * 2 * LENET5_FORWARD_MACS


def test_lenet5_measurement_reports_every_figure(mnist_dir):
    result = bench.measure("lenet5", "fp32", data_dir=str(mnist_dir))
    assert result["train_images"] == 48_000 and result["batch_size"] == 512
    assert result["train_mflop_per_image"] == pytest.approx(3 * 2 * LENET5_FORWARD_MACS / 1e6, rel=0.05)
    for key in ("epoch_seconds", "train_images_per_s", "compute_images_per_s", "inference_images_per_s",
                "matmul_peak_gflop_per_s", "peak_rss_mib"):
        assert result[key] > 0, key
    assert 0 <= result["input_wait_fraction"] < 1
    assert result["train_gflop_per_s"] == pytest.approx(
        result["train_mflop_per_image"] * result["train_images_per_s"] / 1e3, rel=0.01)
    assert 0 < result["peak_fraction"] < 1
