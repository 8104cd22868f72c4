"""Experiment files: TOML -> validated, frozen dataclasses, with `section.key=value` overrides.

An experiment file has two top-level keys (`name`, `seed`) and the sections `[data]`,
`[model]`, `[optimizer]`, `[schedule]`, `[train]`, `[augment]` and `[distribution]`; every key is optional and defaults to
the deck's LeNet-5 recipe (seed 002, "LeNet Keras TensorFlow"). Unknown keys, wrong types and
impossible values raise `ConfigError` naming the file and the key, before anything runs.
Names that select a registry entry (`data.dataset`, `model.name`, `optimizer.name`,
`schedule.name`) are checked by the module owning that registry.

Example::

    experiment = load("experiments/mnist_lenet5.toml", ["train.epochs=3", "seed=7"])
    experiment = load("mnist_lenet5")   # a shipped experiment by name (`find_experiment_file`)

The shipped experiments and sweeps are the TOML files of the repository's `experiments/`; a
wheel carries them as `lenet_keras/experiments/*.toml` (`experiments_dir`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lenet_keras.errors import ConfigError


def _rule(check: Callable[[Any], bool], expected: str, default: Any) -> Any:
    """A dataclass field with a default and a value check (`expected` words the check)."""
    return field(default=default, metadata={"check": check, "expected": expected})


_POSITIVE_INT = (lambda v: v > 0, "an integer > 0")
_NON_NEGATIVE_INT = (lambda v: v >= 0, "an integer >= 0")
_POSITIVE_FLOAT = (lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
"""Experiment names and run ids become folder names: letters, digits, `_`, `.`, `-`; no leading dot."""


@dataclass(frozen=True)
class DataConfig:
    """`[data]`: which dataset and which part of it.

    `validation_split` is the fraction of the training images held out for validation: the
    LAST `validation_split` of them, in the official file order, exactly as Keras's
    `model.fit(validation_split=...)` in the deck (0.2 of 60,000 -> images 48,000..59,999).
    `train_subset`/`test_subset` keep only the first N official training/test images
    (0 = all); they exist for quick tests and smoke runs.

    `dataset = "image_folder"` reads `path/train/<class>/*` and `path/test/<class>/*`; its
    class order is `class_names`, or the sorted folder names when empty. Its files have no
    official order, so they are put in a fixed order first (a permutation seeded with 0, the
    same for every run) before subsets and the validation split are taken.
    `mean`/`std` normalize each channel after scaling pixels to [0, 1]: x = (x/255 - mean) / std
    (empty = no normalization, as the deck's MNIST recipe).
    """

    dataset: str = "mnist"
    path: str = ""
    class_names: tuple[str, ...] = ()
    validation_split: float = _rule(lambda v: 0 <= v < 1, "a fraction in [0, 1)", 0.2)
    train_subset: int = _rule(*_NON_NEGATIVE_INT, 0)
    test_subset: int = _rule(*_NON_NEGATIVE_INT, 0)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = _rule(lambda v: all(x > 0 for x in v), "a list of numbers > 0", ())


@dataclass(frozen=True)
class ModelConfig:
    """`[model]`: the architecture, by registry name (see `lenet_keras.models.MODELS`).

    `rubbish_penalty` is j of the MAP criterion of LeCun et al. 1998, Eq. 9, which
    `lenet5_1998` trains with (`lenet_keras.lenet1998.map_criterion`); any other model refuses a
    nonzero value.
    """

    name: str = "lenet5"
    rubbish_penalty: float = _rule(lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0", 0.0)


@dataclass(frozen=True)
class OptimizerConfig:
    """`[optimizer]`: by registry name (see `lenet_keras.optim`); the deck uses SGD, momentum 0.9.

    `learning_rate` is the initial learning rate the schedule starts from (the deck: 1e-2).
    `weight_decay` is AdamW's decoupled weight decay (`adamw`; `airbench_sgd` reads it in its own
    units, below; any other optimizer refuses a nonzero one); `global_clipnorm` clips the
    gradients' global L2 norm, as PyTorch's `clip_grad_norm_` (0 = off).
    `airbench_sgd` (`lenet_keras.optim.AirbenchSGD`) reads `learning_rate`, `momentum` and
    `weight_decay` in airbench94's units (11.5, 0.85, 0.0153 per 1024 images), multiplies the
    BatchNorm biases' learning rate by `bias_scaler` (64) and trains the whitening conv's bias
    for the first `whiten_bias_epochs` (3) epochs only (the optimizer stops updating it, and
    `lenet_keras.callbacks.FreezeWhitenBias`, from `optim.callbacks_for`, stops computing its
    gradient); it takes only the `triangular` schedule.
    `airbench_muon` (`lenet_keras.optim.AirbenchMuon`, airbench94_muon's recipe) reads
    `learning_rate` and `momentum` for Muon on the convolution filters (0.24, 0.6),
    `bias_learning_rate`, `bias_momentum` and `weight_decay` for Nesterov SGD on the BatchNorm
    biases (0.053, 0.85, 0.00382), `head_learning_rate` and `whiten_bias_learning_rate` for Adam
    on the head and the whitening bias, and `whiten_bias_epochs` as `airbench_sgd` (0 = the
    whole run); it also takes only `triangular` (start 1, peak 0, end 0 is its linear decay).
    `sdlm` (`lenet_keras.optim.StochasticDiagonalLM`, LeCun et al. 1998, Appendix C) steps each
    parameter by learning_rate / (`damping` + h) times its gradient, h its Gauss-Newton second
    derivative estimated on `curvature_patterns` training images before each epoch (the paper:
    mu = 0.02, 500 patterns); it needs `model.name = "lenet5_1998"`.
    """

    name: str = "sgd"
    learning_rate: float = _rule(*_POSITIVE_FLOAT, 1e-2)
    momentum: float = _rule(lambda v: 0 <= v < 1, "a number in [0, 1)", 0.9)  # nan fails both
    nesterov: bool = False
    weight_decay: float = _rule(lambda v: 0 <= v < 1, "a number in [0, 1)", 0.0)
    global_clipnorm: float = _rule(lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0 (0 = off)", 0.0)
    bias_scaler: float = _rule(*_POSITIVE_FLOAT, 64.0)
    whiten_bias_epochs: int = _rule(*_NON_NEGATIVE_INT, 3)
    bias_learning_rate: float = _rule(*_POSITIVE_FLOAT, 0.053)
    bias_momentum: float = _rule(lambda v: 0 <= v < 1, "a number in [0, 1)", 0.85)
    head_learning_rate: float = _rule(*_POSITIVE_FLOAT, 0.0099)
    whiten_bias_learning_rate: float = _rule(*_POSITIVE_FLOAT, 0.08)
    damping: float = _rule(*_POSITIVE_FLOAT, 0.02)
    curvature_patterns: int = _rule(*_POSITIVE_INT, 500)


@dataclass(frozen=True)
class ScheduleConfig:
    """`[schedule]`: the learning-rate schedule, per optimizer step (not per epoch).

    `exponential_decay` is `keras.optimizers.schedules.ExponentialDecay`:
    lr(step) = learning_rate * decay_rate ** (step / decay_steps) (the deck: 10000 and 0.98);
    `constant` keeps `optimizer.learning_rate`.
    `one_cycle` is PyTorch's `OneCycleLR` (two phases, cosine annealing) over all training
    steps: from max_learning_rate / div_factor up to `max_learning_rate` during the first
    `warmup_fraction` of the steps, then down to that start / final_div_factor.
    `triangular` is airbench94's (`lenet_keras.optim.Triangular`): `optimizer.learning_rate` times
    a factor rising linearly from `triangle_start` to 1 at `triangle_peak` of the steps, then
    falling to `triangle_end` at the last step (the only schedule `airbench_sgd` takes).
    `piecewise_constant`: `learning_rates[0]` (which must equal `optimizer.learning_rate`) until
    epoch `epoch_boundaries[0]`, then `learning_rates[1]` until `epoch_boundaries[1]`, ...
    (`keras.optimizers.schedules.PiecewiseConstantDecay` at those epochs' first steps; LeCun et
    al. 1998: boundaries 2, 5, 8, 12 and rates 5e-4, 2e-4, 1e-4, 5e-5, 1e-5).
    """

    name: str = "exponential_decay"
    decay_steps: int = _rule(*_POSITIVE_INT, 10000)
    decay_rate: float = _rule(lambda v: 0 < v <= 1, "a number in (0, 1]", 0.98)
    staircase: bool = False
    max_learning_rate: float = _rule(lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0", 0.0)
    warmup_fraction: float = _rule(lambda v: 0 < v < 1, "a fraction strictly between 0 and 1", 0.3)
    div_factor: float = _rule(*_POSITIVE_FLOAT, 25.0)
    final_div_factor: float = _rule(*_POSITIVE_FLOAT, 1e4)
    triangle_start: float = _rule(lambda v: 0 <= v <= 1, "a number in [0, 1]", 0.2)
    triangle_peak: float = _rule(lambda v: 0 <= v < 1, "a fraction in [0, 1)", 0.23)
    triangle_end: float = _rule(lambda v: 0 <= v <= 1, "a number in [0, 1]", 0.07)
    epoch_boundaries: tuple[int, ...] = _rule(lambda v: all(b > 0 for b in v) and list(v) == sorted(set(v)),
                                              "increasing epoch numbers > 0", ())
    learning_rates: tuple[float, ...] = _rule(lambda v: all(math.isfinite(x) and x > 0 for x in v),
                                              "a list of finite numbers > 0", ())


TTA = ("none", "mirror", "mirror_translate", "mirror_translate_uncertain")
"""`train.test_time_augmentation` values (`lenet_keras.airbench.tta_views`)."""

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
"""`train.precision` values: Keras dtype policies, or "auto" (`lenet_keras.hardware.resolve_precision`)."""


@dataclass(frozen=True)
class TrainConfig:
    """`[train]`: the training loop (the deck: 20 epochs of batch 512).

    `histogram_freq` is how often (in epochs) weight histograms go to TensorBoard; 0 = never.
    `label_smoothing` mixes the one-hot targets with the uniform distribution (CIFAR notebook: 0.04).
    `precision` is the Keras dtype policy while the model is built and trained: "float32",
    "mixed_bfloat16" (bfloat16 compute, float32 weights; pays off only with native bfloat16
    units: AMX or AVX512-BF16 CPUs, GPUs of compute capability 8.0+; elsewhere it is emulated and
    slower than float32), "mixed_float16" (older GPUs), or "auto": "mixed_bfloat16" where this
    machine has bfloat16 units, else "float32" (`lenet_keras.hardware.resolve_precision`; the
    manifest's `precision` block records what was asked, what ran and why). The output layer
    always computes in float32.
    `lookahead` (airbench94): every 5 steps the weights move to a moving average of themselves
    and the run ends on it (`lenet_keras.callbacks.Lookahead`).
    `steps_per_execution` (Keras `compile`): training steps run per call of the compiled
    function, as one loop (for batch size 1, LeCun et al.'s one update per pattern, so a pass is
    not 60,000 Python calls); `jit_compile` compiles each step with XLA.
    `reshuffle_each_epoch = false` presents the training images in the same seeded random order
    in every epoch (LeCun et al. 1998's fixed order) instead of a new order per epoch.
    `test_time_augmentation`: also evaluate the test set with the logits averaged over mirrored
    ("mirror") and also 1-pixel translated ("mirror_translate") views, or those six views for
    only the 20% least confident images of a plain pass ("mirror_translate_uncertain",
    `airbench.uncertain_tta_probabilities`); the manifest records test accuracy with and
    without it.
    """

    epochs: int = _rule(*_POSITIVE_INT, 20)
    batch_size: int = _rule(*_POSITIVE_INT, 512)
    histogram_freq: int = _rule(*_NON_NEGATIVE_INT, 1)
    label_smoothing: float = _rule(lambda v: 0 <= v < 1, "a number in [0, 1)", 0.0)
    precision: str = _rule(lambda v: v in PRECISIONS, "one of " + ", ".join(map(repr, PRECISIONS)), "float32")
    lookahead: bool = False
    test_time_augmentation: str = _rule(lambda v: v in TTA, "one of " + ", ".join(map(repr, TTA)), "none")
    steps_per_execution: int = _rule(*_POSITIVE_INT, 1)
    reshuffle_each_epoch: bool = True
    jit_compile: bool = False


@dataclass(frozen=True)
class AugmentConfig:
    """`[augment]`: training-time augmentation, all off by default (see `lenet_keras.augment`).

    The CIFAR notebook (seed 004): horizontal_flip = true, crop_padding = 4,
    autoaugment = "cifar10", mixup_alpha = 0.4 (applied in that order, as the notebook does).
    `autoaugment` names an AutoAugment policy ("none" = off; see `lenet_keras.autoaugment`).
    airbench94: horizontal_flip = true with `alternating_flip = true` (each image flipped in
    epoch 0 by its own coin, then flipped the other way every epoch after: "derandomized"),
    crop_padding = 2 with `crop_mode = "reflect"` (the padding mirrors the border).
    `rotation_degrees = r` and `zoom = z`: each image rotated by an angle uniform in [-r, r]
    degrees and scaled by a factor uniform in [1 - z, 1 + z] about its centre (bilinear, zero
    fill), after flip and crop.
    `distorted_copies = n` (LeCun et al. 1998, section III.C: n = 9, 540,000 copies of the 60,000
    images): each training image has n fixed distorted copies (`augment.distort`: translation up to
    `translate_pixels` each way, scaling by 1 +- `scale`, squeezing by 1 +- `squeeze`, horizontal
    shear up to `shear`, each uniform, drawn once per copy); every epoch presents each image
    once, as itself or one of its copies, chosen uniformly.
    """

    horizontal_flip: bool = False
    crop_padding: int = _rule(*_NON_NEGATIVE_INT, 0)
    autoaugment: str = _rule(lambda v: v in ("none", "cifar10"), "'none' or 'cifar10' (an AutoAugment policy)",
                             "none")
    mixup_alpha: float = _rule(lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0 (0 = off)", 0.0)
    alternating_flip: bool = False
    crop_mode: str = _rule(lambda v: v in ("constant", "reflect"), "'constant' (zeros) or 'reflect'", "constant")
    rotation_degrees: float = _rule(lambda v: math.isfinite(v) and 0 <= v <= 180, "a number of degrees in [0, 180]",
                                    0.0)
    zoom: float = _rule(lambda v: math.isfinite(v) and 0 <= v < 1, "a number in [0, 1) (0 = off)", 0.0)
    distorted_copies: int = _rule(*_NON_NEGATIVE_INT, 0)
    translate_pixels: float = _rule(lambda v: math.isfinite(v) and 0 <= v <= 4, "a number of pixels in [0, 4]", 0.0)
    scale: float = _rule(lambda v: math.isfinite(v) and 0 <= v < 0.5, "a number in [0, 0.5)", 0.0)
    squeeze: float = _rule(lambda v: math.isfinite(v) and 0 <= v < 0.5, "a number in [0, 0.5)", 0.0)
    shear: float = _rule(lambda v: math.isfinite(v) and 0 <= v < 1, "a number in [0, 1)", 0.0)

    @property
    def distort(self) -> bool:
        """True when fixed distorted copies of the training images (`augment.distort`) are drawn."""
        return self.distorted_copies > 0

    @property
    def rotate_or_zoom(self) -> bool:
        """True when the random rotation or scale (`augment.rotate_zoom`) is on."""
        return bool(self.rotation_degrees or self.zoom)

    @property
    def per_image(self) -> bool:
        """True when any augmentation that changes images one by one is on (flip, crop, rotation
        or zoom, AutoAugment); MixUp mixes whole batches and is not counted."""
        return bool(self.horizontal_flip or self.crop_padding or self.rotate_or_zoom or self.distort
                    or self.autoaugment != "none")


STRATEGIES = ("default", "mirrored", "multi_worker")
"""`distribution.strategy` values (see `lenet_keras.distribute`)."""


@dataclass(frozen=True)
class DistributionConfig:
    """`[distribution]`: which `tf.distribute` strategy trains the model (`lenet_keras.distribute`).

    `strategy`: "default" (one device, no strategy), "mirrored" (`tf.distribute.MirroredStrategy`:
    one replica per local GPU, synchronous all-reduce) or "multi_worker"
    (`tf.distribute.MultiWorkerMirroredStrategy`: several processes or machines, each started
    with the standard `TF_CONFIG` environment variable).
    `train.batch_size` is always the GLOBAL batch: each of N replicas gets batch_size / N
    images of every step, so a run's steps per epoch do not depend on N.
    `scale_learning_rate` multiplies `optimizer.learning_rate` and `schedule.max_learning_rate`
    by the number of replicas (the linear scaling rule of Goyal et al. 2017, for users who also
    multiply the batch size by N); off by default, so the same file gives the same recipe.
    `cpu_replicas` (mirrored only) splits the CPU into that many logical devices and mirrors
    over them: a way to try the strategy without GPUs (it is not faster); 0 = off.
    """

    strategy: str = _rule(lambda v: v in STRATEGIES, "one of " + ", ".join(map(repr, STRATEGIES)), "default")
    scale_learning_rate: bool = False
    cpu_replicas: int = _rule(*_NON_NEGATIVE_INT, 0)


@dataclass(frozen=True)
class Experiment:
    """A whole, validated experiment: what `lenet_keras.train.run` needs and nothing else.

    `name` names the folder of its runs (`runs/<name>/`) and report (`reports/<name>/`); it
    defaults to the experiment file's stem. `seed` seeds Python, NumPy, TensorFlow and the
    data shuffle.
    """

    name: str = _rule(lambda v: SAFE_NAME.fullmatch(v) is not None,
                      "a folder name of letters, digits, '_', '.', '-' (no leading dot)", "experiment")
    seed: int = _rule(lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)", 42)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distribution: DistributionConfig = field(default_factory=DistributionConfig)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain TOML-compatible data (what manifests record)."""
        return dataclasses.asdict(self)


_SECTIONS: dict[str, type] = {
    f.name: f.default_factory for f in dataclasses.fields(Experiment) if dataclasses.is_dataclass(f.default_factory)
}


def experiments_dir() -> Path:
    """The folder of the shipped experiment and sweep files: `lenet_keras/experiments/` of an
    installed wheel, else `experiments/` of the repository this package runs from."""
    packaged = Path(__file__).resolve().parent / "experiments"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "experiments"


def find_experiment_file(name: str | Path) -> Path:
    """`name` as a path if that file exists, else a bare name (`mnist_lenet5`, with or without
    `.toml`) of a shipped file in `experiments_dir()`; else `name` itself as a path (so the
    missing-file error names what the user typed)."""
    path = Path(name)
    if path.exists() or len(path.parts) != 1:
        return path
    shipped = experiments_dir() / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
    return shipped if shipped.is_file() else path


def shipped_files() -> list[tuple[str, str, str]]:
    """(name, kind "experiment" or "sweep", one-line purpose: the file's first comment line) of
    every shipped TOML file, sorted by name."""
    rows = []
    for path in sorted(experiments_dir().glob("*.toml")):
        text = path.read_text(encoding="utf-8")
        kind = "sweep" if re.search(r"^\[sweep\]", text, re.MULTILINE) else "experiment"
        purpose = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
        rows.append((path.stem, kind, purpose))
    return rows


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Experiment:
    """Read an experiment file, apply `section.key=value` overrides and validate everything.

    Args:
        path: a TOML experiment file, e.g. `experiments/mnist_lenet5.toml`, or the bare name of a
            shipped one, e.g. `mnist_lenet5` (`find_experiment_file`).
        overrides: strings `key=value` with dotted keys (`train.epochs=3`, `seed=7`); values
            are TOML values (`0.01`, `true`, `"sgd"`), a bare word is taken as a string.

    Returns:
        The frozen `Experiment`.

    Raises:
        ConfigError: the file is missing or not TOML, a key is unknown, a value has the wrong
            type or is impossible (e.g. a negative learning rate); the message names the file
            and the key.
    """
    path = find_experiment_file(path)
    raw = read_toml(path, "experiment")
    for override in overrides:
        key, value = parse_override(override)
        _set_dotted(raw, key, value)
    raw.setdefault("name", path.stem)
    return from_dict(raw, source=str(path))


def read_toml(path: Path, kind: str) -> dict[str, Any]:
    """The TOML table of `path` (a `kind` file: "experiment", "sweep").

    Raises:
        ConfigError: the file is missing or not valid TOML (naming the file and the line).
    """
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{kind} file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


def from_dict(raw: dict[str, Any], source: str = "<dict>") -> Experiment:
    """Validate plain data (as read from TOML or a manifest) into an `Experiment`.

    Returns:
        The frozen `Experiment`; missing keys take the defaults of the dataclasses above.

    Raises:
        ConfigError: as `load`, naming `source` and the key.
    """
    raw = dict(raw)
    sections = {}
    for name, cls in _SECTIONS.items():
        value = raw.pop(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{name}] must be a table of keys, got {value!r}")
        sections[name] = _build(cls, value, source, prefix=f"{name}.")
    top = _build(Experiment, raw, source, prefix="", skip=set(_SECTIONS))
    if sections["distribution"].cpu_replicas and sections["distribution"].strategy != "mirrored":
        raise ConfigError(f"{source}: distribution.cpu_replicas = {sections['distribution'].cpu_replicas} needs "
                          f"distribution.strategy = \"mirrored\", got {sections['distribution'].strategy!r}")
    return dataclasses.replace(top, **sections)


def parse_override(text: str) -> tuple[str, Any]:
    """Split `section.key=value` and parse the value as TOML (a bare word stays a string).

    Returns:
        (dotted key, parsed value), e.g. ("train.epochs", 3).

    Raises:
        ConfigError: no `=` or an empty key.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.epochs=3")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key, parsed


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section")
    node[leaf] = value


def _build(cls: type, values: dict[str, Any], source: str, prefix: str, skip: set[str] = frozenset()) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            known = sorted(set(fields) | ({f"[{s}]" for s in _SECTIONS} if not prefix else set()))
            hint = difflib.get_close_matches(key, list(fields), n=1)
            did_you_mean = f" (did you mean {prefix}{hint[0]}?)" if hint else ""
            raise ConfigError(
                f"{source}: unknown key {prefix}{key}{did_you_mean}; known keys"
                f"{' in [' + prefix[:-1] + ']' if prefix else ''}: {', '.join(known)}"
            )
        kwargs[key] = _check(fields[key], value, f"{prefix}{key}", source)
    return cls(**kwargs)


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_LIST_NAMES = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


def _scalar(value: Any, expected_type: type) -> tuple[Any, bool]:
    """(value converted to `expected_type`, whether it has that type); ints pass as floats."""
    if expected_type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value), True
    ok = isinstance(value, expected_type) and not (expected_type is int and isinstance(value, bool))
    return value, ok


def _check(f: dataclasses.Field, value: Any, key: str, source: str) -> Any:
    type_name = f.type
    if type_name.startswith("tuple["):  # e.g. "tuple[float, ...]": a TOML array of that type
        element_type = _TYPES[type_name[len("tuple["):].split(",")[0]]
        converted = [_scalar(v, element_type) for v in value] if isinstance(value, (list, tuple)) else None
        if converted is None or not all(ok for _, ok in converted):
            raise ConfigError(
                f"{source}: {key} must be a list of {_LIST_NAMES[element_type]}, got {value!r}"
            )
        value = tuple(v for v, _ in converted)
    else:
        expected_type = _TYPES[type_name]
        value, ok = _scalar(value, expected_type)
        if not ok:
            raise ConfigError(
                f"{source}: {key} must be {_TYPE_NAMES[expected_type]}, got {value!r} ({type(value).__name__})"
            )
        if expected_type is str and not value and f.default != "":
            raise ConfigError(f"{source}: {key} must be a non-empty string")
    check = f.metadata.get("check")
    if check is not None and not check(value):
        raise ConfigError(f"{source}: {key} must be {f.metadata['expected']}, got {value!r}")
    return value
