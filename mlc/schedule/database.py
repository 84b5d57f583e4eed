"""The tuning database: every measured schedule candidate, one SQLite file.

WAL mode and one committed transaction per record: a tuner killed at any point
(even ``kill -9``) loses at most the candidate it was measuring, several
processes may read and write the same file, and a resumed search skips the
schedules already stored (``tried``).

    with TuningDB("tune.db") as db:
        db.add(wkey, target.key, schedule, times=[1.2e-4, 1.1e-4])
        best = db.best(wkey, target.key)

The tuner (``mlc tune``) writes it; the driver reads the best schedule of each
kernel from it (``best_schedule``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import os
import sqlite3
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from ..ir.tensor import Kernel
from ..target import Target
from ..version import __version__

SCHEMA_VERSION = 1


def workload_key(kernel: Kernel, target: Target) -> str:
    """What a tuning record is stored under: the kernel's tensor-level text without
    its name (equal kernels share records), hashed with the target's key."""
    text = re.sub(r"^(\w+ )?kernel @\S+?\(", r"\1kernel @k(", str(kernel), count=1)   # "contraction kernel @..."
    return hashlib.sha256(f"{text}\n{target.key}".encode()).hexdigest()[:32]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    workload_key TEXT NOT NULL,
    target_key TEXT NOT NULL,
    workload TEXT NOT NULL DEFAULT '',
    schedule TEXT NOT NULL,
    schedule_hash TEXT NOT NULL,
    times TEXT NOT NULL,
    median REAL,
    error TEXT,
    created REAL NOT NULL,
    mlc_version TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS records_by_task ON records (workload_key, target_key);
CREATE TABLE IF NOT EXISTS tasks (
    workload_key TEXT NOT NULL,
    target_key TEXT NOT NULL,
    name TEXT NOT NULL,
    weight REAL NOT NULL,
    default_median REAL,
    PRIMARY KEY (workload_key, target_key));
"""


class TuningDBError(RuntimeError):
    """The file cannot be used as a tuning database (not SQLite, newer schema, ...)."""


@dataclass
class Record:
    workload_key: str
    target_key: str
    schedule: Any              # the parsed JSON schedule
    times: list[float]         # seconds per call; empty when the candidate failed
    median: float | None       # None when the candidate failed
    error: str | None
    created: float             # unix time
    mlc_version: str
    workload: str = ""
    id: int | None = None

    @property
    def ok(self) -> bool:
        return self.median is not None


@dataclass
class Task:
    """One kernel of a tuning job: ``weight`` is how often it runs per model call."""
    workload_key: str
    target_key: str
    name: str
    weight: float
    default_median: float | None


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def schedule_hash(schedule) -> str:
    """sha256 of the schedule's canonical JSON: equal schedules, equal hashes."""
    return hashlib.sha256(canonical_json(schedule).encode()).hexdigest()


_COLUMNS = "workload_key, target_key, schedule, times, median, error, created, mlc_version, workload, id"


def _record(row) -> Record:
    wk, tk, sched, times, median, error, created, version, workload, rid = row
    return Record(wk, tk, json.loads(sched), json.loads(times), median, error, created, version, workload, rid)


