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


def assert_png(path: Path, figsize: tuple[float, float], dpi: float = 110) -> None:
    """`path` is a PNG that decodes to about `figsize` inches x `dpi` (saved with bbox_inches="tight",
    so within 75-110% of each side) and is not blank."""
    import matplotlib.image

    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    want_width, want_height = figsize[0] * dpi, figsize[1] * dpi
    assert 0.75 * want_width <= width <= 1.1 * want_width, f"{path}: {width} px wide, expected about {want_width:.0f}"
    assert 0.75 * want_height <= height <= 1.1 * want_height, f"{path}: {height} px high, expected about {want_height:.0f}"
    assert pixels.std() > 0.01, f"{path}: blank image"
