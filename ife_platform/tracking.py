"""MLflow tracking: URI resolution, a fast reachability check, config and environment logging.

Facts this module is built around (stack-facts.md, "MLflow"):

- MLflow 3.13+ refuses the old ``./mlruns`` file store; the default store is SQLite. A plain path
  or ``file:`` URI is therefore rejected here with a suggestion instead of failing deep inside
  MLflow (or inside Lightning's ``MLFlowLogger``, which still defaults to ``file:./mlruns``).
- MLflow's HTTP client retries an unreachable server for minutes. :func:`check_tracking_reachable`
  answers within ``timeout_s`` with :class:`TrackingUnreachableError` instead.
- With a SQLite store MLflow puts artifacts under ``./mlruns`` of the *current* directory unless an
  experiment says otherwise; :func:`default_artifact_location` keeps them next to the database.

``mlflow`` is imported lazily so that resolving or checking a URI stays cheap.
"""

from __future__ import annotations

import base64
import fcntl
import importlib.util
import os
import platform
import re
import sqlite3
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

if TYPE_CHECKING:
    from mlflow import ActiveRun, MlflowClient

__all__ = [
    "ENV_PACKAGES",
    "MAX_PARAM_VALUE_LENGTH",
    "ForeignDatabaseError",
    "TrackingConfigError",
    "TrackingUnreachableError",
    "check_tracking_reachable",
    "default_artifact_location",
    "ensure_experiment",
    "flatten_dict",
    "git_info",
    "log_artifact_once",
    "log_config",
    "log_environment",
    "missing_store_driver",
    "open_tracking_store",
    "resolve_tracking_uri",
    "reroot_artifacts",
    "retry_if_locked",
    "run_url",
    "sanitize_param_key",
    "start_run",
]

T = TypeVar("T")

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
MAX_PARAM_VALUE_LENGTH = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_PARAM_KEY_LENGTH = 250  # mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH
PARAMS_PER_BATCH = 100  # mlflow.utils.validation.MAX_PARAMS_TAGS_PER_BATCH
SQLITE_HEADER = b"SQLite format 3\x00"

ENV_PACKAGES: tuple[str, ...] = (
    "ife-platform",
    "torch",
    "torchrl",
    "tensordict",
    "lightning",
    "gymnasium",
    "ale-py",
    "omegaconf",
    "mlflow",
    "numpy",
)
"""Distributions whose versions :func:`log_environment` records as ``version.<name>`` tags."""

_BARE_WORD_URIS = {"databricks", "databricks-uc", "uc"}
_PROJECT_DIR = Path(__file__).resolve().parent.parent


class TrackingConfigError(ValueError):
    """The tracking URI is not usable as configured (e.g. an unsupported file store)."""


class TrackingUnreachableError(RuntimeError):
    """The tracking backend does not answer or cannot be written to."""


class ForeignDatabaseError(TrackingUnreachableError):
    """The ``sqlite:///`` store path holds another application's database (left untouched)."""


# --------------------------------------------------------------------------------------------
# URI resolution and checks
# --------------------------------------------------------------------------------------------


def _sqlite_suggestion(path: str) -> str:
    p = Path(path).expanduser().absolute()
    target = p if p.suffix == ".db" else p / "mlflow.db"
    return f"sqlite:///{target}"


