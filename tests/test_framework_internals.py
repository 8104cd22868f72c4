"""The private Keras / TensorFlow names the package relies on are all there, and their check
fails when one is gone (`lenet_keras.framework_internals`)."""

from __future__ import annotations

import re

from lenet_keras import framework_internals

from .conftest import REPO


def test_every_private_name_the_package_relies_on_is_in_the_installed_keras_and_tensorflow():
    assert framework_internals.missing() == []


def test_a_private_name_that_a_release_drops_is_reported(monkeypatch):
    import keras

    def defining(cls, name):
        return next(c for c in cls.__mro__ if name in vars(c))

    monkeypatch.delattr(defining(keras.callbacks.BackupAndRestore, "_save_model"), "_save_model")
    monkeypatch.delattr(defining(keras.optimizers.Optimizer, "_get_variable_index"), "_get_variable_index")
    assert framework_internals.missing() == [
        "keras.callbacks.BackupAndRestore._save_model / _load_model (used by callbacks.CrashSafeBackup)",
        "keras.optimizers.Optimizer._get_variable_index (used by optim (AirbenchSGD, Muon))"]


def test_the_dependency_is_bounded_to_the_minor_versions_checked():
    text = (REPO / "pyproject.toml").read_text()
    assert re.search(r'"keras>=3\.15,<3\.16"', text) and re.search(r'"tensorflow>=2\.21,<2\.22"', text), text
