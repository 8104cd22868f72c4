"""Optimizers and learning-rate schedules, by registry name (`[optimizer]`, `[schedule]`).

The default is the deck's (seed 002): `keras.optimizers.SGD(momentum=0.9)` driven by
`keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=10000, decay_rate=0.98)`.
Schedules count optimizer steps (batches), not epochs.
"""

from __future__ import annotations

from typing import Callable

import keras

from lenet_keras.config import Experiment, OptimizerConfig, ScheduleConfig
from lenet_keras.errors import ConfigError


def _exponential_decay(optimizer: OptimizerConfig, schedule: ScheduleConfig):
    return keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate=optimizer.learning_rate,
        decay_steps=schedule.decay_steps,
        decay_rate=schedule.decay_rate,
        staircase=schedule.staircase,
    )


SCHEDULES: dict[str, Callable[[OptimizerConfig, ScheduleConfig], object]] = {
    "exponential_decay": _exponential_decay,
    "constant": lambda optimizer, schedule: optimizer.learning_rate,
}
"""Registry: `schedule.name` -> builder of a Keras learning rate (a float or a schedule)."""

OPTIMIZERS: dict[str, Callable[[OptimizerConfig, object], keras.optimizers.Optimizer]] = {
    "sgd": lambda config, lr: keras.optimizers.SGD(
        learning_rate=lr, momentum=config.momentum, nesterov=config.nesterov
    ),
    "adam": lambda config, lr: keras.optimizers.Adam(learning_rate=lr),
}
"""Registry: `optimizer.name` -> builder taking (config, learning rate or schedule).
`adam` ignores `momentum` and `nesterov`."""


def check_names(experiment: Experiment) -> None:
    """Raise `ConfigError` if `optimizer.name` or `schedule.name` is not registered."""
    if experiment.optimizer.name not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer.name: unknown optimizer {experiment.optimizer.name!r}; known: {', '.join(OPTIMIZERS)}"
        )
    if experiment.schedule.name not in SCHEDULES:
        raise ConfigError(
            f"schedule.name: unknown schedule {experiment.schedule.name!r}; known: {', '.join(SCHEDULES)}"
        )


def build(experiment: Experiment) -> keras.optimizers.Optimizer:
    """The optimizer of `experiment`, with its learning-rate schedule attached.

    Raises:
        ConfigError: unknown optimizer or schedule name.
    """
    check_names(experiment)
    learning_rate = SCHEDULES[experiment.schedule.name](experiment.optimizer, experiment.schedule)
    return OPTIMIZERS[experiment.optimizer.name](experiment.optimizer, learning_rate)