def _sqlite_path(uri: str) -> str | None:
    """Database path of a ``sqlite:///`` URI, or None for an in-memory database."""
    rest = uri.split("?", 1)[0]
    rest = rest[len("sqlite://") :]  # "/rel.db", "//abs.db", "" (memory)
    if rest in ("", "/", "/:memory:"):
        return None
    return rest[1:]  # "rel.db" or "/abs.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Resolve the tracking URI: explicit > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///<cwd>/mlflow.db``.

    Relative SQLite paths are made absolute (against the current directory), so the logged URI
    and every process agree on one database. Empty strings count as unset.

    Args:
        uri: The configured URI (``tracking.uri``), or None.

    Returns:
        The URI to hand to MLflow.

    Raises:
        TrackingConfigError: For a plain filesystem path or a ``file:`` URI (the file store that
            MLflow 3.13+ refuses); the message suggests the equivalent ``sqlite:///`` URI.
    """
    source = "tracking.uri"
    candidate = uri.strip() if uri else ""
    if not candidate:
        source = f"${TRACKING_URI_ENV}"
        candidate = os.environ.get(TRACKING_URI_ENV, "").strip()
    if not candidate:
        return f"sqlite:///{Path.cwd().absolute() / 'mlflow.db'}"

    if candidate.lower() in _BARE_WORD_URIS:
        return candidate
    parsed = urlparse(candidate)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file") or len(scheme) == 1:  # len 1: a Windows drive letter "C:\..."
        path = parsed.path if scheme == "file" else candidate
        raise TrackingConfigError(
            f"tracking URI {candidate!r} (from {source}) is a file store; MLflow 3.13+ no longer "
            f"supports the ./mlruns file store. Use a SQLite database instead, e.g. "
            f"{_sqlite_suggestion(path or 'mlruns')!r}, or an http(s):// tracking server."
        )
    if scheme == "sqlite":
        path = _sqlite_path(candidate)
        if path is not None and not path.startswith("/"):
            query = candidate[len(candidate.split("?", 1)[0]) :]
            return f"sqlite:///{Path(path).expanduser().absolute()}{query}"
    return candidate


#: SQLAlchemy database URIs MLflow takes (``dialect[+driver]://``): the module each driver
#: imports and the pip package that provides it. A bare dialect uses SQLAlchemy's default.
DB_DRIVERS: dict[str, tuple[str, str]] = {
    "postgresql": ("psycopg2", "psycopg2-binary"),
    "postgresql+psycopg2": ("psycopg2", "psycopg2-binary"),
    "postgresql+psycopg": ("psycopg", "psycopg[binary]"),
    "postgresql+pg8000": ("pg8000", "pg8000"),
    "mysql": ("MySQLdb", "mysqlclient"),
    "mysql+mysqldb": ("MySQLdb", "mysqlclient"),
    "mysql+pymysql": ("pymysql", "PyMySQL"),
    "mysql+mysqlconnector": ("mysql.connector", "mysql-connector-python"),
    "mssql": ("pyodbc", "pyodbc"),
    "mssql+pyodbc": ("pyodbc", "pyodbc"),
    "mssql+pymssql": ("pymssql", "pymssql"),
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package of a dotted name
        return False


def missing_store_driver(uri: str | None) -> str | None:
    """Why a database tracking store cannot be opened with the installed packages, or None.

    Checks that the database driver of a ``postgresql://``, ``mysql://`` or ``mssql://``
    (``+driver`` included) URI is importable, without importing it or connecting. ``uri`` is
    ``tracking.uri`` (None: ``$MLFLOW_TRACKING_URI``); other schemes answer None.

    Args:
        uri: The configured tracking URI, or None.

    Returns:
        A message naming the store and the package to install, or None.
    """
    candidate = (uri or "").strip() or os.environ.get(TRACKING_URI_ENV, "").strip()
    scheme = urlparse(candidate).scheme.lower()
    if scheme not in DB_DRIVERS:
        return None
    module, package = DB_DRIVERS[scheme]
    if _importable(module):
        return None
    return (
        f"the {scheme.split('+')[0]} tracking store {scheme}://... needs the database driver "
        f"module {module}, which is not installed; install it with `pip install {package}` "
        f"(or name an installed driver in the URI: {scheme.split('+')[0]}+DRIVER://)"
    )


def _auth_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        cred = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {cred}"}
    return {}


def _ssl_context() -> ssl.SSLContext | None:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()  # the user opted out of verification, as in MLflow
    cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return ssl.create_default_context(cafile=cert) if cert else None


def _http_get(url: str, timeout: float) -> int:
    """GET ``url``; return the HTTP status (errors statuses included); OSError if no answer."""
    req = urllib.request.Request(url, headers=_auth_headers(), method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_ssl_context()) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _check_http(uri: str, timeout_s: float) -> None:
    base = uri.rstrip("/")
    deadline = time.monotonic() + timeout_s
    status = 0
    for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            status = _http_get(base + path, remaining)
        except (OSError, ValueError) as err:  # refused, timeout, DNS, TLS, reset, bad URL
            reason = getattr(err, "reason", err)
            raise TrackingUnreachableError(
                f"MLflow tracking server {uri} did not answer within {timeout_s:g} s ({reason}). "
                f"Start it (e.g. `mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri "
                f"sqlite:///mlflow.db`), fix tracking.uri / ${TRACKING_URI_ENV}, or use a local "
                f"sqlite:/// URI."
            ) from err
        if 200 <= status < 300:
            return
        if status in (401, 403):
            raise TrackingUnreachableError(
                f"MLflow tracking server {uri} refused access (HTTP {status}); set "
                f"MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD."
            )
        if status >= 500:
            break
    raise TrackingUnreachableError(
        f"{uri} answered HTTP {status or 'nothing in time'} on /health and the experiments API: "
        f"it does not look like a working MLflow tracking server."
    )


def _check_sqlite(uri: str, create_dirs: bool) -> None:
    path_str = _sqlite_path(uri)
    if path_str is None:  # in-memory database
        return
    db = Path(path_str)
    parent = db.parent
    if not parent.exists():
        if not create_dirs:
            raise TrackingUnreachableError(f"folder {parent} of the tracking database is missing")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingUnreachableError(
                f"cannot create folder {parent} for the tracking database {uri}: {err}"
            ) from err
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TrackingUnreachableError(
            f"folder {parent} of the tracking database {uri} is not writable "
            f"(SQLite also writes a journal file next to the database)."
        )
    if not db.exists():
        return  # MLflow creates it
    if db.is_dir():
        raise TrackingUnreachableError(
            f"tracking database path {db} is a folder, not a file; point tracking.uri at a "
            f"file, e.g. sqlite:///{db / 'mlflow.db'}"
        )
    if not os.access(db, os.R_OK | os.W_OK):
        raise TrackingUnreachableError(f"tracking database {db} is not readable and writable")
    with db.open("rb") as fh:
        header = fh.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        other = parent / ("mlflow.db" if db.name != "mlflow.db" else "mlflow_runs.db")
        raise TrackingUnreachableError(
            f"{db} exists but is not an SQLite database (it starts with {header!r}, not "
            f"{SQLITE_HEADER!r}); move it away or point tracking.uri at another file, "
            f"e.g. sqlite:///{other}"
        )
    if header:
        _refuse_foreign_database(db)


#: Tables whose presence marks an SQLite file as an MLflow store (alembic's version table is
#: the first thing MLflow's schema creation writes; ``experiments`` its first own table).
MLFLOW_MARKER_TABLES = frozenset({"alembic_version", "experiments"})


def _table_names(db: Path) -> set[str]:
    """Tables of an SQLite file, read through a read-only connection (the file is not written)."""
    try:
        conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        raise TrackingUnreachableError(f"cannot read the tracking database {db}: {err}") from err
    return {str(name) for (name,) in rows if not str(name).startswith("sqlite_")}


def _refuse_foreign_database(db: Path) -> None:
    """Refuse an SQLite file with tables of which none is MLflow's (another program's data)."""
    tables = _table_names(db)
    if tables and not tables & MLFLOW_MARKER_TABLES:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        other = db.parent / ("mlflow.db" if db.name != "mlflow.db" else "mlflow_runs.db")
        raise ForeignDatabaseError(
            f"{db} is an SQLite database of another application (tables: {shown}; none of "
            f"MLflow's), so it was left untouched: MLflow would add its tables to it. Point "
            f"tracking.uri at a new or an MLflow database, e.g. sqlite:///{other}"
        )


def check_tracking_reachable(uri: str, timeout_s: float = 5.0, create_dirs: bool = True) -> None:
    """Fail fast, with a clear message, if the tracking backend cannot be used.

    - ``http(s)://``: GET ``/health`` (then ``/api/2.0/mlflow/experiments/search`` if that is not
      found) with plain urllib and no retries; returns within about ``timeout_s``. Honours
      ``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``,
      ``MLFLOW_TRACKING_INSECURE_TLS`` and ``MLFLOW_TRACKING_SERVER_CERT_PATH``.
    - ``sqlite:///``: the database folder must be writable (it is created if missing and
      ``create_dirs``), and an existing non-empty database file must start with the SQLite
      header ``SQLite format 3`` (plus a NUL byte) and be MLflow's: a database with tables,
      none of them MLflow's, is refused with :class:`ForeignDatabaseError` and not touched.
    - ``postgresql``, ``mysql``, ``mssql``: the database driver must be installed
      (:func:`missing_store_driver`); nothing connects.
    - Other schemes (databricks, ...) are not checked.

    Args:
        uri: A resolved tracking URI (see :func:`resolve_tracking_uri`).
        timeout_s: Time budget for the HTTP check, in seconds.
        create_dirs: Create a missing database folder for SQLite URIs.

    Raises:
        TrackingUnreachableError: If the backend does not answer or cannot be written
            (:class:`ForeignDatabaseError` for another application's SQLite file).
        TrackingConfigError: For a file-store path or ``file:`` URI, or a database store
            whose driver is not installed.
    """
    scheme = urlparse(uri).scheme.lower()
    driver_problem = missing_store_driver(uri)
    if driver_problem is not None:
        raise TrackingConfigError(driver_problem)
    if scheme in ("http", "https"):
        _check_http(uri, timeout_s)
    elif scheme == "sqlite":
        _check_sqlite(resolve_tracking_uri(uri), create_dirs)
    elif uri.lower() not in _BARE_WORD_URIS and (scheme in ("", "file") or len(scheme) == 1):
        resolve_tracking_uri(uri)  # raises the file-store message


def default_artifact_location(uri: str) -> str | None:
    """Artifact folder to give new experiments: ``<database folder>/mlartifacts`` for SQLite.

    Without it MLflow stores a SQLite-backed run's artifacts under ``./mlruns`` of whatever the
    current directory is. Pass it as ``artifact_location`` to Lightning's ``MLFlowLogger`` too.

    Args:
        uri: A tracking URI.

    Returns:
        A ``file://`` URI for SQLite stores, None otherwise (the server or store decides).
    """
    if urlparse(uri).scheme.lower() != "sqlite":
        return None
    path = _sqlite_path(resolve_tracking_uri(uri))
    if path is None:
        return None
    return (Path(path).parent / "mlartifacts").as_uri()


# --------------------------------------------------------------------------------------------
# Opening a store: one process at a time creates an SQLite schema; busy databases are retried
# --------------------------------------------------------------------------------------------

#: How long a write waits out another process's lock on an SQLite store, in seconds.
LOCKED_RETRY_S = 120.0


def _is_locked(err: BaseException | None) -> bool:
    """Whether ``err`` (or an error it wraps) is SQLite's "database is locked" (busy)."""
    seen = 0
    while err is not None and seen < 10:
        text = str(err).lower()
        if "database is locked" in text or "database table is locked" in text:
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


def retry_if_locked(fn: Callable[[], T], timeout_s: float = LOCKED_RETRY_S) -> T:
    """Call ``fn``, again after a short wait while SQLite says the database is locked.

    MLflow's sessions wait 20 s for a lock (``PRAGMA busy_timeout``); with several runs writing
    one SQLite store (a DDP run, parallel seeds) a write can still give up. A write that failed
    on a lock was rolled back, so calling it again is safe.

    Args:
        fn: The write, without arguments.
        timeout_s: Give up (re-raise) once this many seconds have passed.

    Returns:
        What ``fn`` returns.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            return fn()
        except Exception as err:
            if not _is_locked(err) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing) for the block."""
    with lock_path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _create_sqlite_schema(uri: str) -> None:
    """Create (or verify) MLflow's schema in an SQLite store, one process at a time.

    MLflow creates the tables of a new database when the first client opens it; two processes
    doing that at once race (``table latest_metrics already exists``, or an alembic revision
    mismatch). Here the first opener holds an exclusive lock on ``<database>.lock`` while
    MLflow's ``SqlAlchemyStore`` creates the schema; the others wait, then find it complete.
    """
    path = _sqlite_path(uri)
    if path is None:  # in-memory: private to this process
        return
    db = Path(path)
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with _exclusive(db.with_name(db.name + ".lock")):
        if db.exists() and db.stat().st_size > 0:
            _refuse_foreign_database(db)  # the file may have appeared since the check
        artifacts = default_artifact_location(uri)
        retry_if_locked(lambda: SqlAlchemyStore(uri, artifacts))
        if artifacts is not None:
            retry_if_locked(lambda: reroot_artifacts(db, artifacts))


#: Tables and columns of an SQLite store that hold artifact locations.
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
)


