import http.server
import platform
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ife_platform import tracking

ENV = tracking.TRACKING_URI_ENV


@pytest.fixture
def no_env_uri(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


# ---------------------------------------------------------------- URI resolution


def test_explicit_uri_beats_env(monkeypatch):
    monkeypatch.setenv(ENV, "http://127.0.0.1:5999")
    assert tracking.resolve_tracking_uri("sqlite:////data/runs.db") == "sqlite:////data/runs.db"


@pytest.mark.parametrize("unset", [None, "", "  "])
def test_env_used_when_uri_unset(monkeypatch, unset):
    monkeypatch.setenv(ENV, "http://127.0.0.1:5999")
    assert tracking.resolve_tracking_uri(unset) == "http://127.0.0.1:5999"


def test_default_is_absolute_sqlite_in_cwd(monkeypatch, tmp_path, no_env_uri):
    monkeypatch.chdir(tmp_path)
    uri = tracking.resolve_tracking_uri(None)
    assert uri == f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    assert uri.startswith("sqlite:////")  # four slashes: absolute path


def test_relative_sqlite_made_absolute(monkeypatch, tmp_path, no_env_uri):
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_tracking_uri("sqlite:///out/m.db") == f"sqlite:///{tmp_path}/out/m.db"
    assert tracking.resolve_tracking_uri("sqlite:///:memory:") == "sqlite:///:memory:"
    assert tracking.resolve_tracking_uri("databricks") == "databricks"


@pytest.mark.parametrize(
    "bad", ["mlruns", "./mlruns", "/tmp/mlruns", "file:./mlruns", "file:///tmp/mlruns"]
)
def test_file_store_rejected_with_sqlite_suggestion(bad, no_env_uri):
    with pytest.raises(tracking.TrackingConfigError, match=r"file store.*sqlite:///.*mlflow\.db"):
        tracking.resolve_tracking_uri(bad)


def test_file_store_in_env_rejected_naming_the_env_var(monkeypatch):
    monkeypatch.setenv(ENV, "./mlruns")
    with pytest.raises(tracking.TrackingConfigError, match=r"\$MLFLOW_TRACKING_URI"):
        tracking.resolve_tracking_uri(None)


# ---------------------------------------------------------------- reachability


def _free_closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_http_fails_fast():
    uri = f"http://127.0.0.1:{_free_closed_port()}"
    start = time.monotonic()
    with pytest.raises(tracking.TrackingUnreachableError, match="did not answer"):
        tracking.check_tracking_reachable(uri, timeout_s=3.0)
    assert time.monotonic() - start < 1.0  # refused at once, no retries


def test_silent_http_server_times_out_within_budget():
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(tracking.TrackingUnreachableError, match="did not answer"):
            tracking.check_tracking_reachable(uri, timeout_s=0.5)
        assert time.monotonic() - start < 1.5


class _Handler(http.server.BaseHTTPRequestHandler):
    ok_paths: tuple[str, ...] = ()

    def do_GET(self):  # noqa: N802
        self.send_response(200 if self.path.startswith(self.ok_paths) else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    ("ok_paths", "reachable"),
    [(("/health",), True), (("/api/2.0/mlflow/",), True), ((), False)],
)
def test_http_server_that_answers(ok_paths, reachable):
    handler = type("H", (_Handler,), {"ok_paths": ok_paths})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}/"
        if reachable:
            tracking.check_tracking_reachable(uri, timeout_s=2.0)
        else:
            with pytest.raises(tracking.TrackingUnreachableError, match="HTTP 404"):
                tracking.check_tracking_reachable(uri, timeout_s=2.0)
    finally:
        server.shutdown()
        server.server_close()


