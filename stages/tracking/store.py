"""The MLflow tracking store: its URI, first-time creation, and the two experiments.

Default: ``sqlite:///<repo root>/mlflow.db``, artifacts under ``<repo root>/mlartifacts/<experiment>``.
``MLFLOW_TRACKING_URI`` overrides it; a tracking server then decides artifact locations.
A store that cannot be written (read-only, locked by another process, damaged) is refused by
``check_store`` in one line before a stage does any work.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import random
import sqlite3
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from stages.core.errors import UserError
from stages.tracking.provenance import repo_root

T = TypeVar("T")

PROBLEMS = ("parity", "xor-gate")  # one MLflow experiment per problem
# Without this tag MLflow 3's UI opens an experiment on its GenAI overview.
KIND = ("mlflow.experimentKind", "custom_model_development")
_ready: set[str] = set()  # URIs whose store this process has already prepared
_LOCKED = ("database is locked", "database table is locked")
# What a store answers when two runs insert the same new row at once (PostgreSQL, SQLite): MLflow
# looks a dataset up, then inserts it, so the later insert fails; retried, the row is found.
INSERT_RACE = ("duplicate key value violates unique constraint", "UniqueViolation", "UNIQUE constraint failed")
_jitter = random.Random()  # never touch the global RNG: training is seeded
# Seconds to wait for another process's write lock on a SQLite store before giving up with one
# line (environment variable PARITYLAB_STORE_WAIT_S). Stages hold it for milliseconds at a time;
# one held longer is a stuck process or a transaction left open in a database browser.
STORE_WAIT_S = 30.0


def store_wait_s() -> float:
    """STORE_WAIT_S, or PARITYLAB_STORE_WAIT_S when set (seconds, more than 0, at most an hour)."""
    raw = os.environ.get("PARITYLAB_STORE_WAIT_S")
    if raw is None:
        return STORE_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= 3600:  # NaN fails too
        raise UserError(f"PARITYLAB_STORE_WAIT_S={raw[:40]!r}: not a number of seconds in (0, 3600]; "
                        f"unset it (default {STORE_WAIT_S:g}) or give one, e.g. 30")
    return value


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite file at the main repository's root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative or absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def artifact_location(experiment: str, uri: str | None = None) -> str | None:
    """Where a new experiment keeps its artifacts, as a file URI; None lets a server decide.

    For a SQLite store: ``mlartifacts/<experiment>`` beside the database file (for the
    default store, the repository root); for other databases: under the repository root.
    """
    uri = uri or tracking_uri()
    if urlparse(uri).scheme in ("http", "https", "databricks", "uc"):
        return None
    db = _sqlite_path(uri)
    base = db.resolve().parent if db else repo_root()
    return (base / "mlartifacts" / experiment).resolve().as_uri()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def store_lock(name: str, uri: str | None = None) -> Iterator[None]:
    """Hold the lock file ``<db>-<name>.lock`` beside a SQLite store: one holder at a time on
    this machine. Other stores (a server) get no lock."""
    db = _sqlite_path(uri or tracking_uri())
    if db is None:
        yield
        return
    with _file_lock(db.with_name(f"{db.name}-{name}.lock")):
        yield


def ensure_store(uri: str) -> None:
    """Point MLflow at ``uri`` and, for SQLite, create the file and its schema safely.

    Two stages may start together on a fresh repository; MLflow would then run its
    schema migrations twice at once, so first use is serialised with a file lock. A new
    database is put in WAL mode, which lets readers (the UI) and one writer work together
    and makes "database is locked" rarer.
    """
    import mlflow

    logging.getLogger("mlflow.store.db.utils").addFilter(_quiet_locks)  # once: addFilter skips a repeat
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    if uri in _ready:
        return
    db = _sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(db.with_name(db.name + "-init.lock")), _quiet_migrations():
            if not db.exists() or db.stat().st_size == 0:
                con = sqlite3.connect(db)
                try:
                    con.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file
                finally:
                    con.close()
            mlflow.MlflowClient(uri).search_experiments(max_results=1)  # creates/migrates schema
            relocate_artifacts(db)
    _ready.add(uri)


def _quiet_locks(record: logging.LogRecord) -> bool:
    """A logging filter: drop MLflow's error log (a traceback of ~40 lines) of a "database is
    locked" failure; retry() retries it and, if the lock outlasts the wait, says so in one line."""
    return not any(s in record.getMessage() for s in _LOCKED)


