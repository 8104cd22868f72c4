"""LeNet-5's layers in NumPy, forward and backward, vectorized, NHWC like Keras.

Every layer has `forward(x) -> y` (caching what backward needs) and `backward(dy) -> dx`, which
also fills `grads` (same keys as `params`). Arrays are float32 or float64 (the dtype of the input
and parameters), shapes as Keras: images (N, H, W, C), kernels (kh, kw, C_in, C_out), dense
weights (in, out).

The equations follow the seeds:
- convolution (slides, seed 001): Y = X * W + b, a cross-correlation;
  dW = the cross-correlation of the (padded) input with the upstream gradient dY;
  dX = the full convolution of dY with the kernel flipped by 180 degrees. Here both are computed
  with im2col: the input's windows as rows of a matrix (`numpy.lib.stride_tricks`), so
  forward is one matmul, dW = cols^T dY and dX scatters dY W^T back onto the windows
  (col2im, a loop over the kh x kw kernel offsets, never over pixels); this is the same
  sum as the full convolution with the flipped kernel.
- average pooling: dX = dY / (p*p) spread over each window; max pooling (deck, seed 002):
  dX = dY routed to the argmax of each window through a 0/1 mask, so ties go to the first
  maximum, as TensorFlow's MaxPoolGrad does.
- tanh: dX = dY (1 - Y^2); ReLU: dX = dY [X > 0]; dense: Y = X W + b, dW = X^T dY, dX = dY W^T.
- softmax cross-entropy (paper seed 000's Softmax + loss): log-softmax with the max subtracted
  (numerically stable); loss = mean over the batch of -sum(y log p); dlogits = (p - y) / N.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _check_images(x: np.ndarray, name: str, channels: int | None = None) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name}: expected images of shape (N, H, W, C), got shape {x.shape}")
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(f"{name}: expected {channels} input channels, got shape {x.shape}")


class Conv2D:
    """2-D convolution (cross-correlation) with stride and 'valid'/'same' padding, as `keras.layers.Conv2D`.

    Params: `kernel` (kh, kw, C_in, C_out), `bias` (C_out,). Input (N, H, W, C_in) -> output
    (N, H_out, W_out, C_out) with H_out = floor((H + 2 pad - kh) / stride) + 1 ('same': pad so
    that H_out = ceil(H / stride), extra padding at the bottom/right as TensorFlow does).

    Raises:
        ValueError: input not 4-D or with the wrong channel count; unknown padding.
    """

    def __init__(self, kernel: np.ndarray, bias: np.ndarray, stride: int = 1, padding: str = "valid", name: str = "conv",
                 input_gradient: bool = True):
        if padding not in ("valid", "same"):
            raise ValueError(f"{name}: padding must be 'valid' or 'same', got {padding!r}")
        self.params = {"kernel": kernel, "bias": bias}
        self.grads: dict[str, np.ndarray] = {}
        self.stride, self.padding, self.name = stride, padding, name
        self.input_gradient = input_gradient  # False for a first layer: backward then returns None

    def _pads(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        kh, kw = self.params["kernel"].shape[:2]
        if self.padding == "valid":
            return (0, 0), (0, 0)
        pads = []
        for size, k in ((height, kh), (width, kw)):
            out = -(-size // self.stride)
            total = max((out - 1) * self.stride + k - size, 0)
            pads.append((total // 2, total - total // 2))
        return pads[0], pads[1]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(N, H, W, C_in) -> (N, H_out, W_out, C_out)."""
        kernel = self.params["kernel"]
        kh, kw, cin, cout = kernel.shape
        _check_images(x, self.name, cin)
        pad_h, pad_w = self._pads(*x.shape[1:3])
        padded = np.pad(x, ((0, 0), pad_h, pad_w, (0, 0))) if pad_h != (0, 0) or pad_w != (0, 0) else x
        if padded.shape[1] < kh or padded.shape[2] < kw:
            raise ValueError(f"{self.name}: input {x.shape[1:3]} is smaller than the {kh}x{kw} kernel")
        windows = sliding_window_view(padded, (kh, kw), axis=(1, 2))[:, :: self.stride, :: self.stride]
        n, ho, wo = windows.shape[:3]
        cols = windows.reshape(n * ho * wo, cin * kh * kw)  # rows: (c, i, j) of each window
        weights = kernel.transpose(2, 0, 1, 3).reshape(cin * kh * kw, cout)
        self._cache = (x.shape, padded.shape, pad_h, pad_w, cols, weights, (n, ho, wo))
        return (cols @ weights + self.params["bias"]).reshape(n, ho, wo, cout)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dL/dY (N, H_out, W_out, C_out) -> dL/dX (N, H, W, C_in) (None without `input_gradient`);
        fills grads["kernel"], grads["bias"]."""
        x_shape, padded_shape, pad_h, pad_w, cols, weights, (n, ho, wo) = self._cache
        kh, kw, cin, cout = self.params["kernel"].shape
        dy2 = dy.reshape(n * ho * wo, cout)
        self.grads["kernel"] = (cols.T @ dy2).reshape(cin, kh, kw, cout).transpose(1, 2, 0, 3)
        self.grads["bias"] = dy2.sum(axis=0)
        if not self.input_gradient:
            return None
        return self._col2im(dy2 @ weights.T)

    def backward_squared(self, d2y: np.ndarray) -> np.ndarray:
        """Second derivatives back through the layer with squared weights and squared inputs
        (LeCun et al. 1998, Eqs. 25 and 27; call after `forward`): d2E/dY^2 (N, H_out, W_out, C_out)
        -> d2E/dX^2 (N, H, W, C_in) (None without `input_gradient`); fills `second["kernel"]`
        (kh, kw, C_in, C_out), each weight's sum over the connections sharing it of x^2 d2E/da^2,
        summed over the batch, and `second["bias"]` (C_out,)."""
        x_shape, padded_shape, pad_h, pad_w, cols, weights, (n, ho, wo) = self._cache
        kh, kw, cin, cout = self.params["kernel"].shape
        d2y2 = d2y.reshape(n * ho * wo, cout)
        self.second = {"kernel": ((cols * cols).T @ d2y2).reshape(cin, kh, kw, cout).transpose(1, 2, 0, 3),
                       "bias": d2y2.sum(axis=0)}
        return self._col2im(d2y2 @ (weights * weights).T) if self.input_gradient else None

    def _col2im(self, dcols2d: np.ndarray) -> np.ndarray:
        """Rows (N H_out W_out, C_in kh kw) of per-window input derivatives, summed back onto the input."""
        x_shape, padded_shape, pad_h, pad_w, _, _, (n, ho, wo) = self._cache
        kh, kw, cin, _ = self.params["kernel"].shape
        # (kh, kw, N, H_out, W_out, C_in), contiguous per kernel offset for the scatter below
        dcols = np.ascontiguousarray(dcols2d.reshape(n, ho, wo, cin, kh, kw).transpose(4, 5, 0, 1, 2, 3))
        dpadded = np.zeros(padded_shape, dtype=dcols2d.dtype)
        s = self.stride
        for i in range(kh):
            for j in range(kw):
                dpadded[:, i : i + s * ho : s, j : j + s * wo : s, :] += dcols[i, j]
        return dpadded[:, pad_h[0] : pad_h[0] + x_shape[1], pad_w[0] : pad_w[0] + x_shape[2], :]


class _Pool:
    """Non-overlapping p x p pooling with stride p, 'valid' (rows/columns beyond a whole window dropped)."""

    def __init__(self, pool_size: int = 2, name: str = "pool"):
        self.pool_size, self.name = pool_size, name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def _windows(self, x: np.ndarray) -> np.ndarray:
        _check_images(x, self.name)
        p = self.pool_size
        n, h, w, c = x.shape
        if h < p or w < p:
            raise ValueError(f"{self.name}: input {x.shape[1:3]} is smaller than the {p}x{p} pool")
        self._shape = x.shape
        ho, wo = h // p, w // p
        return x[:, : ho * p, : wo * p].reshape(n, ho, p, wo, p, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, ho, wo, c, p * p)

    def _unwindow(self, dwindows: np.ndarray) -> np.ndarray:
        p = self.pool_size
        n, h, w, c = self._shape
        ho, wo = h // p, w // p
        dx = np.zeros(self._shape, dtype=dwindows.dtype)
        dx[:, : ho * p, : wo * p] = dwindows.reshape(n, ho, wo, c, p, p).transpose(0, 1, 4, 2, 5, 3).reshape(n, ho * p, wo * p, c)
        return dx


class AveragePooling2D(_Pool):
    """Average pooling p x p, stride p, as `keras.layers.AveragePooling2D(p)`: (N, H, W, C) -> (N, H//p, W//p, C)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Mean of each window."""
        return self._windows(x).mean(axis=-1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dY / p^2 to every element of its window."""
        p2 = self.pool_size**2
        return self._unwindow(np.repeat(dy[..., None] / p2, p2, axis=-1))


class MaxPooling2D(_Pool):
    """Max pooling p x p, stride p, as `keras.layers.MaxPooling2D(p)`: (N, H, W, C) -> (N, H//p, W//p, C)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Max of each window; remembers the argmax mask (first maximum on ties)."""
        windows = self._windows(x)
        argmax = windows.argmax(axis=-1)
        self._mask = np.arange(windows.shape[-1]) == argmax[..., None]
        return np.take_along_axis(windows, argmax[..., None], axis=-1)[..., 0]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dY routed to each window's argmax through the mask."""
        return self._unwindow(self._mask * dy[..., None])


class Dense:
    """Fully connected layer, as `keras.layers.Dense` without activation: (N, in) -> (N, out).

    Params: `kernel` (in, out), `bias` (out,).

    Raises:
        ValueError: input not (N, in).
    """

    def __init__(self, kernel: np.ndarray, bias: np.ndarray, name: str = "dense"):
        self.params = {"kernel": kernel, "bias": bias}
        self.grads: dict[str, np.ndarray] = {}
        self.name = name

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Y = X W + b."""
        if x.ndim != 2 or x.shape[1] != self.params["kernel"].shape[0]:
            raise ValueError(f"{self.name}: expected input (N, {self.params['kernel'].shape[0]}), got shape {x.shape}")
        self._x = x
        return x @ self.params["kernel"] + self.params["bias"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dW = X^T dY, db = sum dY, dX = dY W^T."""
        self.grads["kernel"] = self._x.T @ dy
        self.grads["bias"] = dy.sum(axis=0)
        return dy @ self.params["kernel"].T

    def backward_squared(self, d2y: np.ndarray) -> np.ndarray:
        """Second derivatives with squared weights and inputs (LeCun et al. 1998, Eqs. 25, 27; after
        `forward`): d2E/dY^2 (N, out) -> d2E/dX^2 = d2Y (W^2)^T (N, in); fills `second["kernel"]` =
        (X^2)^T d2Y and `second["bias"]` = sum of d2Y, both summed over the batch."""
        self.second = {"kernel": (self._x * self._x).T @ d2y, "bias": d2y.sum(axis=0)}
        return d2y @ (self.params["kernel"] ** 2).T


class Flatten:
    """(N, H, W, C) -> (N, H*W*C) in NHWC order, as `keras.layers.Flatten`."""

    params: dict = {}
    grads: dict = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Reshape to rows."""
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Reshape back."""
        return dy.reshape(self._shape)


class Tanh:
    """tanh, elementwise: dX = dY (1 - Y^2)."""

    params: dict = {}
    grads: dict = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Y = tanh(X)."""
        self._y = np.tanh(x)
        return self._y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dY (1 - Y^2)."""
        return dy * (1 - self._y * self._y)


class ReLU:
    """max(0, X), elementwise: dX = dY [X > 0]."""

    params: dict = {}
    grads: dict = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Y = max(0, X)."""
        self._positive = x > 0
        return np.where(self._positive, x, 0)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dY where X > 0, else 0."""
        return dy * self._positive


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, classes) logits, computed with the row max subtracted."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against one-hot (or soft) targets, and its gradient.

    Args:
        logits: (N, classes) scores before the softmax.
        targets: (N, classes) rows summing to 1.

    Returns:
        (loss as a float, dloss/dlogits (N, classes) = (softmax - targets) / N).

    Raises:
        ValueError: shapes differ.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"softmax_cross_entropy: logits {logits.shape} and targets {targets.shape} differ")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = logits.shape[0]
    loss = float(-(targets * log_probabilities).sum() / n)
    return loss, (np.exp(log_probabilities) - targets) / n
