"""benchmarks.lenet_side_by_side: the ratios and targets from hand-made whole-command timings."""

from __future__ import annotations

import json
import subprocess

import pytest

from benchmarks import lenet_side_by_side as side


def _row(seed, deck_s, ours_s, ours_acc, deck_acc=0.98):
    return {"seed": seed, "deck": {"wall_seconds": deck_s, "test_accuracy": deck_acc},
            "fast": {"wall_seconds": ours_s, "test_accuracy": ours_acc}}


def test_the_ratio_is_the_median_of_per_seed_ratios_and_targets_use_medians():
    # per-seed ratios 0.1, 0.5, 0.15 -> median 0.15; a ratio of medians would be 20/100 = 0.2
    rows = [_row(0, 100.0, 10.0, 0.991), _row(1, 40.0, 20.0, 0.989), _row(2, 200.0, 30.0, 0.992)]
    result = side.summary(rows, ["fast"])["fast"]
    assert result["wall_ratio_ours_over_deck"]["median"] == 0.15
    assert result["test_accuracy"] == {"median": 0.991, "min": 0.989, "max": 0.992}
    assert result["targets"] == {">= 99.0% at <= 0.2x": True, ">= 99.5% at <= 1.0x": False}
    slow = side.summary([_row(0, 100.0, 30.0, 0.996)], ["fast"])["fast"]["targets"]
    assert slow == {">= 99.0% at <= 0.2x": False, ">= 99.5% at <= 1.0x": True}


def test_ours_is_timed_as_the_whole_command_and_read_from_its_run_directory(tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "mnist_lenet5_fast" / "run-001"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"test": {"accuracy": 0.9931}}))
    clock = iter([10.0, 52.5, 60.0, 61.0])
    monkeypatch.setattr(side.time, "perf_counter", lambda: next(clock))
    seen = []

    def fake_run(command, capture_output, text):
        seen.append(command)
        return subprocess.CompletedProcess(command, 0, f"...\nrun directory: {run_dir}\n", "")

    monkeypatch.setattr(side.subprocess, "run", fake_run)
    result = side.run_ours("mnist_lenet5_fast", 3, tmp_path / "runs", None)
    assert result == {"wall_seconds": 42.5, "test_accuracy": 0.9931, "run_dir": str(run_dir)}
    assert seen[0][3:6] == ["train", "mnist_lenet5_fast", "seed=3"]
    monkeypatch.setattr(side.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a[0], 1, "", "boom"))
    with pytest.raises(RuntimeError, match="boom"):
        side.run_ours("mnist_lenet5_fast", 3, tmp_path / "runs", None)


def test_without_the_decks_runs_the_summary_has_no_ratios_or_targets():
    rows = [{"seed": 0, "fast": {"wall_seconds": 10.0, "test_accuracy": 0.99}},
            {"seed": 1, "fast": {"wall_seconds": 12.0, "test_accuracy": 0.992}}]
    result = side.summary(rows, ["fast"])
    assert result == {"fast": {"test_accuracy": {"median": 0.991, "min": 0.99, "max": 0.992}, "wall_seconds_median": 11.0}}


def test_the_deck_runs_from_the_peers_folder_it_is_given(tmp_path, monkeypatch):
    run_dir = tmp_path / "run-001"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(json.dumps({"test": {"accuracy": 0.98}}))
    seen = {}
    monkeypatch.setattr(side.peer_runs, "run_and_record", lambda peer, python, args, runs_dir, **k: seen.update(k) or (
        run_dir, "", 50.0))
    assert side.run_deck(tmp_path, "/m", tmp_path / "peers") == {"wall_seconds": 50.0, "test_accuracy": 0.98,
                                                                 "run_dir": str(run_dir)}
    assert seen["peers_dir"] == tmp_path / "peers" and seen["mnist_dir"] == "/m"
