"""Optimizers and learning-rate schedules, by registry name (`[optimizer]`, `[schedule]`).

The default is the deck's (seed 002): `keras.optimizers.SGD(momentum=0.9)` driven by
`keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=10000, decay_rate=0.98)`.
Schedules count optimizer steps (batches), not epochs.
"""

from __future__ import annotations

import math
from typing import Callable

import keras
from keras import ops

from lenet_keras.config import Experiment, OptimizerConfig, ScheduleConfig
from lenet_keras.errors import ConfigError


def _exponential_decay(optimizer: OptimizerConfig, schedule: ScheduleConfig):
    return keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate=optimizer.learning_rate,
        decay_steps=schedule.decay_steps,
        decay_rate=schedule.decay_rate,
        staircase=schedule.staircase,
    )


@keras.saving.register_keras_serializable(package="lenet_keras")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """PyTorch's `torch.optim.lr_scheduler.OneCycleLR` (cosine, two phases) as a Keras schedule.

    With s the optimizer step (0-based), T = `total_steps`, w = warmup_fraction * T - 1,
    start = max_learning_rate / div_factor and end = start / final_div_factor:

        lr(s) = cos_anneal(start, max_learning_rate, s / w)              for s <= w
        lr(s) = cos_anneal(max_learning_rate, end, (s - w) / (T - 1 - w)) after,
        cos_anneal(a, b, p) = b + (a - b) / 2 * (1 + cos(pi * p)),  p clipped to [0, 1].

    The CIFAR notebook (seed 004) uses max 6.74 x 0.00182, warmup 0.3, PyTorch's default
    div_factor 25 and final_div_factor 1e4, stepped once per batch.

    Args:
        max_learning_rate: the peak learning rate (> 0).
        total_steps: optimizer steps in the whole run (epochs x steps per epoch), >= 2.
    Returns (when called with a step): a float32 scalar learning rate.
    """

    def __init__(self, max_learning_rate, total_steps, warmup_fraction=0.3, div_factor=25.0, final_div_factor=1e4):
        if max_learning_rate <= 0 or total_steps < 2:
            raise ValueError(f"OneCycle needs max_learning_rate > 0 and total_steps >= 2, got "
                             f"{max_learning_rate} and {total_steps}")
        self.max_learning_rate = float(max_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_fraction = float(warmup_fraction)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        start = self.max_learning_rate / self.div_factor
        end = start / self.final_div_factor
        warm_end = self.warmup_fraction * self.total_steps - 1
        last = self.total_steps - 1

        def _anneal(a, b, fraction):
            fraction = ops.clip(fraction, 0.0, 1.0)
            return b + (a - b) / 2.0 * (1.0 + ops.cos(math.pi * fraction))

        rising = _anneal(start, self.max_learning_rate, step / max(warm_end, 1e-12))
        falling = _anneal(self.max_learning_rate, end, (step - warm_end) / (last - warm_end))
        return ops.where(step <= warm_end, rising, falling)

    def get_config(self):
        """Constructor arguments."""
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps,
                "warmup_fraction": self.warmup_fraction, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor}


def _one_cycle(optimizer: OptimizerConfig, schedule: ScheduleConfig, total_steps: int):
    return OneCycle(schedule.max_learning_rate, total_steps, schedule.warmup_fraction,
                    schedule.div_factor, schedule.final_div_factor)


SCHEDULES: dict[str, Callable[[OptimizerConfig, ScheduleConfig, int], object]] = {
    "exponential_decay": lambda optimizer, schedule, total_steps: _exponential_decay(optimizer, schedule),
    "constant": lambda optimizer, schedule, total_steps: optimizer.learning_rate,
    "one_cycle": _one_cycle,
}
"""Registry: `schedule.name` -> builder of a Keras learning rate (a float or a schedule),
given (optimizer config, schedule config, total optimizer steps of the run)."""


def _clip(config: OptimizerConfig) -> dict:
    return {"global_clipnorm": config.global_clipnorm} if config.global_clipnorm else {}


OPTIMIZERS: dict[str, Callable[[OptimizerConfig, object], keras.optimizers.Optimizer]] = {
    "sgd": lambda config, lr: keras.optimizers.SGD(
        learning_rate=lr, momentum=config.momentum, nesterov=config.nesterov, **_clip(config)
    ),
    "adam": lambda config, lr: keras.optimizers.Adam(learning_rate=lr, **_clip(config)),
    "adamw": lambda config, lr: keras.optimizers.AdamW(
        learning_rate=lr, weight_decay=config.weight_decay, **_clip(config)
    ),
}
"""Registry: `optimizer.name` -> builder taking (config, learning rate or schedule).
`adam` and `adamw` ignore `momentum` and `nesterov`; only `adamw` uses `weight_decay`."""


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
    if experiment.schedule.name == "one_cycle" and experiment.schedule.max_learning_rate <= 0:
        raise ConfigError("schedule.max_learning_rate: one_cycle needs the peak learning rate (> 0)")
    if experiment.optimizer.weight_decay and experiment.optimizer.name != "adamw":
        raise ConfigError(f"optimizer.weight_decay: only adamw uses it, not {experiment.optimizer.name!r}")


def build(experiment: Experiment, steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
    """The optimizer of `experiment`, with its learning-rate schedule attached.

    Args:
        steps_per_epoch: optimizer steps (batches) per epoch; schedules over the whole run
            (`one_cycle`) need it.

    Raises:
        ConfigError: unknown optimizer or schedule name, or options that do not fit them.
    """
    check_names(experiment)
    total_steps = max(2, steps_per_epoch * experiment.train.epochs)
    learning_rate = SCHEDULES[experiment.schedule.name](experiment.optimizer, experiment.schedule, total_steps)
    return OPTIMIZERS[experiment.optimizer.name](experiment.optimizer, learning_rate)
