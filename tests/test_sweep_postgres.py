"""Sweeps shared through a PostgreSQL-backed Optuna study, as workers on several machines share
one: several worker processes claim trials from one study on a real server and no trial runs
twice.

The server's SQLAlchemy URL comes from $LENET_KERAS_POSTGRES_URL; `.ci/run` starts a throwaway
server with `.ci/postgres` and sets it. Without a reachable server these tests are skipped,
except in CI ($CI set), where they must run and so fail instead. Every test works on a study of
its own name, deleted afterwards, so a server reused across runs never shows old trials.
"""

import os
import uuid
from collections import Counter

import pandas as pd
import pytest

from lenet_keras import sweep, sweep_study

from .conftest import missing_shared
from .sweep_helpers import race_claimers, write_sweep

URL_ENV_VAR = "LENET_KERAS_POSTGRES_URL"
GRID_SPACE = '"optimizer.learning_rate" = [0.01, 0.03, 0.1]\n"train.batch_size" = [64, 128]'


@pytest.fixture(scope="module")
def postgres_url() -> str:
    """The server's URL, checked with one query; skip (fail in CI) when there is none."""
    import sqlalchemy

    from lenet_keras import manifest

    url = os.environ.get(URL_ENV_VAR, "")
    problem = None if url else f"set {URL_ENV_VAR}, e.g. via .ci/postgres"
    if url:
        engine = None
        try:  # a bad URL or a missing driver (psycopg2) fails in create_engine, before connecting
            engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 10})
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT 1"))
        except Exception as error:  # noqa: BLE001 - any reason the server cannot be used
            reason = (str(getattr(error, "orig", None) or error).strip().splitlines() or [""])[0]
            problem = f"{URL_ENV_VAR} is set, but: {type(error).__name__}: {manifest.mask_password(reason)}"
        finally:
            if engine is not None:
                engine.dispose()
    if problem is None:
        return url
    missing_shared(f"a PostgreSQL server ({problem})")


@pytest.fixture()
def study_name(postgres_url):
    """A study name no earlier run used; the study is deleted after the test."""
    import optuna

    name = f"pg_{uuid.uuid4().hex[:12]}"
    yield name
    storage = optuna.storages.RDBStorage(postgres_url)
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:  # the test failed before creating it
        pass
    finally:
        storage.engine.dispose()


def _query(url: str, sql: str, **params) -> list:
    """Rows of one SQL query, straight from the database (not through Optuna)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text(sql), params).fetchall()
    finally:
        engine.dispose()


def _trial_rows(url: str, name: str) -> list:
    """(number, state, datetime_start, datetime_complete) of every trial of study `name`."""
    return _query(url, "SELECT t.number, t.state, t.datetime_start, t.datetime_complete FROM trials t "
                       "JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = :name ORDER BY t.number",
                  name=name)


def test_claiming_workers_on_postgres_take_each_waiting_trial_once(postgres_url, study_name):
    """Optuna level, no training: 3 processes race for 30 WAITING trials through row locks."""
    claimed = race_claimers(postgres_url, study_name)
    everything = [number for numbers in claimed for number in numbers]
    assert sorted(everything) == list(range(30)), f"claimed: {claimed}"  # each trial exactly once
    assert sum(1 for numbers in claimed if numbers) >= 2, f"only one worker claimed trials: {claimed}"
    rows = _trial_rows(postgres_url, study_name)
    assert [r.number for r in rows] == list(range(30)) and {r.state for r in rows} == {"COMPLETE"}


def test_three_sweep_workers_on_one_postgres_study_run_each_grid_point_once(tmp_path, mnist_dir, postgres_url,
                                                                            study_name):
    """Three `sweep --worker-only` processes (as on three machines) on a 6-point grid."""
    path = write_sweep(tmp_path, "shared_pg", f'method = "grid"\nname = "{study_name}"', GRID_SPACE)
    plan = sweep_study.load(path, storage=postgres_url)
    runs = tmp_path / "runs"
    table = pd.read_csv(sweep.run_sweep(plan, runs_dir=runs, data_dir=mnist_dir, workers=3))

    # trials.csv and the run folders: every point once, every trial a complete run
    assert len(table) == 6 and set(table["state"]) == {"complete"}
    assert len(set(zip(table["optimizer.learning_rate"], table["train.batch_size"]))) == 6
    assert sorted(p.name for p in (runs / study_name).glob("trial-*")) == [f"trial-{n:03d}" for n in range(6)]
    assert not (runs / study_name / "study.db").exists()  # the study lives in PostgreSQL only

    # the database itself: 6 trials of this study, all COMPLETE, each grid point once
    rows = _trial_rows(postgres_url, study_name)
    assert [r.number for r in rows] == list(range(6)) and {r.state for r in rows} == {"COMPLETE"}
    params = _query(postgres_url, "SELECT t.number, p.param_name, p.param_value FROM trial_params p "
                                  "JOIN trials t ON t.trial_id = p.trial_id JOIN studies s ON s.study_id = t.study_id "
                                  "WHERE s.study_name = :name", name=study_name)
    points = {}
    for number, param, value in params:  # categorical values are stored as the index of the choice
        points.setdefault(number, {})[param] = int(value)
    assert Counter(tuple(sorted(p.items())) for p in points.values()) == Counter(
        (("optimizer.learning_rate", lr), ("train.batch_size", bs)) for lr in range(3) for bs in range(2))

    # More than one worker ran trials: a worker runs its trials one after another, so two trials
    # whose [claimed, finished] intervals overlap ran in two workers. Workers claim before they
    # import TensorFlow, so all three hold a trial within about a second of starting.
    spans = sorted((r.datetime_start, r.datetime_complete) for r in rows)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])), spans


def test_database_passwords_are_masked_in_recorded_command_lines():
    from lenet_keras import manifest

    assert manifest.mask_password("sweep f.toml --storage postgresql://lenet:s3cr3t@127.0.0.1:5432/db --worker-only") == \
        "sweep f.toml --storage postgresql://lenet:***@127.0.0.1:5432/db --worker-only"
    assert manifest.mask_password("sqlite:////tmp/study.db") == "sqlite:////tmp/study.db"