def test_corrupt_database_file_rejected(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database at all")
    with pytest.raises(tracking.TrackingUnreachableError, match="not an SQLite database"):
        tracking.check_tracking_reachable(f"sqlite:///{db}")


def test_sqlite_checks_pass_for_new_empty_and_real_db(tmp_path):
    tracking.check_tracking_reachable(f"sqlite:///{tmp_path / 'new' / 'sub' / 'm.db'}")
    assert (tmp_path / "new" / "sub").is_dir()  # folder created, database left to MLflow
    (tmp_path / "empty.db").write_bytes(b"")
    tracking.check_tracking_reachable(f"sqlite:///{tmp_path / 'empty.db'}")
    conn = sqlite3.connect(tmp_path / "real.db")  # an MLflow store (its marker tables)
    conn.execute("create table alembic_version (version_num)").connection.close()
    tracking.check_tracking_reachable(f"sqlite:///{tmp_path / 'real.db'}")
    sqlite3.connect(tmp_path / "app.db").execute("create table t (x)").connection.close()
    with pytest.raises(tracking.ForeignDatabaseError):  # another program's (test_tracking_store)
        tracking.check_tracking_reachable(f"sqlite:///{tmp_path / 'app.db'}")


def test_sqlite_path_that_is_a_folder_rejected(tmp_path):
    with pytest.raises(tracking.TrackingUnreachableError, match="is a folder"):
        tracking.check_tracking_reachable(f"sqlite:///{tmp_path}")


def test_check_rejects_file_store():
    with pytest.raises(tracking.TrackingConfigError):
        tracking.check_tracking_reachable("file:///tmp/mlruns")


# ---------------------------------------------------------------- params helpers


def test_flatten_dict_and_param_keys():
    nested = {"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}, "f": None}
    assert tracking.flatten_dict(nested) == {"a.b": 1, "a.c.d": [1, 2], "e": {}, "f": None}
    assert tracking.flatten_dict({"x": {"y": 2}}, prefix="cfg") == {"cfg.x.y": 2}
    assert tracking.sanitize_param_key("model.kwargs[0]:w") == "model.kwargs_0__w"
    assert len(tracking.sanitize_param_key("k" * 400)) == 250


# ---------------------------------------------------------------- real sqlite store


@pytest.fixture
def git_repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=repo,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    (repo / "a.txt").write_text("1")
    git("init", "-q")
    git("add", "a.txt")
    git("commit", "-q", "-m", "init")
    return repo, git("rev-parse", "HEAD")


def test_git_info_commit_and_dirty(git_repo, tmp_path):
    repo, sha = git_repo
    assert tracking.git_info(repo) == {"git.commit": sha, "git.dirty": "false"}
    (repo / "untracked.txt").write_text("x")  # untracked files do not count
    assert tracking.git_info(repo)["git.dirty"] == "false"
    (repo / "a.txt").write_text("2")
    assert tracking.git_info(repo)["git.dirty"] == "true"
    (tmp_path / "plain").mkdir()
    assert tracking.git_info(tmp_path / "plain")["git.commit"] == "unavailable"


def test_real_sqlite_run_gets_config_params_versions_git(tmp_path, monkeypatch, git_repo):
    mlflow = pytest.importorskip("mlflow")
    repo, sha = git_repo
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV, raising=False)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    cfg_yaml = "optim:\n  lr: 0.0001\nenv:\n  game: pong\n"
    params = {
        "optim": {"lr": 1e-4},
        "env.game": "pong",
        "long": "x" * 7000,
        "many": {f"k{i}": i for i in range(230)},  # > 2 batches of 100
    }
    try:
        with tracking.start_run(uri, "unit-test", run_name="r1", tags={"agent": "der"}) as run:
            logged = tracking.log_config(cfg_yaml, params)
            tags = tracking.log_environment(project_dir=repo)
        run_id = run.info.run_id
        # resuming the same run works and logs the same params again without error
        with tracking.start_run(uri, "unit-test", run_id=run_id):
            tracking.log_config(cfg_yaml, params)
    finally:
        mlflow.set_tracking_uri(None)

    client = mlflow.MlflowClient(uri)
    r = client.get_run(run_id)
    assert r.info.status == "FINISHED" and r.info.run_name == "r1"
    assert r.data.tags["agent"] == "der"
    p = r.data.params
    assert p["optim.lr"] == "0.0001" and p["env.game"] == "pong" and p["many.k229"] == "229"
    assert len(p) == 233 == len(logged)
    assert len(p["long"]) == 6000 and p["long"].endswith("...[truncated]")
    # artifact next to the database, not in ./mlruns of the cwd
    assert [a.path for a in client.list_artifacts(run_id)] == ["config.yaml"]
    assert r.info.artifact_uri.startswith((tmp_path / "store" / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()
    local = client.download_artifacts(run_id, "config.yaml", str(tmp_path))
    assert Path(local).read_text() == cfg_yaml
    # environment tags
    t = r.data.tags
    assert t["version.mlflow"] == mlflow.__version__
    assert t["version.numpy"] == tags["version.numpy"] != "not installed"
    assert t["version.python"] == platform.python_version()
    assert {f"version.{name}" for name in tracking.ENV_PACKAGES} <= set(t)
    assert t["git.commit"] == sha == t["mlflow.source.git.commit"]
    assert t["git.dirty"] == "false"


def test_log_without_active_run_raises():
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        tracking.log_config("a: 1\n", {"a": 1})
