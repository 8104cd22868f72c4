"""Optimizers and learning-rate schedules, by registry name (`[optimizer]`, `[schedule]`).

The default is the deck's (seed 002): `keras.optimizers.SGD(momentum=0.9)` driven by
`keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=10000, decay_rate=0.98)`.
Schedules count optimizer steps (batches), not epochs.

A new optimizer plugs in through the registries below, without touching the runner: its builder
in `OPTIMIZERS`, the schedules it is restricted to (if any) in `OPTIMIZER_SCHEDULES`, and the
Keras callbacks it needs during training (if any) in `OPTIMIZER_CALLBACKS`, which the runner
collects through `callbacks_for`.
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


@keras.saving.register_keras_serializable(package="lenet_keras")
class Triangular(keras.optimizers.schedules.LearningRateSchedule):
    """airbench94's `triangle` schedule: `learning_rate` times a piecewise-linear factor.

    The factor goes from `start` at step 0 up to 1 at step int(peak * total_steps), then down to
    `end` at `total_steps` (airbench: start 0.2, peak 0.23, end 0.07), and stays at `end` after.
    """

    def __init__(self, learning_rate, total_steps, start=0.2, peak=0.23, end=0.07):
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.start, self.peak, self.end = float(start), float(peak), float(end)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        top = float(int(self.peak * self.total_steps))
        rising = self.start + (1.0 - self.start) * step / max(top, 1e-12)
        falling = 1.0 + (self.end - 1.0) * (step - top) / max(self.total_steps - top, 1e-12)
        factor = keras.ops.where(step < top, rising, keras.ops.maximum(falling, self.end))
        return self.learning_rate * factor

    @staticmethod
    def base(learning_rate) -> float:
        """The learning rate a `Triangular` schedule multiplies, or a constant `learning_rate` itself."""
        return float(learning_rate.learning_rate if isinstance(learning_rate, Triangular) else learning_rate)

    def get_config(self):
        """Constructor arguments, for saving."""
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps, "start": self.start,
                "peak": self.peak, "end": self.end}


@keras.saving.register_keras_serializable(package="lenet_keras")
class AirbenchSGD(keras.optimizers.Optimizer):
    """airbench94's optimizer: Nesterov SGD on the summed loss with coupled weight decay, in
    its batch-size- and momentum-independent ("decoupled") hyperparameters.

    airbench (hyp['opt']) gives lr = 11.5 and weight_decay = 0.0153 per 1024 examples; with
    kilostep = 1024 * (1 + 1 / (1 - momentum)) it runs PyTorch's SGD(nesterov=True) on the
    loss SUMMED over the batch, with lr_G = lr / kilostep (x `bias_scaler` for BatchNorm
    biases) and weight_decay_G = (weight_decay * batch_size / kilostep) / lr_G. This does the
    same on Keras's batch-MEAN loss (gradients times `batch_size`), per variable:

        g = batch_size * grad + weight_decay_G * w
        buf = momentum * buf + g
        w -= s(t) * lr_G * (g + momentum * buf)

    where s(t) * lr is the learning-rate schedule's value. BatchNorm biases (variables named
    "beta") use lr_G x `bias_scaler`; the bias of the layer named "whiten" is trained for the
    first `whiten_bias_steps` steps only (airbench: 3 epochs).
    """

    def __init__(self, learning_rate=11.5, momentum=0.85, weight_decay=0.0153, batch_size=1024, bias_scaler=64.0,
                 whiten_bias_steps=0, name="airbench_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)
        self.weight_decay_ = float(weight_decay)
        self.batch_size = int(batch_size)
        self.bias_scaler = float(bias_scaler)
        self.whiten_bias_steps = int(whiten_bias_steps)
        self.kilostep = 1024 * (1 + 1 / (1 - self.momentum))
        self._base_learning_rate = Triangular.base(learning_rate)

    def build(self, variables):
        """One momentum buffer per variable."""
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        self._norm_biases = {i for i, v in enumerate(variables) if v.path.split("/")[-1] == "beta"}
        self._whiten_biases = {i for i, v in enumerate(variables) if v.path.split("/")[-2:] == ["whiten", "bias"]}

    def update_step(self, gradient, variable, learning_rate):
        """One step of the update in the class docstring."""
        ops = keras.ops
        index = self._get_variable_index(variable)  # private Keras name: `framework_internals.PRIVATE_USES`
        scale = self.bias_scaler if index in self._norm_biases else 1.0
        base_lr = self.learning_rate_base() / self.kilostep * scale
        decay = self.weight_decay_ * self.batch_size / self.kilostep / base_lr
        lr = ops.cast(learning_rate, variable.dtype) / self.kilostep * scale
        buffer = self.momentums[index]
        g = ops.cast(gradient, variable.dtype) * self.batch_size + decay * variable
        new_buffer = self.momentum * buffer + g
        step = lr * (g + self.momentum * new_buffer)
        if self.whiten_bias_steps and index in self._whiten_biases:
            live = ops.cast(ops.less(self.iterations, self.whiten_bias_steps), variable.dtype)
            new_buffer, step = buffer + live * (new_buffer - buffer), live * step
        self.assign(buffer, new_buffer)
        self.assign_sub(variable, step)

    def learning_rate_base(self) -> float:
        """The unscheduled `learning_rate` (airbench's hyp lr), from which lr_G and weight_decay_G follow."""
        return self._base_learning_rate

    def get_config(self):
        """Constructor arguments, for saving."""
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay=self.weight_decay_, batch_size=self.batch_size,
                      bias_scaler=self.bias_scaler, whiten_bias_steps=self.whiten_bias_steps)
        return config