def finished_tag_values(tag: str, uri: str | None = None) -> set[str] | None:
    """Values of ``tag`` on the FINISHED, not deleted runs of a SQLite store, read with sqlite3.

    A read of milliseconds where importing MLflow takes seconds (what keeps a `sync` with
    nothing to record quick); an empty set for a store not created yet; None for a store
    that is not a SQLite file (ask MLflow then).
    """
    db = _sqlite_path(uri or tracking_uri())
    if db is None:
        return None
    if not db.is_file():
        return set()
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=20)
    try:
        rows = con.execute("SELECT t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid WHERE t.key = ? "
                           "AND r.status = 'FINISHED' AND r.lifecycle_stage = 'active'", (tag,)).fetchall()
    except sqlite3.OperationalError as e:  # no tables yet (MLflow makes them on first use), or busy
        return set() if "no such table" in str(e) else None
    finally:
        con.close()
    return {value for (value,) in rows}


def relocate_artifacts(db: Path) -> int:
    """Point a moved or copied store's artifact locations at ``mlartifacts/`` beside it.

    MLflow records absolute file URIs, so a checkout that was moved (or a copy of it) would
    keep writing into the old folder. Only locations that end in ``/mlartifacts/...`` are
    rewritten; a store on a server or with other locations is left alone. -> rows changed.
    """
    here = (db.resolve().parent / "mlartifacts").as_uri()
    con = sqlite3.connect(db, timeout=20)
    try:
        changed = 0
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            rows = con.execute(f"SELECT rowid, {column} FROM {table} WHERE {column} LIKE 'file://%/mlartifacts/%' "
                               f"AND {column} NOT LIKE ?", (here + "/%",)).fetchall()
            for rowid, old in rows:
                new = here + "/" + old.split("/mlartifacts/", 1)[1]
                con.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (new, rowid))
            changed += len(rows)
        con.commit()
        return changed
    finally:
        con.close()


def reap_dead_runs(uri: str) -> int:
    """Mark FAILED the runs left RUNNING by a process of this host that is gone (SIGKILL, the OOM
    killer, a power cut), with the reason in tag ``paritylab.failure``. -> how many."""
    import socket

    import psutil
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    host = socket.gethostname()
    ids = [e.experiment_id for e in retry(client.search_experiments) if e.name in PROBLEMS]
    if not ids:
        return 0
    running = retry(client.search_runs, ids, f"attributes.status = 'RUNNING' and tags.`paritylab.host` = '{host}'")
    reaped = 0
    for run in running:
        pid, started = run.data.tags.get("paritylab.pid", ""), run.data.tags.get("paritylab.pid_start", "")
        try:
            alive = int(psutil.Process(int(pid)).create_time()) == int(started)
        except (ValueError, psutil.Error):
            alive = False
        if not alive:
            retry(client.set_tag, run.info.run_id, "paritylab.failure",
                  f"process {pid} on {host} ended without closing the run (killed: SIGKILL or out of memory?)")
            retry(client.set_terminated, run.info.run_id, "FAILED")
            reaped += 1
    return reaped


@contextmanager
def _quiet_migrations() -> Iterator[None]:
    """Keep MLflow's "Creating initial MLflow database tables..." INFO lines off stderr."""
    loggers = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextmanager
def quick_http_failures(retries: int = 0, timeout_s: int = 5) -> Iterator[None]:
    """Let MLflow's REST client give up fast (it retries for minutes by default)."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def experiment_id(problem: str) -> str:
    """Id of the problem's experiment, created (tagged, with its artifact location) if new."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if problem not in PROBLEMS:
        raise ValueError(f"unknown problem {problem!r} (allowed: {', '.join(PROBLEMS)})")
    client = MlflowClient()
    exp = retry(client.get_experiment_by_name, problem)
    if exp is None:
        try:
            return retry(client.create_experiment, problem, artifact_location=artifact_location(problem),
                         tags=dict([KIND]))
        except MlflowException:  # another stage created it a moment ago
            exp = retry(client.get_experiment_by_name, problem)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise UserError(
            f"MLflow experiment {problem!r} is deleted; restore it (mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}) or purge it (mlflow gc)"
        )
    if exp.tags.get(KIND[0]) != KIND[1]:
        retry(client.set_experiment_tag, exp.experiment_id, *KIND)
    return exp.experiment_id


