"""Opening an SQLite MLflow store (issue 12 items 9 and 10): several runs may create one new
store at once, and another application's SQLite file is refused and left untouched."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ife_command, subprocess_env

from ife_platform import tracking

# One process: wait for the "go" file, then open the store and log a run, as `ife train` does.
CHILD = """
import sys, time
from pathlib import Path
import mlflow
from ife_platform import tracking

uri, go = sys.argv[1], Path(sys.argv[2])
Path(f"{go}.ready{sys.argv[3]}").touch()
while not go.exists():
    time.sleep(0.002)
uri = tracking.open_tracking_store(uri)
client = mlflow.MlflowClient(uri)
exp = tracking.ensure_experiment(client, "together")
run = client.create_run(exp).info.run_id
client.log_metric(run, "x", float(sys.argv[3]))
client.set_terminated(run)
print(run)
"""


def test_processes_starting_together_share_one_new_store(tmp_path: Path) -> None:
    """Without the lock most of them die in MLflow's schema creation (``table latest_metrics
    already exists``, ``duplicate column name: step``, an alembic revision mismatch)."""
    n = 4
    db = tmp_path / "store" / "mlflow.db"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, f"sqlite:///{db}", str(go), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    deadline = time.monotonic() + 240
    while len(list(tmp_path.glob("go.ready*"))) < n:  # every process has imported mlflow
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.02)
    go.touch()
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("together")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(out.strip() for out, _ in outs)
    assert sorted(r.data.metrics["x"] for r in runs) == [0.0, 1.0, 2.0, 3.0]
    assert (db.parent / "mlflow.db.lock").exists()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _foreign_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("create table notes (id integer primary key, text text)")
    conn.executemany("insert into notes (text) values (?)", [("a",), ("b",)])
    conn.commit()
    conn.close()
    return path


def test_another_applications_database_is_refused_untouched(tmp_path: Path) -> None:
    db = _foreign_db(tmp_path / "mlflow.db")
    before = _sha256(db)
    for call in (tracking.open_tracking_store, tracking.check_tracking_reachable):
        with pytest.raises(tracking.ForeignDatabaseError, match="another application") as err:
            call(f"sqlite:///{db}")
        assert "notes" in str(err.value) and "mlflow_runs.db" in str(err.value)
        assert isinstance(err.value, tracking.TrackingUnreachableError)
    from ife_platform.cli import main

    assert main(["ui", f"tracking.uri=sqlite:///{db}"]) == 2  # refused before the UI starts
    assert _sha256(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_cli_refuses_a_foreign_store_with_exit_2(tmp_path: Path) -> None:
    db = _foreign_db(tmp_path / "app.db")
    before = _sha256(db)
    proc = subprocess.run(
        [*ife_command(), "train", "demo", f"tracking.uri=sqlite:///{db}"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "another application" in proc.stderr and "Traceback" not in proc.stderr
    assert _sha256(db) == before
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("start", ["missing", "empty"])
def test_missing_or_empty_file_becomes_an_mlflow_store(tmp_path: Path, start: str) -> None:
    db = tmp_path / "runs.db"
    if start == "empty":
        db.write_bytes(b"")
    uri = tracking.open_tracking_store(f"sqlite:///{db}")
    assert uri == f"sqlite:///{db}"
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master")}
    assert {"alembic_version", "experiments", "runs", "latest_metrics"} <= tables
    assert tracking.open_tracking_store(uri) == uri  # an MLflow store opens again


def test_retry_if_locked_waits_out_a_real_lock(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")  # nobody else may read or write
    release = threading.Timer(0.5, holder.execute, args=("commit",))
    release.start()

    def write() -> int:
        conn = sqlite3.connect(db, timeout=0)  # fail at once while locked
        try:
            conn.execute("insert into t values (1)")
            conn.commit()
            return 1
        finally:
            conn.close()

    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        write()
    start = time.monotonic()
    assert tracking.retry_if_locked(write) == 1
    assert time.monotonic() - start >= 0.3  # it waited for the holder
    release.join()
    holder.close()
    calls = []

    def broken() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such table: nope")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        tracking.retry_if_locked(broken)
    assert calls == [1]  # other errors are not retried


def test_moved_store_reads_its_artifacts_and_opens_on_the_runs(tmp_path: Path) -> None:
    """A store folder (database + mlartifacts) moved elsewhere opens with its artifacts."""
    import shutil

    from mlflow import MlflowClient
    from mlflow.utils.file_utils import local_file_uri_to_path

    from ife_platform.tracking import (
        EXPERIMENT_KIND,
        EXPERIMENT_KIND_TAG,
        ensure_experiment,
        log_artifact_once,
        open_tracking_store,
        run_url,
    )

    first = tmp_path / "first"
    uri = open_tracking_store(f"sqlite:///{first / 'mlflow.db'}")
    client = MlflowClient(uri)
    exp = ensure_experiment(client, "ife")
    assert client.get_experiment(exp).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    run_id = client.create_run(exp).info.run_id
    note = tmp_path / "note.txt"
    note.write_text("hello")
    client.log_artifact(run_id, str(note), "docs")
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"weights")
    log_artifact_once(client, run_id, ckpt, "checkpoints")  # a hard link, not a copy
    root = Path(local_file_uri_to_path(client.get_run(run_id).info.artifact_uri))
    assert (root / "checkpoints" / "last.ckpt").samefile(ckpt)

    moved = tmp_path / "elsewhere" / "store"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    new_uri = open_tracking_store(f"sqlite:///{moved / 'mlflow.db'}")
    client = MlflowClient(new_uri)
    run = client.get_run(run_id)
    assert run.info.artifact_uri.startswith((moved / "mlartifacts").as_uri())
    assert client.get_experiment(exp).artifact_location == (moved / "mlartifacts").as_uri()
    got = Path(client.download_artifacts(run_id, "docs/note.txt", str(tmp_path)))
    assert got.read_text() == "hello"
    assert {a.path for a in client.list_artifacts(run_id, "checkpoints")} == {
        "checkpoints/last.ckpt"
    }
    # a second open changes nothing; new runs go to the moved folder
    assert open_tracking_store(new_uri) == new_uri
    assert client.create_run(exp).info.artifact_uri.startswith((moved / "mlartifacts").as_uri())
    assert run_url(new_uri, exp, run_id) == (
        f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run_id}?workflowType=machine_learning"
    )
