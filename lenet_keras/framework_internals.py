"""Every private name of Keras and TensorFlow this package relies on, in one table, with why.

Keras 3 and TensorFlow offer no public way to do these things; each use lives in the one module
named, and `missing()` says which names a newer release has dropped (tests/test_framework_internals.py
fails then). pyproject.toml bounds Keras and TensorFlow to the minor versions these were checked
with (Keras 3.15, TensorFlow 2.21).

Nothing is imported at this module's import; `missing()` imports Keras and TensorFlow.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable


def _backup_and_restore():
    import keras

    return keras.callbacks.BackupAndRestore


def _tensorflow_trainer():
    from keras.src.backend.tensorflow import trainer

    return trainer


def _eager_context():
    from tensorflow.python.eager import context

    return context.context()


def _dropout():
    import keras

    return keras.layers.Dropout(0.5)


def _model_class():
    import keras

    return keras.Model


def _trainer_class():
    from keras.src.trainers.trainer import Trainer

    return Trainer


def _optimizer_class():
    import keras

    return keras.optimizers.Optimizer


@dataclass(frozen=True)
class PrivateUse:
    """One private name: `present()` is True while the framework still has it; `used_in` the module
    (and function) that relies on it; `why` no public API does the job."""

    name: str
    used_in: str
    why: str
    present: Callable[[], bool]


PRIVATE_USES = (
    PrivateUse("keras.callbacks.BackupAndRestore._save_model / _load_model", "callbacks.CrashSafeBackup",
               "the backup is written through temp files and renames (Keras writes weights and metadata in "
               "place) and restored before fit; BackupAndRestore has no public hook for either",
               lambda: all(hasattr(_backup_and_restore(), n) for n in ("_save_model", "_load_model"))),
    PrivateUse("keras.callbacks.BackupAndRestore._current_epoch", "callbacks.CrashSafeBackup._save_model",
               "the number of the epoch being backed up, which Keras keeps only there",
               lambda: "self._current_epoch" in inspect.getsource(_backup_and_restore())),
    PrivateUse("keras.Model._initial_epoch (read by TensorFlowTrainer.fit)", "callbacks.CrashSafeBackup",
               "BackupAndRestore's own way of making fit start at the restored epoch",
               lambda: "self._initial_epoch" in inspect.getsource(_tensorflow_trainer().TensorFlowTrainer.fit)),
    PrivateUse("keras.layers.Layer._seed_generators", "callbacks.DropoutSeeds",
               "a layer's random state (dropout masks) is reset per epoch so a resumed run draws the same "
               "masks; no public list of a layer's seed generators exists",
               lambda: bool(getattr(_dropout(), "_seed_generators", None))),
    PrivateUse("keras.Model._maybe_symbolic_build, keras.src.backend.tensorflow.trainer."
               "_collective_all_reduce_multi_worker / reduce_per_replica", "distribute.allow_multi_worker_fit",
               "Keras 3.15 cannot fit under MultiWorkerMirroredStrategy as shipped (keras-team/keras#20585)",
               lambda: hasattr(_model_class(), "_maybe_symbolic_build")
               and all(hasattr(_tensorflow_trainer(), n) for n in ("_collective_all_reduce_multi_worker",
                                                                    "reduce_per_replica"))),
    PrivateUse("keras.optimizers.Optimizer._get_variable_index", "optim (AirbenchSGD, Muon)",
               "per-variable groups (batch-norm biases, the whitening bias) as Keras's own optimizers "
               "index their per-variable state",
               lambda: hasattr(_optimizer_class(), "_get_variable_index")),
    PrivateUse("keras.Model._jit_compile", "train.compiled_model (train.jit_compile)",
               "Keras's jit_compile setter and compile() turn XLA off whenever TensorFlow's op determinism is "
               "on; the runner keeps determinism on and XLA on a CPU is deterministic",
               lambda: "self._jit_compile" in inspect.getsource(_trainer_class())),
    PrivateUse("tensorflow.python.eager.context.Context._seed / _rng", "dataformats.without_global_seed",
               "TensorFlow has no getter for the global seed state, which must be put back exactly after an "
               "image folder is decoded as in a process without one",
               lambda: hasattr(_eager_context(), "_seed") and "_rng" in inspect.getsource(type(_eager_context()))),
)
"""The table; tests/test_framework_internals.py checks every row."""


def missing() -> list[str]:
    """The names of `PRIVATE_USES` the installed Keras / TensorFlow no longer have ([] when all are there)."""
    gone = []
    for use in PRIVATE_USES:
        try:
            present = use.present()
        except (AttributeError, ImportError, OSError, TypeError):
            present = False
        if not present:
            gone.append(f"{use.name} (used by {use.used_in})")
    return gone
