"""Experiment files: defaults, overrides and the errors that name the key."""

from pathlib import Path

import pytest

from lenet_keras import config, optim
from lenet_keras.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "experiments" / "mnist_lenet5.toml"


def test_mnist_experiment_is_the_deck_recipe():
    e = config.load(MNIST)
    assert e.name == "mnist_lenet5" and e.data.dataset == "mnist" and e.model.name == "lenet5"
    assert (e.optimizer.name, e.optimizer.learning_rate, e.optimizer.momentum) == ("sgd", 0.01, 0.9)
    assert (e.schedule.name, e.schedule.decay_steps, e.schedule.decay_rate) == ("exponential_decay", 10000, 0.98)
    assert (e.train.epochs, e.train.batch_size, e.data.validation_split) == (20, 512, 0.2)


def test_overrides_are_typed_toml_values():
    e = config.load(MNIST, ["train.epochs=3", "seed=7", "optimizer.learning_rate=5e-3",
                            "model.name=lenet5_classic", "optimizer.nesterov=true", "schedule.decay_rate=1"])
    assert e.train.epochs == 3 and e.seed == 7 and e.optimizer.learning_rate == 0.005
    assert e.model.name == "lenet5_classic" and e.optimizer.nesterov is True
    assert e.schedule.decay_rate == 1.0 and isinstance(e.schedule.decay_rate, float)


def test_round_trip_through_a_manifest_dict():
    e = config.load(MNIST, ["train.epochs=2"])
    assert config.from_dict(e.to_dict()) == e


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", r"unknown key train.epoch \(did you mean train.epochs\?\)"),
        ("optimiser.learning_rate=0.1", r"unknown key optimiser"),
        ("optimizer.learning_rate=-0.01", r"optimizer.learning_rate must be a finite number > 0, got -0.01"),
        ("optimizer.learning_rate=inf", r"optimizer.learning_rate must be a finite number > 0, got inf"),
        ("seed=4294967296", r"seed must be an integer in \[0, 2\*\*32\)"),
        ("name=a/b", r"name must be a folder name"),
        ("data.mean=[0.5, \"x\"]", r"data.mean must be a list of numbers"),
        ("train.epochs=2.5", r"train.epochs must be an integer, got 2.5"),
        ("train.epochs=true", r"train.epochs must be an integer, got True"),
        ("train.batch_size=0", r"train.batch_size must be an integer > 0"),
        ("data.validation_split=1.0", r"data.validation_split must be a fraction in \[0, 1\)"),
        ("optimizer.momentum=abc", r"optimizer.momentum must be a number, got 'abc'"),
        ("train.epochs", r"expected KEY=VALUE"),
        ("train.precision=bf16", r"train.precision must be one of 'float32', 'mixed_bfloat16', 'mixed_float16'"),
        ("augment.rotation_degrees=-5", r"augment.rotation_degrees must be a number of degrees in \[0, 180\], got -5"),
        ("augment.zoom=1.0", r"augment.zoom must be a number in \[0, 1\) \(0 = off\), got 1.0"),
    ],
)
def test_bad_values_name_the_file_and_key(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        config.load(MNIST, [override])
    if "KEY=VALUE" not in message:
        assert str(MNIST) in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="experiment file not found"):
        config.load(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        config.load(broken)
    wrong_section = tmp_path / "wrong.toml"
    wrong_section.write_text("train = 3\n")
    with pytest.raises(ConfigError, match=r"\[train\] must be a table"):
        config.load(wrong_section)


def test_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "my_run.toml"
    path.write_text("[train]\nepochs = 1\n")
    assert config.load(path).name == "my_run"


def test_unknown_registry_names_are_config_errors():
    with pytest.raises(ConfigError, match="optimizer.name: unknown optimizer 'rmsprop'"):
        optim.check_names(config.load(MNIST, ["optimizer.name=rmsprop"]))
    with pytest.raises(ConfigError, match="schedule.name: unknown schedule 'cosine'"):
        optim.check_names(config.load(MNIST, ["schedule.name=cosine"]))


def test_default_optimizer_is_sgd_momentum_with_exponential_decay():
    keras = pytest.importorskip("keras")
    optimizer = optim.build(config.load(MNIST))
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum == 0.9
    schedule = optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.ExponentialDecay)
    assert float(schedule(10000)) == pytest.approx(0.01 * 0.98)


def test_one_cycle_matches_pytorchs_closed_form():
    """OneCycleLR's formula (torch.optim.lr_scheduler, anneal_strategy='cos', two phases)."""
    import math

    pytest.importorskip("keras")
    peak, total, pct, div, final_div = 6.74 * 0.00182, 1000, 0.3, 25.0, 1e4
    schedule = optim.OneCycle(peak, total, pct, div, final_div)
    start, end = peak / div, peak / div / final_div
    warm_end, last = pct * total - 1, total - 1

    def cos(a, b, p):
        return b + (a - b) / 2 * (math.cos(math.pi * p) + 1)

    for step in (0, 1, 150, 299, 300, 500, 998, 999):
        expected = cos(start, peak, step / warm_end) if step <= warm_end else cos(peak, end, (step - warm_end) / (last - warm_end))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-6 * peak), step  # float32
    assert float(schedule(0)) == pytest.approx(peak / 25, rel=1e-6)
    assert float(schedule(299)) == pytest.approx(peak, rel=1e-6)
    assert float(schedule(999)) == pytest.approx(peak / 25 / 1e4, rel=2e-3)


def test_adamw_with_clipping_and_one_cycle_from_the_experiment():
    keras = pytest.importorskip("keras")
    e = config.load(MNIST, ["optimizer.name=adamw", "optimizer.learning_rate=0.00182", "optimizer.weight_decay=3.5e-5",
                            "optimizer.global_clipnorm=1.0", "schedule.name=one_cycle",
                            "schedule.max_learning_rate=0.0122668", "train.epochs=3"])
    optimizer = optim.build(e, steps_per_epoch=100)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.weight_decay == pytest.approx(3.5e-5) and optimizer.global_clipnorm == 1.0
    assert isinstance(optimizer._learning_rate, optim.OneCycle) and optimizer._learning_rate.total_steps == 300
    with pytest.raises(ConfigError, match="schedule.max_learning_rate"):
        optim.check_names(config.load(MNIST, ["schedule.name=one_cycle"]))
    with pytest.raises(ConfigError, match="optimizer.weight_decay: only adamw, airbench_sgd and airbench_muon use it, not .sgd."):
        optim.check_names(config.load(MNIST, ["optimizer.weight_decay=0.01"]))