class TuningDB:
    def __init__(self, path: str | os.PathLike, timeout: float = 30.0):
        self.path = os.fspath(path)
        if os.path.isdir(self.path):
            raise TuningDBError(f"tuning database {self.path!r} is a directory, not a file")
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._lock = threading.RLock()
        try:
            # autocommit (isolation_level=None): each statement is its own committed
            # transaction, so nothing written waits in an open transaction
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise TuningDBError(f"cannot open tuning database {self.path!r}: {e}") from None
        try:
            self._setup()
        except sqlite3.OperationalError as e:   # locked past the time-out, unreadable, ...
            self._conn.close()
            raise TuningDBError(f"cannot open tuning database {self.path!r}: {e}") from None
        except sqlite3.DatabaseError as e:
            self._conn.close()
            raise TuningDBError(f"{self.path!r} is not an mlc tuning database (not a readable SQLite file: {e})") \
                from None
        except BaseException:
            self._conn.close()
            raise

    def _setup(self) -> None:
        c = self._conn
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")   # durable across process kills; WAL keeps the file consistent
        c.execute("BEGIN IMMEDIATE")   # one process at a time creates or checks the schema
        try:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "meta" not in tables:
                raise TuningDBError(f"{self.path!r} is an SQLite database but not an mlc tuning database "
                                    f"(tables: {', '.join(sorted(tables))})")
            row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() if tables else None
            if row is not None:
                try:
                    found = int(row[0])
                except ValueError:
                    raise TuningDBError(f"{self.path!r}: unreadable schema_version {row[0]!r}") from None
                if found > SCHEMA_VERSION:
                    raise TuningDBError(f"tuning database {self.path!r} has schema version {found}, written by a "
                                        f"newer mlc; this mlc ({__version__}) reads version {SCHEMA_VERSION} and "
                                        f"older: upgrade mlc or use another file")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _check_open(self) -> None:
        if self._conn is None:
            raise TuningDBError(f"tuning database {self.path!r} is closed")

    def _run(self, sql: str, args: Sequence = ()):
        with self._lock:
            self._check_open()
            return self._conn.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ records
    def add(self, workload_key: str, target_key: str, schedule, times: Sequence[float] | None,
            error: str | None = None, workload: str = "") -> Record:
        """Store one measured candidate (committed before returning). A candidate
        with an error or without times is a failure: median None."""
        times = [float(t) for t in (times or [])]
        if any(not math.isfinite(t) or t < 0 for t in times):
            raise ValueError(f"TuningDB.add: times must be finite non-negative seconds, got {times}")
        sched_text = canonical_json(schedule)   # fails early on a schedule that is not JSON-serializable
        median = statistics.median(times) if times and error is None else None
        if median is None and error is None:
            error = "no timings"
        created = time.time()
        sched_hash = hashlib.sha256(sched_text.encode()).hexdigest()
        with self._lock:
            self._check_open()
            rid = self._conn.execute(
                "INSERT INTO records (workload_key, target_key, workload, schedule, schedule_hash, times, median, "
                "error, created, mlc_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (workload_key, target_key, workload, sched_text, sched_hash, json.dumps(times), median, error,
                 created, __version__)).lastrowid
        return Record(workload_key, target_key, json.loads(sched_text), times, median, error, created, __version__,
                      workload, rid)

    def best(self, workload_key: str, target_key: str) -> Record | None:
        """The fastest schedule, or None. A schedule measured several times counts with the
        median of its measurements, so one lucky measurement on a noisy machine does not
        make it the best; the record returned carries that median."""
        rows = self._run(f"SELECT {_COLUMNS} FROM records WHERE workload_key=? AND target_key=? AND median IS NOT NULL "
                         f"ORDER BY id", (workload_key, target_key))
        by_schedule: dict[str, list[Record]] = {}
        for row in rows:
            rec = _record(row)
            by_schedule.setdefault(schedule_hash(rec.schedule), []).append(rec)
        best = None
        for recs in by_schedule.values():
            m = statistics.median(r.median for r in recs)
            if best is None or m < best.median:
                best = dataclasses.replace(recs[-1], median=m)
        return best

    def records(self, workload_key: str, target_key: str) -> list[Record]:
        """Every record of one kernel on one target, oldest first."""
        return [_record(r) for r in self._run(f"SELECT {_COLUMNS} FROM records WHERE workload_key=? AND "
                                              f"target_key=? ORDER BY id", (workload_key, target_key))]

    def tried(self, workload_key: str, target_key: str) -> set[str]:
        """Hashes of every stored schedule (failed ones too), for a resumed search to skip."""
        return {r[0] for r in self._run("SELECT schedule_hash FROM records WHERE workload_key=? AND target_key=?",
                                        (workload_key, target_key))}

    def count(self, workload_key: str | None = None, target_key: str | None = None) -> int:
        """Number of records, optionally of one kernel and/or one target."""
        where, args = [], []
        if workload_key is not None:
            where.append("workload_key=?")
            args.append(workload_key)
        if target_key is not None:
            where.append("target_key=?")
            args.append(target_key)
        sql = "SELECT COUNT(*) FROM records" + (" WHERE " + " AND ".join(where) if where else "")
        return self._run(sql, args)[0][0]

    # ------------------------------------------------------------------ tasks
    def set_task(self, workload_key: str, target_key: str, name: str, weight: float = 1.0,
                 default_median: float | None = None) -> Task:
        """Insert or update a kernel of a tuning job. A None ``default_median`` keeps
        the stored one (a resumed job need not re-measure the default schedule)."""
        self._run("INSERT INTO tasks (workload_key, target_key, name, weight, default_median) VALUES (?, ?, ?, ?, ?) "
                  "ON CONFLICT (workload_key, target_key) DO UPDATE SET name=excluded.name, weight=excluded.weight, "
                  "default_median=COALESCE(excluded.default_median, tasks.default_median)",
                  (workload_key, target_key, name, float(weight), default_median))
        return self.task(workload_key, target_key)

    def task(self, workload_key: str, target_key: str) -> Task | None:
        rows = self._run("SELECT workload_key, target_key, name, weight, default_median FROM tasks WHERE "
                         "workload_key=? AND target_key=?", (workload_key, target_key))
        return Task(*rows[0]) if rows else None

    def tasks(self, target_key: str) -> list[Task]:
        """The kernels stored for a target, by name."""
        return [Task(*r) for r in self._run("SELECT workload_key, target_key, name, weight, default_median FROM tasks "
                                            "WHERE target_key=? ORDER BY name, workload_key", (target_key,))]

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "TuningDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TuningDB {self.path!r}>"


EMULATED = "|emulated"   # ends the target key of records timed in the CPU emulation of a cuda target


def record_key(target: Target, emulated: bool = False) -> str:
    """The target key records are stored under: ``target.key``, with ``EMULATED`` appended
    when a cuda target's candidates were timed in the CPU emulation (``MLC_CUDA_EMULATE=1``):
    those times do not rank GPU speed, so a compile for a device never reads them."""
    return target.key + EMULATED if emulated else target.key


def best_schedule(db: TuningDB, kernel: Kernel, target: Target, emulated: bool = False) -> list | None:
    """The fastest stored schedule of a kernel on a target, or None. ``emulated`` (a cuda
    target compiled under MLC_CUDA_EMULATE=1): records measured on a device first, else
    the fastest of those timed in the emulation."""
    wkey = workload_key(kernel, target)
    rec = db.best(wkey, target.key)
    if rec is None and emulated:
        rec = db.best(wkey, record_key(target, True))
    return rec.schedule if rec is not None else None
