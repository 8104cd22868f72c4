"""The run index (`lenet_keras.run_index`): the one scan of run directories, its order, unreadable
manifests and engines."""

from __future__ import annotations

import json

from lenet_keras import config as config_lib
from lenet_keras import rundir, run_index

CONFIG = rundir.config_block(config_lib.load("mnist_lenet5", ["seed=0"]))


def make_run(folder, name, status="completed", config=CONFIG, engine=None, text=None):
    """A run directory `folder/name` with a manifest (or the raw `text` as manifest.json)."""
    run = folder / name
    run.mkdir(parents=True)
    manifest = {"status": status, "config": config, **({"engine": engine} if engine else {})}
    (run / "manifest.json").write_text(text if text is not None else json.dumps(manifest))
    return run


def test_runs_are_in_natural_order_trains_run_nnn_first_whatever_the_listing(tmp_path):
    for name in ("trial-001", "numpy-10", "run-1000", "numpy-9", "run-999", "run-2"):
        make_run(tmp_path, name)
    (tmp_path / "not-a-run").mkdir()
    names = [record.path.name for record in run_index.scan(tmp_path)]
    assert names == ["run-2", "run-999", "run-1000", "numpy-9", "numpy-10", "trial-001"]
    assert {record.experiment for record in run_index.scan(tmp_path)} == {tmp_path.name}


def test_the_last_unfinished_run_is_by_number_run_1000_after_run_999(tmp_path):
    for name in ("run-999", "run-1000"):
        make_run(tmp_path, name, status="interrupted")
    make_run(tmp_path, "run-1001", status="running")  # alive: not resumable
    alive = lambda manifest: manifest["status"] == "running"  # noqa: E731
    assert run_index.unfinished_run(tmp_path, CONFIG, alive) == tmp_path / "run-1000"
    assert run_index.unfinished_run(tmp_path, {**CONFIG, "seed": 1}, alive) is None


def test_an_unreadable_manifest_is_a_record_with_its_reason_and_never_a_match(tmp_path):
    broken = make_run(tmp_path, "run-001", text="{not json")
    good = make_run(tmp_path, "run-002")
    records = run_index.scan(tmp_path)
    assert [r.path for r in records] == [broken, good]
    assert records[0].manifest is None and records[0].status is None
    assert records[0].problem.startswith(f"{broken / 'manifest.json'}: unreadable")
    assert run_index.completed_run(tmp_path, CONFIG) == good


def test_engines_are_one_word_and_completed_runs_are_found_per_engine(tmp_path):
    assert run_index.engine_of({}) == "keras"
    assert run_index.engine_of({"engine": "numpy (lenet_keras.scratch)"}) == "numpy"
    assert run_index.engine_of({"engine": "airbench94 (peer, PyTorch)"}) == "airbench94"
    make_run(tmp_path, "numpy-001", engine="numpy (lenet_keras.scratch)")
    assert run_index.completed_run(tmp_path, CONFIG) is None  # engine keras by default
    assert run_index.completed_run(tmp_path, CONFIG, engine="numpy") == tmp_path / "numpy-001"
    make_run(tmp_path, "run-003", status="failed")
    make_run(tmp_path, "run-004")
    assert run_index.completed_run(tmp_path, CONFIG) == tmp_path / "run-004"


def test_two_levels_down_for_folders_of_folders(tmp_path):
    make_run(tmp_path / "b", "run-10")
    make_run(tmp_path / "b", "run-9")
    make_run(tmp_path, "run-1")
    assert [r.path.relative_to(tmp_path).as_posix() for r in run_index.scan(tmp_path, depth=2)] == [
        "run-1", "b/run-9", "b/run-10"]


def test_validation_is_the_test_set_is_read_from_its_field_and_from_the_text_of_older_manifests():
    assert run_index.validation_is_test({"data": {"validation_is_test": True, "validation": "held out"}})
    assert not run_index.validation_is_test({"data": {"validation_is_test": False, "validation": "the test set (...)"}})
    assert run_index.validation_is_test({"data": {"validation": "the test set (10000 images; ...)"}})  # no field
    assert not run_index.validation_is_test({"data": {"validation": "the last 12000 of ..."}})
    assert not run_index.validation_is_test({})


def test_a_flattened_config_renders_as_json_text_for_compare_and_hparams():
    from lenet_keras import compare_stats

    manifest = {"config": {"seed": 3, "train": {"lookahead": True, "epochs": 8}, "data": {"mean": [0.5], "path": None},
                           "optimizer": {"learning_rate": 1.0}}}
    assert compare_stats.flat_config(manifest) == {
        "train.lookahead": "true", "train.epochs": "8", "data.mean": "[0.5]", "data.path": "null",
        "optimizer.learning_rate": "1.0", "engine": "keras"}
    assert run_index.flatten(manifest["config"])["train.lookahead"] is True  # HParams keeps the type


def test_a_run_recorded_before_keys_were_added_matches_the_same_recipe_today(tmp_path):
    """Keys added to the experiment format since a run was written take their defaults (what runs did
    before), so `train --seeds` and `reproduce` reuse the older run; a recorded key that no longer
    exists (or an invalid value) matches nothing."""
    older = {section: dict(values) if isinstance(values, dict) else values for section, values in CONFIG.items()}
    del older["model"]["rubbish_penalty"], older["train"]["steps_per_execution"]
    make_run(tmp_path, "run-001", config=older)
    assert run_index.completed_run(tmp_path, CONFIG) == tmp_path / "run-001"
    foreign = {**older, "train": {**older["train"], "gone_key": 1}}
    make_run(tmp_path / "other", "run-001", config=foreign)
    assert run_index.completed_run(tmp_path / "other", CONFIG) is None
    assert run_index.resolved_config(foreign) == foreign
