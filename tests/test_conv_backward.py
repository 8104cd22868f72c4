"""benchmarks.conv_backward: its rewrites of a convolution's backward passes give TensorFlow's gradients."""

import pytest

tf = pytest.importorskip("tensorflow")

from benchmarks import conv_backward  # noqa: E402


@pytest.mark.parametrize("shape", [(2, 6, 6, 3, 4, 3), (3, 5, 7, 2, 5, 5)])
def test_rewrites_match_tensorflows_backward_passes_in_float32(shape):
    timings = conv_backward.measure(shape, "float32", repeats=1)
    assert set(timings) == {"forward", "dW tensorflow", "dW im2col+matmul", "dW as forward conv", "dX tensorflow",
                            "dX as forward conv"}
    for name in ("dW im2col+matmul", "dW as forward conv", "dX as forward conv"):
        assert timings[name]["relative_error"] < 1e-5, (name, timings[name])
    assert all(t["ms"] > 0 for t in timings.values())


def test_tensorflows_passes_are_the_gradients_of_the_forward_convolution():
    batch, height, width, channels_in, channels_out, k = shape = (2, 5, 5, 3, 4, 3)
    x = tf.random.stateless_normal([batch, height, width, channels_in], [1, 2])
    w = tf.random.stateless_normal([k, k, channels_in, channels_out], [3, 4])
    dy = tf.random.stateless_normal([batch, height, width, channels_out], [5, 6])
    with tf.GradientTape() as tape:
        tape.watch([x, w])
        y = tf.nn.conv2d(x, w, 1, "SAME")
    dx, dw = tape.gradient(y, [x, w], output_gradients=dy)
    functions = conv_backward.passes(shape)
    tf.debugging.assert_near(functions["dW as forward conv"][0](x, dy), dw, atol=1e-4)
    tf.debugging.assert_near(functions["dX as forward conv"][0](dy, w), dx, atol=1e-4)
