"""How fast this CPU runs a convolution's two backward passes, against the forward pass and
against two ways of rewriting them with faster primitives (issue 19's kernel study).

    python -m benchmarks.conv_backward                    # the CIFAR CNN's and cifar_fast's slow layers
    python -m benchmarks.conv_backward --dtype float32 --repeats 5

For each layer shape (batch, height, width, in -> out channels, kernel; stride 1, 'same'
padding) it times, as `tf.function`s on random tensors of `--dtype` (bfloat16 by default,
as `mixed_bfloat16` trains), the median of `--repeats` calls after one warm-up:

- forward: `tf.nn.conv2d` (oneDNN's forward kernel, AMX on this CPU);
- backward-filter (dW) as TensorFlow runs it (`Conv2DBackpropFilter`, oneDNN's
  `brgconv_bwd_w`), as im2col + one matmul (`tf.image.extract_patches`, then
  patches^T @ dY), and as a forward convolution (the input's channels as the batch, dY as a
  kernel of the whole image: dW[i, j, c, o] = sum_{n,h,w} x[n, h+i, w+j, c] dY[n, h, w, o]);
- backward-data (dX) as TensorFlow runs it (`Conv2DBackpropInput`) and as a forward
  convolution of dY with the kernel rotated by 180 degrees and its channels swapped.

Prints one line per shape: milliseconds of each, and the largest difference of each rewrite
from TensorFlow's result relative to its largest value (rounding of the low-precision sums).
The shapes are the CIFAR CNN's blocks 2, 4 and 6 at batch 128 and cifar_fast's two
256-map blocks at batch 1024 (see `python -m benchmarks.onednn_profile` for where a whole
training step spends its time). A development tool of the repository: run it from the root.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

SHAPES = ((128, 32, 32, 64, 119, 5), (128, 16, 16, 221, 256, 5), (128, 8, 8, 256, 256, 5),
          (1024, 15, 15, 64, 256, 3), (1024, 7, 7, 256, 256, 3))
"""(batch, height, width, in channels, out channels, kernel) of the layers timed by default."""


def median_ms(function, arguments: tuple, repeats: int):
    """(median milliseconds of `repeats` calls after one warm-up call, the last result)."""
    result = function(*arguments)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*arguments)
        result.numpy()
        seconds.append(time.perf_counter() - start)
    return 1000 * statistics.median(seconds), result


def passes(shape: tuple) -> dict:
    """The forward pass and each backward variant for one `shape` (see `SHAPES`), as
    `tf.function`s: name -> (function, which inputs it takes: "x,w", "x,dy" or "dy,w")."""
    import tensorflow as tf

    batch, height, width, channels_in, channels_out, k = shape
    pad = k // 2

    def filter_as_matmul(x, dy):
        """dW (k, k, in, out) as im2col patches (B*H*W, k*k*in) transposed times dY (B*H*W, out)."""
        patches = tf.image.extract_patches(x, [1, k, k, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
        flat = tf.matmul(tf.reshape(patches, [-1, k * k * channels_in]), tf.reshape(dy, [-1, channels_out]),
                         transpose_a=True)
        return tf.reshape(flat, [k, k, channels_in, channels_out])

    def filter_as_forward(x, dy):
        """dW as a 'valid' forward convolution of the padded input (in, H+2p, W+2p, B) with dY (H, W, B, out)."""
        images = tf.transpose(tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]]), [3, 1, 2, 0])
        return tf.transpose(tf.nn.conv2d(images, tf.transpose(dy, [1, 2, 0, 3]), 1, "VALID"), [1, 2, 0, 3])

    def data_as_forward(dy, w):
        """dX as a 'same' forward convolution of dY with the kernel rotated 180 degrees, in/out swapped."""
        return tf.nn.conv2d(dy, tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2]), 1, "SAME")

    return {
        "forward": (tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME")), "x,w"),
        "dW tensorflow": (tf.function(lambda x, dy: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=[k, k, channels_in, channels_out], out_backprop=dy, strides=[1, 1, 1, 1],
            padding="SAME")), "x,dy"),
        "dW im2col+matmul": (tf.function(filter_as_matmul), "x,dy"),
        "dW as forward conv": (tf.function(filter_as_forward), "x,dy"),
        "dX tensorflow": (tf.function(lambda dy, w: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=[batch, height, width, channels_in], filter=w, out_backprop=dy, strides=[1, 1, 1, 1],
            padding="SAME")), "dy,w"),
        "dX as forward conv": (tf.function(data_as_forward), "dy,w"),
    }


def measure(shape: tuple, dtype: str, repeats: int) -> dict:
    """{pass name: {"ms": median ms, "relative_error": vs TensorFlow's own pass or None}} for one shape."""
    import tensorflow as tf

    batch, height, width, channels_in, channels_out, k = shape
    generator = tf.random.Generator.from_seed(0)
    tensors = {"x": generator.normal([batch, height, width, channels_in]),
               "dy": generator.normal([batch, height, width, channels_out]),
               "w": generator.normal([k, k, channels_in, channels_out])}
    tensors = {name: tf.cast(value, dtype) for name, value in tensors.items()}
    out, reference = {}, {}
    for name, (function, inputs) in passes(shape).items():
        ms, result = median_ms(function, tuple(tensors[i] for i in inputs.split(",")), repeats)
        result = tf.cast(result, tf.float32)
        kind = name.split()[0]
        reference.setdefault(kind, result)
        error = float(tf.reduce_max(tf.abs(result - reference[kind])) / tf.reduce_max(tf.abs(reference[kind])))
        out[name] = {"ms": round(ms, 2), "relative_error": None if reference[kind] is result else error}
    return out


def main(argv: list[str] | None = None) -> int:
    """Time every pass of every shape and print one line per shape."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conv_backward", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="default bfloat16")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per pass, median kept (default 3)")
    args = parser.parse_args(argv)
    for shape in SHAPES:
        batch, height, width, channels_in, channels_out, k = shape
        timings = measure(shape, args.dtype, args.repeats)
        cells = [f"{name} {t['ms']:.1f} ms" + (f" (rel. err. {t['relative_error']:.1e})" if t["relative_error"] is not None
                                                 else "") for name, t in timings.items()]
        print(f"mb{batch} {height}x{width} {channels_in}->{channels_out} k{k}: " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
