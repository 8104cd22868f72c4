"""TensorBoard HParams sessions and NumPy-engine scalars, read back from the event files of real
tiny runs (600 MNIST training images, 200 test images): a Keras run, a resumed Keras run, a NumPy
run (which must not need TensorFlow) and a sweep trial each end with exactly one session whose
hyperparameters are the run's flattened config, and TensorBoard's own HParams backend finds the
runs' metrics below their sessions."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lenet_keras import config, hparams_log, manifest, run_index, sweep, sweep_study

from .conftest import REPO
from .sweep_helpers import write_sweep

TINY = ["data.train_subset=600", "data.test_subset=200", "train.epochs=2", "train.histogram_freq=0"]


def _events(folder):
    """[(path, Event)] of every event file under `folder`, read by TensorFlow's own reader."""
    import tensorflow as tf

    return [(path, event) for path in sorted(folder.rglob("events.out.tfevents.*"))
            for event in tf.compat.v1.train.summary_iterator(str(path))]


def _sessions(folder):
    """[(folder of the event file, SessionStartInfo)] of every HParams session under `folder`."""
    from tensorboard.plugins.hparams import metadata

    return [(path.parent, metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content))
            for path, event in _events(folder) for value in event.summary.value
            if value.tag == metadata.SESSION_START_INFO_TAG]


def _value(hparam):
    """The Python value of a `google.protobuf.Value`."""
    return getattr(hparam, hparam.WhichOneof("kind"))


def _dotted(table, prefix=""):
    """The expected hyperparameters of a manifest's config: dotted keys; lists as JSON text."""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


def _scalars(folder):
    """{tag: [(step, value)]} of the scalar events in the event files of `folder` (not below)."""
    import tensorflow as tf

    found = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    found.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return found


def _hparams_backend(logdir):
    """(TensorBoard's HParams backend context, request context, experiment) for `logdir`, as the tab builds them."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    backend = backend_context.Context(base_plugin.TBContext(logdir=str(logdir), data_provider=provider,
                                                            multiplexer=multiplexer))
    ctx = context.RequestContext()
    experiment = backend.experiment_from_metadata(ctx, "", True, backend.hparams_metadata(ctx, ""),
                                                  backend.hparams_from_data_provider(ctx, "", None))
    return backend, ctx, experiment


def _tensorboard_session_groups(logdir):
    """{session group name: {(group, tag): value}} as TensorBoard's HParams backend lists them."""
    from tensorboard.plugins.hparams import api_pb2, list_session_groups

    backend, ctx, experiment = _hparams_backend(logdir)
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100, allowed_statuses=[
        api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING])
    for metric in experiment.metric_infos:
        request.col_params.add(metric=metric.name)
    response = list_session_groups.Handler(ctx, backend, "", request).run()
    return {group.name: {(m.name.group, m.name.tag): m.value for m in group.metric_values}
            for group in response.session_groups}


def _tensorboard_hparam_columns(logdir) -> set[str]:
    """The hyperparameter names TensorBoard's HParams backend shows as columns for `logdir`."""
    return {info.name for info in _hparams_backend(logdir)[2].hparam_infos}


@pytest.fixture(scope="module")
def keras_run(tmp_path_factory, mnist_dir):
    from lenet_keras import train

    runs = tmp_path_factory.mktemp("keras") / "runs"
    experiment = config.load(REPO / "experiments/mnist_lenet5.toml", TINY)
    return train.run(experiment, runs, data_dir=mnist_dir, verbose=0)


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory, mnist_dir):
    """A NumPy run in a process where TensorFlow cannot be imported (`manifest.machine` reads
    TensorFlow's GPUs, so it is replaced there); returns its run directory."""
    runs = tmp_path_factory.mktemp("numpy") / "runs"
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"  # any import of them fails
        "from lenet_keras import config, manifest\n"
        "manifest.machine = lambda: {}\n"
        "from lenet_keras.scratch import train\n"
        f"experiment = config.load({str(REPO / 'experiments/mnist_lenet5.toml')!r}, {TINY!r})\n"
        f"print(train.run(experiment, {str(runs)!r}, data_dir={str(mnist_dir)!r}, verbose=False))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


def test_a_keras_run_has_one_session_of_its_flattened_config(keras_run):
    recorded = manifest.read_json(keras_run / "manifest.json")
    sessions = _sessions(keras_run)
    assert len(sessions) == 1
    folder, session = sessions[0]
    assert folder == keras_run / "tensorboard"  # metrics are found below it: train/, validation/, test/
    hparams = {name: _value(value) for name, value in session.hparams.items()}
    assert hparams == {**_dotted(recorded["config"]), "engine": "keras"}
    assert hparams["optimizer.learning_rate"] == 0.01 and hparams["train.batch_size"] == 512
    assert hparams["seed"] == 42 and hparams["data.train_subset"] == 600 and hparams["data.mean"] == "[]"
    assert session.group_name == f"mnist_lenet5/{keras_run.name}"