def newton_schulz(matrix, steps: int = 3, coefficients=(3.4445, -4.7750, 2.0315), epsilon: float = 1e-7):
    """Muon's quintic Newton-Schulz iteration: an approximately orthogonal matrix U S' V^T from
    `matrix` = U S V^T, with the singular values S' spread around 1 (about 0.5-1.5 after 3 steps).

    Keller Jordan's `zeropower_via_newtonschulz5` (airbench94_muon.py, 2024; the coefficients
    maximise the slope at zero): X = G / (||G||_F + eps), transposed to be wide; then `steps`
    times A = X X^T, X = a X + (b A + c A A) X. Computed in the matrix's dtype (float32 here;
    the original casts to bfloat16).

    Args:
        matrix: a 2-D float tensor (rows, columns).
    Returns:
        A tensor of the same shape and dtype.
    """
    a, b, c = coefficients
    rows, columns = matrix.shape
    x = matrix / (ops.sqrt(ops.sum(ops.square(matrix))) + epsilon)
    if rows > columns:
        x = ops.transpose(x)
    for _ in range(steps):
        gram = ops.matmul(x, ops.transpose(x))
        x = a * x + ops.matmul(b * gram + c * ops.matmul(gram, gram), x)
    return ops.transpose(x) if rows > columns else x