def retry(fn: Callable[..., T], *args: Any, attempts: int = 12, races: tuple[str, ...] = (), **kwargs: Any) -> T:
    """Call ``fn``; while SQLite says the database is locked, back off and retry.

    MLflow already sets a 20 s busy timeout; what remains are lock upgrades SQLite refuses
    at once (two writers in deferred transactions), which only a retry resolves. A lock that
    outlasts store_wait_s() (plus the call under way) is a UserError naming the store.
    races: messages of errors a retry also resolves (another process did the same write first,
    e.g. INSERT_RACE); the last one is raised as it is.
    """
    delay, start = 0.05, time.monotonic()
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if any(s in str(e) for s in races) and attempt < attempts - 1:
                time.sleep(delay * (1 + _jitter.random()))
                continue
            if not any(s in str(e) for s in _LOCKED):
                raise
            waited = time.monotonic() - start
            if attempt == attempts - 1 or waited > store_wait_s():
                raise UserError(_locked(tracking_uri(), waited)) from None
            time.sleep(delay * (1 + _jitter.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def _locked(store: str | Path, waited: float) -> str:
    return (f"MLflow store {store} is locked: another process has held its write lock for {waited:.0f} s "
            f"(a stuck stage, or a transaction left open in a database browser); find it with "
            f"`fuser {_sqlite_path(str(store)) or store}`, end it and run again "
            f"(PARITYLAB_STORE_WAIT_S sets the wait, {store_wait_s():g} s now)")


def _modes(db: Path) -> str:
    """"mlflow.db r--r--r--, mlflow.db-wal rw-r--r--, folder rwxr-xr-x": SQLite writes all three
    (its -wal and -shm files take the database's mode when made, so they stay read-only after
    a chmod of the database alone)."""
    files = [(f.name, f) for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")) if f.exists()]
    return ", ".join(f"{name} {stat.filemode(f.stat().st_mode)[1:]}" for name, f in [*files, ("folder", db.parent)])


def probe_sqlite(db: Path) -> None:
    """Write to an existing SQLite store (a table created, then rolled back) within store_wait_s().

    MLflow would find a read-only or locked store only when it logs, after the training, and
    then print hundreds of lines; a damaged file the same. Raises a one-line UserError naming
    the store, the cause and what to do.
    """
    if not db.is_file():
        return  # ensure_store creates it; a folder it cannot write in raises OSError there
    wait = store_wait_s()
    start = time.monotonic()
    con = sqlite3.connect(db, timeout=wait, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")  # waits up to ``wait`` for another writer
        con.execute("CREATE TABLE paritylab_write_probe (x)")  # a real write: BEGIN alone passes a read-only file
        con.execute("ROLLBACK")
    except sqlite3.Error as e:
        text, name = str(e), getattr(e, "sqlite_errorname", "")
        if "locked" in text or name.startswith("SQLITE_BUSY"):
            raise UserError(_locked(db, time.monotonic() - start)) from None
        if "readonly" in text or name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
            raise UserError(f"MLflow store {db} is read-only ({text}; {_modes(db)}); make them writable "
                            f"(chmod u+w {db}* {db.parent}) or set MLFLOW_TRACKING_URI to a store you can write") from None
        if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            raise UserError(f"MLflow store {db} is damaged ({text}); restore a copy, or move it aside and a new "
                            "empty store is made (it is not a DVC output: `make repro` and `sync` refill it)") from None
        raise UserError(f"MLflow store {db} cannot be written: {text}") from None
    finally:
        con.close()
    # SQLite writes through existing -wal/-shm files in a read-only folder; MLflow then fails
    # when it makes the run's artifact folder. Make (and drop) a file where those folders go.
    art = db.resolve().parent / "mlartifacts"
    where = art if art.is_dir() else art.parent
    try:
        tempfile.TemporaryFile(dir=where).close()
    except OSError as e:
        raise UserError(f"MLflow store {db} is read-only: no file can be made in {where} ({e.strerror}; "
                        f"{_modes(db)}); make it writable (chmod u+w {where}) or set MLFLOW_TRACKING_URI "
                        "to a store you can write") from None


def check_store() -> str:
    """Connect to the tracking store (creating the SQLite file if needed); return its URI.

    Raises UserError within seconds when it cannot be reached, and within store_wait_s()
    when a SQLite store cannot be written, before a stage spends minutes training a model
    it then cannot log.
    """
    uri = tracking_uri()
    if (db := _sqlite_path(uri)) is not None:
        probe_sqlite(db)
    try:
        with quick_http_failures():
            ensure_store(uri)
            from mlflow import MlflowClient

            MlflowClient(uri).search_experiments(max_results=1)
            if reaped := reap_dead_runs(uri):
                print(f"tracking: marked {reaped} run(s) FAILED whose process died while they ran", file=sys.stderr)
    except UserError:
        raise
    except OSError as e:  # a folder it cannot create the store or its lock file in
        raise UserError(f"MLflow store {uri}: cannot write {e.filename or 'its files'} ({e.strerror}); make its "
                        "folder writable or set MLFLOW_TRACKING_URI to a store you can write") from None
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise UserError(f"MLflow store {uri} cannot be reached: {first}") from None
    return uri
