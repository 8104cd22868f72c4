"""The side-by-side tool (benchmarks/airbench_compare.py, a development tool of the checkout) reads
airbench94's own printed table (the format of airbench==0.1.8's `print_training_details`) and the
peer wrapper's last lines, times both sides' whole commands the same way (decoding included) and
writes its notes into the table and files.

PEER_OUTPUT is the peer's real output of seed 0 on the JPEG copy (README's table: 88.59 / 89.68,
1002.6 s of training, wall_s 1069.0), epochs 2-8 left out."""

from __future__ import annotations

import csv
import json
import subprocess
import types
from pathlib import Path

import pytest

from benchmarks import airbench_compare, peer_runs
from lenet_keras import external_run

REPO = airbench_compare.REPO

PEER_OUTPUT = """\
-----------------------------------------------------------------------------------------
|  run     |  epoch  |  train_loss  |  train_acc  |  val_acc  |  tta_val_acc  |  total_time_seconds  |
-----------------------------------------------------------------------------------------
|       0  |      0  |      1.6017  |     0.5000  |   0.5912  |               |            101.2034  |
|          |      1  |      1.3914  |     0.6982  |   0.6833  |               |            203.1111  |
|          |      2  |      1.0410  |     0.9012  |   0.8859  |               |            985.0000  |
|          |   eval  |              |             |           |       0.8968  |           1002.5853  |
-----------------------------------------------------------------------------------------
precision=bf16 threads=2 wall_s=1069.0
peak_rss_mib=2871.5
"""


def test_parse_peer_reads_the_last_epoch_the_tta_row_and_the_wrappers_lines():
    parsed = airbench_compare.parse_peer(PEER_OUTPUT)
    assert parsed == {"accuracy": pytest.approx(88.59), "tta_accuracy": pytest.approx(89.68),
                      "training_seconds": 1002.5853, "wall_seconds_after_decoding": 1069.0, "peak_rss_mib": 2871.5, "epochs": 3}


def test_parse_peer_refuses_output_without_the_final_eval_row():
    truncated = "\n".join(line for line in PEER_OUTPUT.splitlines() if "eval" not in line)
    with pytest.raises(ValueError, match="no final 'eval' row"):
        airbench_compare.parse_peer(truncated)


PEER_RUN_OUTPUT = (Path(__file__).parent / "fixtures" / "peers" / "airbench94_tiny_folder_bf16.txt").read_text()
"""What the fake peer prints: a whole real run (every epoch row, so it can be recorded as a run
directory) on a small image folder (tests/fixtures/peers/README.md): 170.3978 s of training, wall_s 178.0."""
PEER_DECODING_SECONDS = 51.0
"""Start to the peer's own timer: imports and decoding the JPEGs into its (fresh) cache."""
PEER_WHOLE_SECONDS = PEER_DECODING_SECONDS + 178.0
OURS_WHOLE_SECONDS = 1010.0
OURS_MANIFEST_WALL_SECONDS = 999.9