def test_tensorboard_finds_the_metrics_of_keras_and_numpy_sessions(keras_run, numpy_run, tmp_path):
    import shutil

    logdir = tmp_path / "runs"  # both runs under one logdir, as `tensorboard --logdir runs/`
    for run in (keras_run, numpy_run):
        shutil.copytree(run, logdir / "mnist_lenet5" / run.name)
    groups = _tensorboard_session_groups(logdir)
    assert sorted(groups) == [f"mnist_lenet5/{numpy_run.name}", f"mnist_lenet5/{keras_run.name}"]
    for run in (keras_run, numpy_run):
        last = pd.read_csv(run / "history.csv").iloc[-1]
        metrics = groups[f"mnist_lenet5/{run.name}"]
        assert metrics[("validation", "epoch_accuracy")] == pytest.approx(last["val_accuracy"], rel=1e-6)
        assert metrics[("train", "epoch_loss")] == pytest.approx(last["loss"], rel=1e-6)
        test = manifest.read_json(run / "manifest.json")["test"]
        assert metrics[("test", "test_accuracy")] == pytest.approx(test["accuracy"], rel=1e-6)


def test_a_numpy_run_writes_its_session_and_keras_scalars_without_tensorflow(numpy_run, keras_run):
    recorded = manifest.read_json(numpy_run / "manifest.json")
    sessions = _sessions(numpy_run)
    assert len(sessions) == 1 and sessions[0][0] == numpy_run / "tensorboard"
    hparams = {name: _value(value) for name, value in sessions[0][1].hparams.items()}
    assert hparams == {**_dotted(recorded["config"]), "engine": "numpy"}
    history = pd.read_csv(numpy_run / "history.csv")
    train, validation = _scalars(numpy_run / "tensorboard/train"), _scalars(numpy_run / "tensorboard/validation")
    for scalars, column, tag in ((train, "accuracy", "epoch_accuracy"), (train, "loss", "epoch_loss"),
                                 (train, "learning_rate", "epoch_learning_rate"),
                                 (validation, "val_accuracy", "epoch_accuracy"), (validation, "val_loss", "epoch_loss")):
        assert [step for step, _ in scalars[tag]] == [0, 1]  # step = epoch, 0-based, as Keras
        assert [value for _, value in scalars[tag]] == pytest.approx(list(history[column]), rel=1e-6)  # float32
    # the same epoch tags in the same folders as a real Keras run (its graph and evaluation-per-step tags aside)
    keras_train, keras_validation = _scalars(keras_run / "tensorboard/train"), _scalars(keras_run / "tensorboard/validation")
    assert set(train) == set(keras_train)
    assert set(validation) == {tag for tag in keras_validation if tag.startswith("epoch_")}
    test = _scalars(numpy_run / "tensorboard/test")
    assert test["test_accuracy"] == [(2, pytest.approx(recorded["test"]["accuracy"], rel=1e-6))]


@pytest.mark.parametrize("interrupted_epoch", [0, 1])
def test_a_resumed_run_keeps_one_session(mnist_dir, tmp_path, interrupted_epoch):
    import keras

    from lenet_keras import train

    class Interrupt(keras.callbacks.Callback):
        """Ctrl-C at the start of `interrupted_epoch` (resuming from epoch 0 trims every event)."""

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == interrupted_epoch:
                raise KeyboardInterrupt

    experiment = config.load(REPO / "experiments/mnist_lenet5.toml", TINY)
    with pytest.raises(KeyboardInterrupt) as caught:
        train.run(experiment, tmp_path / "runs", data_dir=mnist_dir, verbose=0, callbacks=(Interrupt(),))
    run_dir = caught.value.run_dir
    assert len(_sessions(run_dir)) == 1  # written when the run started
    train.run(experiment, tmp_path / "runs", data_dir=mnist_dir, verbose=0, resume=run_dir)
    recorded = manifest.read_json(run_dir / "manifest.json")
    assert recorded["status"] == "completed" and recorded["resumed"][0]["from_epoch"] == interrupted_epoch
    sessions = _sessions(run_dir)
    assert len(sessions) == 1 and sessions[0][1].group_name == f"mnist_lenet5/{run_dir.name}"


def test_a_sweep_trial_has_exactly_one_session_with_the_swept_keys(tmp_path, mnist_dir):
    path = write_sweep(tmp_path, "one", 'method = "grid"', '"optimizer.learning_rate" = [0.05]\n"train.batch_size" = [128]')
    sweep.run_sweep(sweep_study.load(path), runs_dir=tmp_path / "runs", data_dir=mnist_dir)
    sessions = _sessions(tmp_path / "runs" / "one")
    assert [folder.parent.name for folder, _ in sessions] == ["trial-000"]
    hparams = {name: _value(value) for name, value in sessions[0][1].hparams.items()}
    recorded = manifest.read_json(tmp_path / "runs" / "one" / "trial-000" / "manifest.json")
    assert hparams == {**_dotted(recorded["config"]), "engine": "keras"}
    assert hparams["optimizer.learning_rate"] == 0.05 and hparams["train.batch_size"] == 128
    columns = _tensorboard_hparam_columns(tmp_path / "runs")  # TensorBoard over runs/: every key, not only the swept ones
    assert {"optimizer.learning_rate", "train.batch_size", "optimizer.momentum", "seed", "engine"} <= columns


def test_flatten_turns_tables_into_dotted_keys_and_lists_into_text():
    assert run_index.flatten({"seed": 1, "a": {"b": [0.5, 1], "c": {"d": True}}, "e": None}) == \
        {"seed": 1, "a.b": "[0.5, 1]", "a.c.d": True, "e": "null"}
    assert run_index.engine_of({}) == "keras"
    assert run_index.engine_of({"engine": "numpy (lenet_keras.scratch)"}) == "numpy"