def reroot_artifacts(db: Path, root: str) -> int:
    """Point a moved store's artifact locations at its own ``mlartifacts`` folder.

    MLflow stores absolute artifact URIs (a relative ``artifact_location`` is made absolute
    when the experiment is created). The platform keeps every artifact in ``mlartifacts``
    beside the database (:func:`default_artifact_location`), so a location
    ``file:///old/place/mlartifacts/...`` of a store that now lives elsewhere is rewritten to
    ``root/...``: a store folder (database + ``mlartifacts``) can be moved, copied or zipped
    and opened anywhere. Other locations (another artifact store) are left alone.

    Args:
        db: the SQLite database.
        root: the artifact root it should use (``file://<db folder>/mlartifacts``).

    Returns:
        The number of rows rewritten.
    """
    old_roots = set()
    with sqlite3.connect(db, timeout=LOCKED_RETRY_S) as con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
        for (location,) in con.execute("SELECT artifact_location FROM experiments"):
            m = re.match(r"(file://.*?/mlartifacts)(?:/|$)", location or "")
            if m and m.group(1) != root:
                old_roots.add(m.group(1))
        changed = 0
        for old in old_roots:
            for table, column in ARTIFACT_COLUMNS:
                if table not in tables:
                    continue
                cur = con.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                    f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                    (root, len(old) + 1, old, len(old) + 1, old + "/"),
                )
                changed += cur.rowcount
    return changed


