"""`rundir.next_numbered_path`: the numbered result files of bench and airbench_compare."""

from lenet_keras import rundir


def test_next_numbered_path_is_one_more_than_the_largest_and_creates_the_folder(tmp_path):
    out = tmp_path / "out"
    first = rundir.next_numbered_path(out, "bench", ".json")
    assert first == out / "bench-001.json"
    (out / "bench-007.json").write_text("{}")
    (out / "bench-009.csv").write_text("")  # another suffix: not counted
    (out / "airbench-042.json").write_text("{}")  # another prefix: not counted
    assert rundir.next_numbered_path(out, "bench", ".json") == out / "bench-008.json"


def test_next_numbered_path_ignores_names_that_are_not_numbered(tmp_path):
    (tmp_path / "airbench-old.json").write_text("{}")
    (tmp_path / "airbench-.json").write_text("{}")
    (tmp_path / "airbench-002.json.tmp").write_text("")
    assert rundir.next_numbered_path(tmp_path, "airbench", ".json") == tmp_path / "airbench-001.json"


def test_next_numbered_path_reserves_the_name(tmp_path):
    first = rundir.next_numbered_path(tmp_path, "bench", ".json")
    assert first.is_file() and first.read_bytes() == b""
    second = rundir.next_numbered_path(tmp_path, "bench", ".json")
    assert (first.name, second.name) == ("bench-001.json", "bench-002.json")


def test_next_numbered_path_skips_a_name_taken_meanwhile(tmp_path, monkeypatch):
    real_open = rundir.os.open
    taken = []

    def racing_open(path, flags, mode=0o777):
        if not taken:  # another process creates the name between the listing and the create
            taken.append(path)
            real_open(path, flags, mode)
        return real_open(path, flags, mode)

    monkeypatch.setattr(rundir.os, "open", racing_open)
    path = rundir.next_numbered_path(tmp_path, "bench", ".json")
    assert taken == [tmp_path / "bench-001.json"] and path == tmp_path / "bench-002.json"


def test_training_seconds_are_the_epochs_without_their_validation_passes():
    assert rundir.seconds_block(10.0, 2.5) == {"training_seconds": 7.5, "validation_seconds": 2.5}
    assert rundir.seconds_block(10.0, None) == {"training_seconds": None, "validation_seconds": None}