@keras.saving.register_keras_serializable(package="lenet_keras")
class AirbenchMuon(keras.optimizers.Optimizer):
    """airbench94_muon's optimizers in one: Muon for the convolution filters, Nesterov SGD for the
    BatchNorm biases, Adam for the whitening bias and the classifier head.

    Source: Keller Jordan's airbench94_muon (94.01% on CIFAR-10 in 8 epochs at batch 2000; the
    variant without whitening-bias freezing, in the airbench repository's research scripts),
    which steps on the loss SUMMED over the batch. Here gradients of Keras's batch-mean loss are
    multiplied by `batch_size` first, then, per variable w with gradient g and f(t) the
    schedule's factor (its value / `learning_rate`; airbench94_muon: 1 - t / T):

    - 4-D convolution kernels (kh, kw, in, out), Muon (momentum mu = `momentum`):
      buf = mu buf + g;  w *= sqrt(out) / ||w||_F;
      w -= f(t) lr  NS(reshape(g + mu buf, (kh kw in, out)))     (NS: `newton_schulz`, 3 steps)
    - BatchNorm biases ("beta"), Nesterov SGD with PyTorch's coupled weight decay, lr_b =
      `bias_learning_rate`, momentum `bias_momentum`: g += (weight_decay / lr_b) w,
      buf = m buf + g, w -= f(t) lr_b (g + m buf)
    - the bias of the layer named "whiten" (trained for the first `whiten_bias_steps` steps only
      when that is > 0) and the kernel of the layer named "head": Adam with betas (0.75, 0.85),
      epsilon 1e-8, bias-corrected, at `whiten_bias_learning_rate` and `head_learning_rate`
      times f(t).

    Raises:
        ValueError: at build, for a trainable variable in none of those groups (this optimizer
            is for `models.CifarFast`).
    """

    ADAM_BETAS = (0.75, 0.85)
    ADAM_EPSILON = 1e-8

    def __init__(self, learning_rate=0.24, momentum=0.6, weight_decay=0.00382, batch_size=2000,
                 bias_learning_rate=0.053, bias_momentum=0.85, head_learning_rate=0.0099,
                 whiten_bias_learning_rate=0.08, whiten_bias_steps=0, name="airbench_muon", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum, self.weight_decay_ = float(momentum), float(weight_decay)
        self.batch_size, self.whiten_bias_steps = int(batch_size), int(whiten_bias_steps)
        self.bias_learning_rate, self.bias_momentum = float(bias_learning_rate), float(bias_momentum)
        self.head_learning_rate = float(head_learning_rate)
        self.whiten_bias_learning_rate = float(whiten_bias_learning_rate)
        self._base_learning_rate = Triangular.base(learning_rate)

    def build(self, variables):
        """Momentum buffers (and Adam's second moments) per variable; each variable's group."""
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        self.second_moments = self.add_optimizer_variables(variables, "second_moment")
        self._groups = [self._group(v) for v in variables]

    @staticmethod
    def _group(variable) -> str:
        parts = variable.path.split("/")
        if len(variable.shape) == 4:
            return "filter"
        if parts[-1] == "beta":
            return "norm_bias"
        if parts[-2:] in (["whiten", "bias"], ["head", "kernel"]):
            return "/".join(parts[-2:])
        raise ValueError(f"airbench_muon: variable {variable.path!r} (shape {tuple(variable.shape)}) is not a "
                         "4-D conv kernel, a BatchNorm beta, whiten/bias or head/kernel (model cifar_fast)")

    def update_step(self, gradient, variable, learning_rate):
        """One step of the update in the class docstring."""
        index = self._get_variable_index(variable)  # private Keras name: `framework_internals.PRIVATE_USES`
        group = self._groups[index]
        factor = ops.cast(learning_rate, variable.dtype) / self._base_learning_rate
        g = ops.cast(gradient, variable.dtype) * self.batch_size
        if group == "filter":
            self._muon_step(g, variable, factor * self._base_learning_rate, self.momentums[index])
        elif group == "norm_bias":
            self._sgd_step(g, variable, factor * self.bias_learning_rate, self.momentums[index])
        else:
            base = self.head_learning_rate if group == "head/kernel" else self.whiten_bias_learning_rate
            live = 1.0
            if group == "whiten/bias" and self.whiten_bias_steps:
                live = ops.cast(ops.less(self.iterations, self.whiten_bias_steps), variable.dtype)
            self._adam_step(g, variable, factor * base, live, index)

    def _muon_step(self, g, variable, lr, buffer):
        new_buffer = self.momentum * buffer + g
        update = g + self.momentum * new_buffer
        columns = variable.shape[-1]
        orthogonal = ops.reshape(newton_schulz(ops.reshape(update, (-1, columns))), variable.shape)
        norm = ops.sqrt(ops.sum(ops.square(variable)))
        self.assign(buffer, new_buffer)
        self.assign(variable, variable * (columns ** 0.5 / norm) - lr * orthogonal)

    def _sgd_step(self, g, variable, lr, buffer):
        g = g + (self.weight_decay_ / self.bias_learning_rate) * variable
        new_buffer = self.bias_momentum * buffer + g
        self.assign(buffer, new_buffer)
        self.assign_sub(variable, lr * (g + self.bias_momentum * new_buffer))

    def _adam_step(self, g, variable, lr, live, index):
        beta_1, beta_2 = self.ADAM_BETAS
        first, second = self.momentums[index], self.second_moments[index]
        t = ops.cast(self.iterations + 1, variable.dtype)
        new_first = first + live * (1 - beta_1) * (g - first)
        new_second = second + live * (1 - beta_2) * (ops.square(g) - second)
        corrected = (new_first / (1 - beta_1 ** t)) / (ops.sqrt(new_second / (1 - beta_2 ** t)) + self.ADAM_EPSILON)
        self.assign(first, new_first)
        self.assign(second, new_second)
        self.assign_sub(variable, live * lr * corrected)

    def get_config(self):
        """Constructor arguments, for saving."""
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay=self.weight_decay_, batch_size=self.batch_size,
                      bias_learning_rate=self.bias_learning_rate, bias_momentum=self.bias_momentum,
                      head_learning_rate=self.head_learning_rate,
                      whiten_bias_learning_rate=self.whiten_bias_learning_rate,
                      whiten_bias_steps=self.whiten_bias_steps)
        return config