def open_tracking_store(uri: str | None, timeout_s: float = 5.0, create_dirs: bool = True) -> str:
    """Resolve and check the tracking URI, and make the store ready for MLflow clients.

    Every command opens its store through here before the first ``MlflowClient`` touches it:
    :func:`resolve_tracking_uri`, :func:`check_tracking_reachable`, then for ``sqlite:///``
    the schema is created under an exclusive file lock (``<database>.lock`` next to the
    database), so several runs may start on one new database at once.

    Args:
        uri: The configured URI (``tracking.uri``), or None for the default.
        timeout_s: Budget of the HTTP reachability check.
        create_dirs: Create a missing database folder for SQLite URIs.

    Returns:
        The resolved URI.

    Raises:
        TrackingConfigError: A file store, or a database store whose driver is missing.
        TrackingUnreachableError: The backend does not answer or cannot be written;
            :class:`ForeignDatabaseError` for another application's SQLite file.
    """
    resolved = resolve_tracking_uri(uri)
    check_tracking_reachable(resolved, timeout_s=timeout_s, create_dirs=create_dirs)
    if urlparse(resolved).scheme.lower() == "sqlite":
        try:
            _create_sqlite_schema(resolved)
        except TrackingUnreachableError:
            raise
        except Exception as err:  # MLflow / SQLAlchemy errors, e.g. an out-of-date schema
            raise TrackingUnreachableError(
                f"cannot open the tracking database {resolved}: {err}"
            ) from err
    return resolved


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