@pytest.fixture()
def fake_world(tmp_path, monkeypatch):
    """Both commands replaced by fakes on a fake clock; the peer's cache directory is checked to start empty."""
    clock = {"now": 1000.0, "caches": []}
    monkeypatch.setattr(airbench_compare, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    monkeypatch.setattr(peer_runs, "versions_of", lambda python: {"python": "3.11.7", "torch": "2.13.0+cpu"})
    monkeypatch.setattr(external_run, "machine_block", lambda: {"cpu": "fake", "cpu_count": 2})  # no TensorFlow import

    def fake_run(command, capture_output, text):
        if command[1] == "-c":  # the peer, through the seed wrapper
            cache = Path(command[-1])
            clock["caches"].append((cache, cache.is_dir() and not any(cache.iterdir())))
            clock["now"] += PEER_WHOLE_SECONDS
            return subprocess.CompletedProcess(command, 0, PEER_RUN_OUTPUT, "")
        run_dir = tmp_path / "runs" / f"run-{len(clock['caches']):03d}"
        run_dir.mkdir(parents=True, exist_ok=True)  # without the peer, every run of ours is run-000
        (run_dir / "manifest.json").write_text(json.dumps({
            "config": {"train": {"precision": "mixed_bfloat16", "epochs": 8}},
            "test": {"accuracy": 0.8957, "tta_accuracy": 0.9007, "tta_seconds": 20.0},
            "speed": {"validation_seconds": 40.0, "peak_rss_mib": 3010.0},
            "wall_seconds": OURS_MANIFEST_WALL_SECONDS, "epochs_completed": 8}))
        (run_dir / "history.csv").write_text("epoch,epoch_seconds\n" + "".join(f"{e},118.0\n" for e in range(1, 9)))
        clock["now"] += OURS_WHOLE_SECONDS
        return subprocess.CompletedProcess(command, 0, f"run directory: {run_dir}\n", "")

    monkeypatch.setattr(airbench_compare.subprocess, "run", fake_run)
    return clock


def test_run_peer_counts_the_whole_command_decoding_included(fake_world, tmp_path):
    result = airbench_compare.run_peer("python", tmp_path, seed=0, precision="bf16")

    (cache, was_empty), = fake_world["caches"]
    assert was_empty, "the peer must get a fresh cache directory, so that it decodes the images as ours does"
    assert not cache.exists(), "the fresh cache is removed afterwards"
    assert result["wall_seconds"] == PEER_WHOLE_SECONDS  # start to exit, decoding included
    assert result["peer_wall_seconds_after_decoding"] == 178.0  # kept apart, not compared
    assert (result["weights"], result["compute"]) == ("bfloat16", "bfloat16")
    assert "run_dir" not in result  # no runs_dir: not recorded


def test_run_peer_records_the_peer_run_as_a_run_directory(fake_world, tmp_path):
    result = airbench_compare.run_peer("python", tmp_path, seed=3, precision="bf16", runs_dir=tmp_path / "runs")

    run_dir = Path(result["run_dir"])
    assert run_dir == tmp_path / "runs" / "peer_airbench94" / "run-001"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert (manifest["engine"], manifest["seed"], manifest["status"]) == ("airbench94", 3, "completed")
    assert manifest["wall_seconds"] == PEER_WHOLE_SECONDS  # the same whole-command timer as the table's
    assert manifest["test"]["accuracy"] == result["accuracy"] / 100 and manifest["test"]["tta_accuracy"] == 0.506
    assert manifest["printed"]["total_time_seconds"] == result["training_seconds"] == 170.3978  # with TTA, as ours
    assert "<seed wrapper> 3 " in manifest["command"] and manifest["command"].endswith("bf16 <fresh cache dir>")
    assert manifest["data"]["validation"].startswith("the test set")
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 10  # header and 10 epoch rows


def test_run_ours_counts_the_whole_command_as_the_peer_is(fake_world, tmp_path):
    result = airbench_compare.run_ours(tmp_path, seed=0, runs_dir=tmp_path / "runs", overrides=[])

    assert result["wall_seconds"] == OURS_WHOLE_SECONDS
    assert result["manifest_wall_seconds"] == OURS_MANIFEST_WALL_SECONDS
    assert result["training_seconds"] == pytest.approx(8 * 118.0 - 40.0 + 20.0)
    assert (result["weights"], result["compute"]) == ("float32", "bfloat16")


def test_run_ours_trains_the_experiment_it_is_given(fake_world, tmp_path):
    muon = REPO / "experiments" / "cifar_fast_muon.toml"
    result = airbench_compare.run_ours(tmp_path, seed=4, runs_dir=tmp_path / "runs", overrides=[], experiment=muon)
    assert result["command"].split()[4:7] == [str(muon), "data.dataset=image_folder", f"data.path={tmp_path}"]
    results = airbench_compare.compare([4], tmp_path, None, tmp_path / "runs", [], experiment=muon)
    assert results["experiment"] == str(muon) and f"ours: {muon}" in results["table"]
    default = airbench_compare.compare([4], tmp_path, None, tmp_path / "runs", [])
    assert f"ours: {REPO / 'experiments' / 'cifar_fast.toml'}" in default["table"]


def test_table_and_files_carry_the_notes_and_like_for_like_wall_seconds(fake_world, tmp_path, capsys):
    results = airbench_compare.compare([0, 1], tmp_path, "python", tmp_path / "runs", [])
    path = airbench_compare.write_results(results, tmp_path / "bench")

    printed = capsys.readouterr().out
    for text in (printed, path.read_text(), path.with_suffix(".csv").read_text()):
        assert "the peer trains bfloat16 weights" in text
        assert "ours keeps float32 master weights" in text and "mixed_bfloat16" in text
        assert "ours' test accuracy is an unbiased estimate for seeds 3 and up only" in text
        assert "re-checked on a held-out split with seed 100" in text
        assert "wall s incl. decoding" in text
    assert "| peer | 0 | bfloat16 / bfloat16 |" in printed and "| ours | 0 | float32 / bfloat16 |" in printed
    assert f"| {PEER_WHOLE_SECONDS:.1f} |" in printed and f"| {OURS_WHOLE_SECONDS:.1f} |" in printed
    assert results["wall_seconds_ratio_ours_over_peer"] == round(OURS_WHOLE_SECONDS / PEER_WHOLE_SECONDS, 3)
    assert results["training_seconds_ratio_ours_over_peer"] == round((8 * 118.0 - 40.0 + 20.0) / 170.3978, 3)
    assert sorted(p.name for p in (tmp_path / "runs" / "peer_airbench94").iterdir()) == ["run-001", "run-002"]
    assert [row["run_dir"] for row in results["peer"]] == [
        str(tmp_path / "runs" / "peer_airbench94" / f"run-00{n}") for n in (1, 2)]

    with open(path.with_suffix(".csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["who"], float(row["wall_seconds"])) for row in rows] == [
        ("peer", PEER_WHOLE_SECONDS), ("peer", PEER_WHOLE_SECONDS), ("ours", OURS_WHOLE_SECONDS), ("ours", OURS_WHOLE_SECONDS)]
    assert float(rows[0]["peer_wall_seconds_after_decoding"]) == 178.0
    assert float(rows[-1]["manifest_wall_seconds"]) == OURS_MANIFEST_WALL_SECONDS
    assert json.loads(path.read_text())["notes"] == results["notes"]


def test_the_side_by_side_renders_a_comparison_report_of_the_recorded_runs(fake_world, tmp_path):
    from lenet_keras import compare as compare_report
    from lenet_keras import compare_stats

    airbench_compare.compare([0, 1], tmp_path, "python", tmp_path / "runs", [])
    index = airbench_compare.render_report(tmp_path / "runs", tmp_path / "reports")
    assert index == tmp_path / "reports" / "compare-cifar-fast" / "index.html"
    runs = compare_report.collect_runs(["peer_airbench94"], tmp_path / "runs")
    (group,) = compare_report.lettered(compare_stats.group_runs([run for _, run in runs]))
    assert len(group.runs) == 2 and group.seeds == [0, 1]
    assert compare_report.legend_label(group, []).endswith("[validated on the test set]")
    assert "| A: peer_airbench94 · airbench94 | 2 | 0 1 |" in index.with_suffix(".md").read_text()


def test_check_names_what_is_missing_and_the_run_checks_the_interpreter_too(tmp_path, monkeypatch, capsys):
    """`--check` (make cifar-fast-bench runs it before creating .venv-peers): the image folder, the
    peers' folder and its script; the run itself also checks that the interpreter imports torch and airbench."""
    monkeypatch.setattr(airbench_compare, "compare", lambda *a, **k: pytest.fail("ran before the checks passed"))
    images, peers = tmp_path / "images", tmp_path / "peers"
    for folder in (images / "train", images / "test", peers):
        folder.mkdir(parents=True)
    base = ["--data-dir", str(images), "--peers-dir", str(peers)]
    assert airbench_compare.main([*base, "--check"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {peers / 'airbench94_cpu.py'}: no such file (airbench94 on the CPU)")
    (peers / "airbench94_cpu.py").write_text("")
    assert airbench_compare.main([*base, "--check"]) == 0
    assert capsys.readouterr().out == f"ok: {images.resolve()}, {peers / 'airbench94_cpu.py'}\n"
    assert airbench_compare.main([*base, "--peer-python", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'absent'}: no such interpreter (the PyTorch peers need Python with torch and airbench)" in err
    assert len(err.splitlines()) == 1 and "make peers-venv" in err
    assert airbench_compare.main(["--data-dir", str(images), "--peers-dir", "none", "--peer-python", "none", "--check"]) == 0
    assert capsys.readouterr().out.endswith("(ours only)\n")


def test_run_peer_runs_the_script_of_the_peers_folder(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(airbench_compare, "timed_run", lambda command, who: seen.append(command) or (
        subprocess.CompletedProcess(command, 0, PEER_RUN_OUTPUT, ""), 10.0))
    airbench_compare.run_peer("python", tmp_path, seed=0, precision="bf16", peers_dir=tmp_path / "peers")
    assert seen[0][4] == str(tmp_path / "peers" / "airbench94_cpu.py")
