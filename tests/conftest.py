"""Shared fixtures: the real MNIST files (via $LENET_KERAS_DATA or the repository's data/) and the
JPEG copy of CIFAR-10 (shared/datasets/cifar10-jpeg via $LENET_KERAS_DATA).

Shared data that is missing skips a test on a developer's machine, and fails it in CI
(`CI=true`), where `.ci/run` provides it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder holding the four official MNIST IDX files, as the product would find it."""
    from lenet_keras import data

    folder = data.find_mnist(data.search_dirs())
    assert folder is not None, "MNIST not found: set LENET_KERAS_DATA or keep data/mnist/ in the repository"
    return folder


@pytest.fixture()
def no_mnist_anywhere(tmp_path, monkeypatch):
    """A world where MNIST is in none of the searched places and the download is refused at once."""
    from lenet_keras import data

    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo_data")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))  # an empty Keras cache
    monkeypatch.chdir(tmp_path)  # ./data: none
    monkeypatch.setattr(data, "MNIST_NPZ_URL", "http://127.0.0.1:9/mnist.npz")  # port 9: refused
    return tmp_path


def missing_shared(what: str) -> None:
    """Skip the calling test because `what` (shared data or a service) is absent; in CI, fail it."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        pytest.fail(f"{what} is missing in CI (CI=true), where .ci/run provides it")
    pytest.skip(f"{what} is not available here")


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """The data root holding cifar10-jpeg/ (the JPEG copy of CIFAR-10), from $LENET_KERAS_DATA."""
    from lenet_keras import data

    value = os.environ.get(data.DATA_ENV_VAR)
    root = Path(value) if value else None
    if root is None or not (root / "cifar10-jpeg" / "train").is_dir():
        missing_shared(f"cifar10-jpeg/train under ${data.DATA_ENV_VAR} ({value or 'unset'})")
    return root


def assert_png(path: Path, figsize: tuple[float, float], dpi: float = 110, tolerance: float | None = None,
               min_rgb_std: float | None = None) -> None:
    """`path` is a PNG that decodes to about `figsize` inches x `dpi` (saved with bbox_inches="tight",
    so within 75-110% of each side) and is not blank (the std of all its channels above 0.01).

    `tolerance`: instead, each side within this fraction of `figsize` x `dpi` (rounded to pixels)
    either way. `min_rgb_std`: instead, the std of the colour channels above this."""
    import matplotlib.image

    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    want_width, want_height = figsize[0] * dpi, figsize[1] * dpi
    if tolerance is None:
        assert 0.75 * want_width <= width <= 1.1 * want_width, f"{path}: {width} px wide, expected about {want_width:.0f}"
        assert 0.75 * want_height <= height <= 1.1 * want_height, f"{path}: {height} px high, expected about {want_height:.0f}"
    else:
        want_width, want_height = round(want_width), round(want_height)
        assert abs(width - want_width) <= tolerance * want_width and abs(height - want_height) <= tolerance * want_height, \
            f"{path}: {width}x{height} px, expected about {want_width}x{want_height}"
    if min_rgb_std is None:
        assert pixels.std() > 0.01, f"{path}: blank image"
    else:
        assert pixels[..., :3].std() > min_rgb_std, f"{path}: blank image"