#: MLflow 3's UI shows an experiment by its kind: GenAI (traces, the default) or model training
#: (runs, metric charts). Every experiment the platform creates is a model-training one.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

#: The UI's query parameter that picks its model-training view (over its GenAI default).
UI_VIEW = "workflowType=machine_learning"

#: Where ``ife ui`` serves the UI unless told otherwise.
UI_PORT = 5000


def ui_base(uri: str, port: int = UI_PORT) -> str:
    """The address of the UI of a store: an MLflow server's own, else ``ife ui``'s."""
    if urlparse(uri).scheme.lower() in ("http", "https"):
        return uri.rstrip("/")
    return f"http://127.0.0.1:{port}"


def run_url(uri: str, experiment_id: str, run_id: str | None = None, port: int = UI_PORT) -> str:
    """The UI address of a run (or, without ``run_id``, of the experiment's runs table).

    Opens the model-training view (:data:`UI_VIEW`); for a local store the address is that of
    ``ife ui --port PORT``.
    """
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{ui_base(uri, port)}/#/experiments/{experiment_id}/{page}?{UI_VIEW}"


def run_page(uri: str, run_id: str, port: int = UI_PORT) -> str:
    """:func:`run_url` of a run of the store (looks up its experiment)."""
    import mlflow

    run = retry_if_locked(lambda: mlflow.MlflowClient(uri).get_run(run_id))
    return run_url(uri, run.info.experiment_id, run_id, port)


