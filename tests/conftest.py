"""Shared fixtures: the real MNIST files (via $LENET_KERAS_DATA or the repository's data/)."""

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