def _piecewise_constant(optimizer: OptimizerConfig, schedule: ScheduleConfig, total_steps: int, steps_per_epoch: int):
    # Keras keeps values[i] while step <= boundaries[i]: epoch b's first step (b * steps_per_epoch,
    # 0-based) gets the next rate when its boundary is the step before
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [b * steps_per_epoch - 1 for b in schedule.epoch_boundaries], list(schedule.learning_rates))


@keras.saving.register_keras_serializable(package="lenet_keras")
class StochasticDiagonalLM(keras.optimizers.Optimizer):
    """Stochastic diagonal Levenberg-Marquardt (LeCun et al. 1998, Appendix C, Eqs. 21-24).

    Per parameter w_k with gradient g_k of the pattern's criterion:

        w_k -= eta / (mu + h_kk) * g_k

    eta is the (scheduled) learning rate, mu = `damping` (the paper: 0.02), and h_kk the Gauss-Newton
    second derivative of the criterion with respect to w_k averaged over a few hundred patterns,
    held in the optimizer variable `curvature` and set before each epoch by
    `callbacks.EstimateCurvature` (from the model's `gauss_newton_diagonal`); 0 until then.
    With batch size 1 it is the paper's one update per pattern.
    """

    def __init__(self, learning_rate=5e-4, damping=0.02, name="sdlm", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.damping = float(damping)

    def build(self, variables):
        """One `curvature` (h_kk) per variable, zeros."""
        if self.built:
            return
        super().build(variables)
        self.curvatures = self.add_optimizer_variables(variables, "curvature")

    def set_curvature(self, values) -> None:
        """Assign h_kk: `values` one float32 tensor per trained variable, in `build`'s order and shapes."""
        for curvature, value in zip(self.curvatures, values, strict=True):
            curvature.assign(ops.cast(value, curvature.dtype))

    def update_step(self, gradient, variable, learning_rate):
        """w -= learning_rate / (damping + h) * g."""
        index = self._get_variable_index(variable)  # private Keras name: `framework_internals.PRIVATE_USES`
        step = ops.cast(learning_rate, variable.dtype) / (self.damping + self.curvatures[index])
        self.assign_sub(variable, step * ops.cast(gradient, variable.dtype))

    def get_config(self):
        """Constructor arguments, for saving."""
        return {**super().get_config(), "damping": self.damping}


SCHEDULES: dict[str, Callable[[OptimizerConfig, ScheduleConfig, int, int], object]] = {
    "exponential_decay": lambda optimizer, schedule, total_steps, steps_per_epoch: _exponential_decay(optimizer,
                                                                                                     schedule),
    "constant": lambda optimizer, schedule, total_steps, steps_per_epoch: optimizer.learning_rate,
    "one_cycle": lambda optimizer, schedule, total_steps, steps_per_epoch: _one_cycle(optimizer, schedule,
                                                                                      total_steps),
    "triangular": lambda optimizer, schedule, total_steps, steps_per_epoch: Triangular(
        optimizer.learning_rate, total_steps, schedule.triangle_start, schedule.triangle_peak, schedule.triangle_end),
    "piecewise_constant": _piecewise_constant,
}
"""Registry: `schedule.name` -> builder of a Keras learning rate (a float or a schedule),
given (optimizer config, schedule config, total optimizer steps of the run, steps per epoch)."""


def _clip(config: OptimizerConfig) -> dict:
    return {"global_clipnorm": config.global_clipnorm} if config.global_clipnorm else {}


OPTIMIZERS: dict[str, Callable[[OptimizerConfig, object, Experiment, int], keras.optimizers.Optimizer]] = {
    "sgd": lambda config, lr, experiment, steps_per_epoch: keras.optimizers.SGD(
        learning_rate=lr, momentum=config.momentum, nesterov=config.nesterov, **_clip(config)
    ),
    "adam": lambda config, lr, experiment, steps_per_epoch: keras.optimizers.Adam(learning_rate=lr, **_clip(config)),
    "adamw": lambda config, lr, experiment, steps_per_epoch: keras.optimizers.AdamW(
        learning_rate=lr, weight_decay=config.weight_decay, **_clip(config)
    ),
    "airbench_sgd": lambda config, lr, experiment, steps_per_epoch: AirbenchSGD(
        learning_rate=lr, momentum=config.momentum, weight_decay=config.weight_decay,
        batch_size=experiment.train.batch_size, bias_scaler=config.bias_scaler,
        whiten_bias_steps=config.whiten_bias_epochs * steps_per_epoch, **_clip(config)
    ),
    "sdlm": lambda config, lr, experiment, steps_per_epoch: StochasticDiagonalLM(learning_rate=lr,
                                                                                 damping=config.damping),
    "airbench_muon": lambda config, lr, experiment, steps_per_epoch: AirbenchMuon(
        learning_rate=lr, momentum=config.momentum, weight_decay=config.weight_decay,
        batch_size=experiment.train.batch_size, bias_learning_rate=config.bias_learning_rate,
        bias_momentum=config.bias_momentum, head_learning_rate=config.head_learning_rate,
        whiten_bias_learning_rate=config.whiten_bias_learning_rate,
        whiten_bias_steps=config.whiten_bias_epochs * steps_per_epoch, **_clip(config)
    ),
}
"""Registry: `optimizer.name` -> builder taking (config, learning rate or schedule, experiment,
steps per epoch). `adam` and `adamw` ignore `momentum` and `nesterov`; `adamw` and
`airbench_sgd` use `weight_decay` (decoupled for AdamW, airbench's units for airbench_sgd)."""

WEIGHT_DECAY_OPTIMIZERS = ("adamw", "airbench_sgd", "airbench_muon")
"""The optimizers that read `optimizer.weight_decay`; any other refuses a nonzero one."""

OPTIMIZER_SCHEDULES: dict[str, tuple[str, ...]] = {
    "airbench_sgd": ("triangular",),  # AirbenchSGD derives lr_G and weight_decay_G from Triangular's base lr
    "airbench_muon": ("triangular",),  # the other groups' rates follow Triangular's factor
}
"""Registry: `optimizer.name` -> the only `schedule.name` values it works with (absent: any)."""


def _freeze_whiten_bias(experiment: Experiment) -> list:
    epochs = experiment.optimizer.whiten_bias_epochs
    if epochs <= 0:
        return []
    from lenet_keras import callbacks

    return [callbacks.FreezeWhitenBias(epochs)]


def _estimate_curvature(experiment: Experiment, dataset) -> list:
    from lenet_keras import callbacks

    return [callbacks.EstimateCurvature(dataset.train_images, dataset.train_labels, dataset.num_classes,
                                        experiment.seed, experiment.optimizer.curvature_patterns,
                                        experiment.data.mean, experiment.data.std)]


OPTIMIZER_CALLBACKS: dict[str, Callable[[Experiment, object], list]] = {
    "airbench_sgd": lambda experiment, dataset: _freeze_whiten_bias(experiment),
    "airbench_muon": lambda experiment, dataset: _freeze_whiten_bias(experiment),
    "sdlm": _estimate_curvature,
}
"""Registry: `optimizer.name` -> function(experiment, dataset) -> the Keras callbacks that optimizer
needs during `fit` (absent: none). `airbench_sgd`: `callbacks.FreezeWhitenBias` after
`optimizer.whiten_bias_epochs` epochs (none when that is 0); `sdlm`: `callbacks.EstimateCurvature`
on `optimizer.curvature_patterns` training images before each epoch."""

OPTIMIZER_MODELS: dict[str, tuple[str, ...]] = {
    "sdlm": ("lenet5_1998",),  # needs the model's `gauss_newton_diagonal`
}
"""Registry: `optimizer.name` -> the only `model.name` values it works with (absent: any)."""


def callbacks_for(experiment: Experiment, dataset=None) -> list:
    """The Keras callbacks `experiment`'s optimizer needs (`OPTIMIZER_CALLBACKS`); [] for most.

    Args:
        dataset: the run's `data.ImageData` (the training images some callbacks read).

    Returns:
        A new list of `keras.callbacks.Callback`, for the runner to put among its own.
    """
    make = OPTIMIZER_CALLBACKS.get(experiment.optimizer.name)
    return list(make(experiment, dataset)) if make is not None else []


def check_names(experiment: Experiment) -> None:
    """Raise `ConfigError` if `optimizer.name` or `schedule.name` is not registered, or the
    options do not fit them: `one_cycle` without `max_learning_rate`, `weight_decay` for an
    optimizer outside `WEIGHT_DECAY_OPTIMIZERS`, a schedule its optimizer does not take
    (`OPTIMIZER_SCHEDULES`: `airbench_sgd` needs `triangular`)."""
    optimizer, schedule = experiment.optimizer.name, experiment.schedule.name
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name: unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule.name: unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    allowed = OPTIMIZER_SCHEDULES.get(optimizer)
    if allowed is not None and schedule not in allowed:
        raise ConfigError(f"schedule.name: optimizer {optimizer!r} needs schedule.name = "
                          f"{' or '.join(map(repr, allowed))}, got {schedule!r}")
    models = OPTIMIZER_MODELS.get(optimizer)
    if models is not None and experiment.model.name not in models:
        raise ConfigError(f"optimizer.name: optimizer {optimizer!r} needs model.name = "
                          f"{' or '.join(map(repr, models))}, got {experiment.model.name!r}")
    _check_piecewise(experiment)
    if schedule == "one_cycle" and experiment.schedule.max_learning_rate <= 0:
        raise ConfigError("schedule.max_learning_rate: one_cycle needs the peak learning rate (> 0)")
    if experiment.optimizer.weight_decay and optimizer not in WEIGHT_DECAY_OPTIMIZERS:
        raise ConfigError(f"optimizer.weight_decay: only {', '.join(WEIGHT_DECAY_OPTIMIZERS[:-1])} and "
                          f"{WEIGHT_DECAY_OPTIMIZERS[-1]} use it, "
                          f"not {optimizer!r}")


def _check_piecewise(experiment: Experiment) -> None:
    """Raise `ConfigError` for a `piecewise_constant` schedule whose lists do not fit (see `ScheduleConfig`)."""
    schedule = experiment.schedule
    if schedule.name != "piecewise_constant":
        return
    if len(schedule.learning_rates) != len(schedule.epoch_boundaries) + 1:
        raise ConfigError(f"schedule.learning_rates: piecewise_constant needs one more learning rate than "
                          f"schedule.epoch_boundaries ({len(schedule.epoch_boundaries)}), got "
                          f"{len(schedule.learning_rates)}")
    if schedule.learning_rates[0] != experiment.optimizer.learning_rate:
        raise ConfigError(f"optimizer.learning_rate = {experiment.optimizer.learning_rate} differs from the "
                          f"piecewise_constant schedule's first rate schedule.learning_rates[0] = "
                          f"{schedule.learning_rates[0]}; make them equal")


def build(experiment: Experiment, steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
    """The optimizer of `experiment`, with its learning-rate schedule attached.

    Args:
        steps_per_epoch: optimizer steps (batches) per epoch; schedules over the whole run
            (`one_cycle`) need it.

    Raises:
        ConfigError: unknown optimizer or schedule name, or options that do not fit them
            (`check_names`).
    """
    check_names(experiment)
    total_steps = max(2, steps_per_epoch * experiment.train.epochs)
    learning_rate = SCHEDULES[experiment.schedule.name](experiment.optimizer, experiment.schedule, total_steps,
                                                        steps_per_epoch)
    return OPTIMIZERS[experiment.optimizer.name](experiment.optimizer, learning_rate, experiment, steps_per_epoch)