def log_artifact_once(client: MlflowClient, run_id: str, path: str | Path, folder: str) -> None:
    """Log a file as an artifact without a second copy on disk where the store allows.

    For a local artifact store (``file:``) the artifact is a hard link to ``path`` (made
    atomically; a copy where the two are on different filesystems): one copy of a 70 MB
    checkpoint on disk under two names. Any other store gets ``log_artifact``'s upload.
    """
    import shutil

    from mlflow.utils.file_utils import local_file_uri_to_path

    root = retry_if_locked(lambda: client.get_run(run_id)).info.artifact_uri
    if urlparse(root).scheme.lower() != "file":
        client.log_artifact(run_id, str(path), folder)
        return
    dest = Path(local_file_uri_to_path(root)) / folder / Path(path).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:  # another filesystem, or no hard links: a copy
        shutil.copyfile(path, tmp)
    os.replace(tmp, dest)  # readers see the old file or the new one, never half of one


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """Return the id of experiment ``name``, creating it if needed.

    Args:
        client: Client bound to the tracking URI.
        name: Experiment name.
        artifact_location: Artifact root for a new experiment; defaults to
            :func:`default_artifact_location` of the client's URI. Ignored if the experiment exists.

    Returns:
        The experiment id. Safe when several processes create the same experiment at once.
    """
    from mlflow.exceptions import MlflowException

    exp = retry_if_locked(lambda: client.get_experiment_by_name(name))
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            retry_if_locked(lambda: client.restore_experiment(exp.experiment_id))
        if EXPERIMENT_KIND_TAG not in exp.tags:  # made before the platform set the kind
            retry_if_locked(
                lambda: client.set_experiment_tag(
                    exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
                )
            )
        return exp.experiment_id
    location = artifact_location or default_artifact_location(client.tracking_uri)
    tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    try:
        return retry_if_locked(
            lambda: client.create_experiment(name, artifact_location=location, tags=tags)
        )
    except MlflowException:
        # another process created it between the lookup and the create (unique name)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@contextmanager
def start_run(
    uri: str | None,
    experiment: str,
    run_name: str | None = None,
    run_id: str | None = None,
    nested: bool = False,
    tags: Mapping[str, str] | None = None,
    artifact_location: str | None = None,
    timeout_s: float = 5.0,
) -> Iterator[ActiveRun]:
    """Resolve and check the URI, then run an MLflow (fluent API) run as a context manager.

    Sets the process-wide MLflow tracking URI (and with it ``$MLFLOW_TRACKING_URI``, which MLflow
    exports for subprocesses). The run ends with status FINISHED, or FAILED on an exception.

    Args:
        uri: Configured tracking URI or None (see :func:`resolve_tracking_uri`).
        experiment: Experiment name; created if missing (see :func:`ensure_experiment`).
        run_name: Display name of a new run.
        run_id: Resume this run instead of creating one.
        nested: Start as a child of the active run.
        tags: Tags for a new run.
        artifact_location: Artifact root for a newly created experiment.
        timeout_s: Budget of the reachability check.

    Yields:
        The active run.
    """
    import mlflow

    resolved = open_tracking_store(uri, timeout_s=timeout_s)
    mlflow.set_tracking_uri(resolved)
    client = mlflow.MlflowClient(resolved)
    experiment_id = None if run_id else ensure_experiment(client, experiment, artifact_location)
    with mlflow.start_run(
        run_id=run_id,
        experiment_id=experiment_id,
        run_name=run_name,
        nested=nested,
        tags=dict(tags) if tags else None,
    ) as run:
        yield run


def _target(client: MlflowClient | None, run_id: str | None) -> tuple[MlflowClient, str]:
    import mlflow

    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise RuntimeError("no run_id given and no active MLflow run (use start_run)")
        run_id = active.info.run_id
    return (client or mlflow.MlflowClient()), run_id


# --------------------------------------------------------------------------------------------
# Params, config and environment
# --------------------------------------------------------------------------------------------


