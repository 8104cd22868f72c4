"""lenet_keras.optim's registries: which schedules an optimizer takes, which callbacks it needs."""

from pathlib import Path

import pytest

from lenet_keras import config, optim
from lenet_keras.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
CIFAR_FAST = REPO / "experiments" / "cifar_fast.toml"
MNIST = REPO / "experiments" / "mnist_lenet5.toml"


@pytest.mark.parametrize("schedule", ["exponential_decay", "constant", "one_cycle"])
def test_airbench_sgd_with_another_schedule_is_a_config_error(schedule):
    experiment = config.load(CIFAR_FAST, [f"schedule.name={schedule}", "schedule.max_learning_rate=0.1"])
    message = rf"schedule.name: optimizer 'airbench_sgd' needs schedule.name = 'triangular', got '{schedule}'"
    with pytest.raises(ConfigError, match=message):
        optim.check_names(experiment)
    with pytest.raises(ConfigError, match=message):  # build refuses it before constructing anything
        optim.build(experiment, steps_per_epoch=10)


def test_every_experiment_file_passes_the_optimizer_checks():
    paths = [p for p in sorted((REPO / "experiments").glob("*.toml")) if "sweep" not in config.read_toml(p, "experiment")]
    assert CIFAR_FAST in paths
    for path in paths:  # sweep files aside; cifar_fast: airbench_sgd with triangular
        optim.check_names(config.load(path))


def test_weight_decay_message_names_every_optimizer_that_uses_it():
    with pytest.raises(ConfigError, match=r"optimizer.weight_decay: only adamw, airbench_sgd and airbench_muon use it, not 'adam'"):
        optim.check_names(config.load(MNIST, ["optimizer.name=adam", "optimizer.weight_decay=0.01"]))


def test_airbench_sgd_needs_the_freeze_whiten_bias_callback():
    pytest.importorskip("keras")
    from lenet_keras import callbacks

    (freeze,) = optim.callbacks_for(config.load(CIFAR_FAST, ["optimizer.whiten_bias_epochs=4"]))
    assert isinstance(freeze, callbacks.FreezeWhitenBias)
    assert (freeze.epochs, freeze.layer_name) == (4, "whiten")
    (freeze,) = optim.callbacks_for(config.load(CIFAR_FAST, ["optimizer.whiten_bias_epochs=1"]))
    assert freeze.epochs == 1
    assert optim.callbacks_for(config.load(CIFAR_FAST, ["optimizer.whiten_bias_epochs=0"])) == []


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_other_optimizers_need_no_callbacks(name):
    assert optim.callbacks_for(config.load(MNIST, [f"optimizer.name={name}"])) == []


def test_a_new_optimizer_adds_its_callbacks_through_the_registry(monkeypatch):
    marker = object()
    monkeypatch.setitem(optim.OPTIMIZER_CALLBACKS, "sgd", lambda experiment, dataset: (marker, experiment.seed))
    assert optim.callbacks_for(config.load(MNIST, ["seed=7"])) == [marker, 7]  # a fresh list, in order