def flatten_dict(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Flatten nested mappings into ``{"a.b.c": value}``.

    Lists and other values are kept as they are; an empty nested mapping becomes the value ``{}``
    so the key is not lost.

    Args:
        d: Nested mapping (e.g. ``OmegaConf.to_container(cfg, resolve=True)``).
        prefix: Key prefix for every entry (joined with ``sep``).
        sep: Separator between key levels.

    Returns:
        A flat dict, in depth-first insertion order.
    """
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_dict(value, name, sep))
        else:
            out[name] = value
    return out


_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")


def sanitize_param_key(key: str) -> str:
    """Make ``key`` a valid, portable MLflow param/tag key (bad characters -> ``_``, max 250).

    Args:
        key: Any string.
    """
    return _BAD_KEY_CHARS.sub("_", key)[:MAX_PARAM_KEY_LENGTH]


def _param_value(value: Any) -> str:
    text = str(value)
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        marker = "...[truncated]"
        text = text[: MAX_PARAM_VALUE_LENGTH - len(marker)] + marker
    return text


def log_config(
    cfg_yaml: str,
    flat_params: Mapping[str, Any],
    *,
    run_id: str | None = None,
    client: MlflowClient | None = None,
) -> dict[str, str]:
    """Log the resolved config as artifact ``config.yaml`` and its leaves as params.

    Params are logged in batches of 100 (MLflow's limit per request); nested mappings are
    flattened with dots; keys are sanitised (:func:`sanitize_param_key`); values are ``str()``
    and cut to 6000 characters (MLflow's limit) with a ``...[truncated]`` marker; the full values
    stay in ``config.yaml``. Params are immutable in MLflow: re-logging a resumed run with a
    different value raises.

    Args:
        cfg_yaml: The resolved config as YAML text.
        flat_params: Params, flat (``{"optim.lr": 1e-4}``) or nested.
        run_id: Target run; default the active run.
        client: Client to log with (e.g. Lightning ``MLFlowLogger.experiment``); default one for
            the current tracking URI.

    Returns:
        The params as logged (key -> string value).
    """
    from mlflow.entities import Param

    client, run_id = _target(client, run_id)
    client.log_text(run_id, cfg_yaml, "config.yaml")
    params = {sanitize_param_key(k): _param_value(v) for k, v in flatten_dict(flat_params).items()}
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), PARAMS_PER_BATCH):
        chunk = items[start : start + PARAMS_PER_BATCH]
        retry_if_locked(lambda chunk=chunk: client.log_batch(run_id, params=chunk))
    return params


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_info(project_dir: str | Path | None = None) -> dict[str, str]:
    """Commit and dirty flag of the git checkout holding ``project_dir``.

    Args:
        project_dir: Folder inside the checkout; default the folder above the ``ife_platform``
            package (the repository root of an editable install).

    Returns:
        ``{"git.commit": sha, "git.dirty": "true"|"false"}``; ``"unavailable"`` for both when
        there is no git or no checkout. Dirty means modified tracked files (untracked files such
        as outputs do not count).
    """
    cwd = Path(project_dir) if project_dir is not None else _PROJECT_DIR
    commit = _git(["rev-parse", "HEAD"], cwd)
    if not commit:
        return {"git.commit": "unavailable", "git.dirty": "unavailable"}
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    dirty = "unavailable" if status is None else str(bool(status)).lower()
    return {"git.commit": commit, "git.dirty": dirty}


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def log_environment(
    *,
    run_id: str | None = None,
    client: MlflowClient | None = None,
    project_dir: str | Path | None = None,
    packages: tuple[str, ...] = ENV_PACKAGES,
) -> dict[str, str]:
    """Tag the run with package versions, the Python version and the git commit.

    Tags rather than params, so a resumed run can record a changed environment. Keys:
    ``version.<distribution>`` (``"not installed"`` if absent), ``version.python``,
    ``git.commit``, ``git.dirty`` and MLflow's own ``mlflow.source.git.commit`` (shown in the UI).

    Args:
        run_id: Target run; default the active run.
        client: Client to log with; default one for the current tracking URI.
        project_dir: Folder inside the git checkout (see :func:`git_info`).
        packages: Distribution names to record.

    Returns:
        The tags as logged.
    """
    from mlflow.entities import RunTag

    client, run_id = _target(client, run_id)
    tags = {f"version.{name}": _package_version(name) for name in packages}
    tags["version.python"] = platform.python_version()
    git = git_info(project_dir)
    tags.update(git)
    if git["git.commit"] != "unavailable":
        tags["mlflow.source.git.commit"] = git["git.commit"]
    batch = [RunTag(k, v) for k, v in tags.items()]
    retry_if_locked(lambda: client.log_batch(run_id, tags=batch))
    return tags
