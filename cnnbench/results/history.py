"""The results history: run folders indexed into one SQLite file (the standard library's
``sqlite3``; no server), so that a value can be followed across commits, days and machines.

Two tables. ``runs``: one row per run — its identity, folder, start time, git commit, the
environment fingerprint (``env.fingerprint``) and its id. ``measurements``: one row per value a
record measured — metric, model, input size, batch, dtype, mode, device, the rest of the spec,
the value's name, unit and direction, and the summary statistics of its samples (centre, 95%
interval, number of samples, spread, min, max) — or the status and reason of a record that is not
ok (the value then absent). Everything in a row comes from the run folder (``results.jsonl`` and
``env.json``): the history is an index, and can be rebuilt from the folders.

Data safety:

- a run's identity is a hash of its env.json as first written (a resume appends under
  ``"resumed"`` and keeps it), so adding a run twice is a no-op, adding a resumed run adds what it
  measured since, and a re-measured record replaces its earlier values;
- each ``add`` reads and summarizes every folder first (a bad folder refuses the whole command
  before the file is touched), then writes in one transaction (``BEGIN IMMEDIATE``): a failure
  leaves the file as it was; a second writer waits for the first (up to ``BUSY_TIMEOUT_S``)
  instead of losing rows;
- the file is marked as cnnbench's (``PRAGMA application_id``, ``user_version``) and checked
  (``PRAGMA quick_check``) when opened: a file that is not SQLite, is damaged, or is another
  program's database is refused with :class:`HistoryError`, and left unchanged.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import os
import sqlite3
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from .. import stats
from .record import Record
from .types import RESULT_TYPES, Optimizer, declared_values, value_info
from .store import CorruptEnv, RunStore

__all__ = ["APPLICATION_ID", "HISTORY_ENV", "HistoryError", "Added", "Summary", "add_runs",
           "check", "default_path", "is_history_report", "link", "read", "run_id", "summaries"]  # fmt: skip

HISTORY_ENV = "CNNBENCH_HISTORY"  # a history file: `cnnbench run` adds to it; the default of `history`
DEFAULT_PATH = Path("runs/history.sqlite")
APPLICATION_ID = 0x434E4E42  # "CNNB" in the SQLite header: this file is a cnnbench history
SCHEMA_VERSION = 1  # PRAGMA user_version
BUSY_TIMEOUT_S = 120.0  # how long a writer waits for another one's transaction to end

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,      -- hash of env.json as first written
        path TEXT NOT NULL,           -- the run folder where it was last added from: relative to
                                      -- the history file's folder when inside it, else absolute
        collected_at TEXT,            -- when the run began (env.json, ISO 8601, UTC)
        git_commit TEXT,
        git_dirty INTEGER,
        fingerprint_id TEXT NOT NULL, -- env.fingerprint_id: 12 hex digits of what decides speed
        hardware_id TEXT NOT NULL,    -- env.hardware_id: its hardware part; a series is kept per
                                      -- hardware, software changes are marked along it
        fingerprint TEXT NOT NULL,    -- env.fingerprint, JSON
        machine TEXT NOT NULL,        -- the hardware in words
        notes TEXT,                   -- e.g. a resume on another commit or machine
        device TEXT,
        torch TEXT,
        cnnbench TEXT,
        command_line TEXT,
        added_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS measurements (
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        metric TEXT NOT NULL,
        model TEXT NOT NULL,
        image_size INTEGER NOT NULL,
        batch_size INTEGER NOT NULL,
        dtype TEXT NOT NULL,
        mode TEXT NOT NULL,
        device TEXT NOT NULL,
        options TEXT NOT NULL,        -- the rest of the spec in words ('' when all default)
        spec TEXT NOT NULL,           -- the whole spec, canonical JSON
        value_name TEXT NOT NULL,     -- latency_ms_p50, images_per_s, test_accuracy_mean, ...
        unit TEXT NOT NULL,
        better TEXT NOT NULL,         -- lower, higher, or exact (a count: any change is one)
        status TEXT NOT NULL,
        reason TEXT,
        value NUMERIC,                -- the centre: median of timings, mean over seeds, a count
        ci_low NUMERIC,               -- its 95% interval, where the samples give one
        ci_high NUMERIC,
        n INTEGER,                    -- samples behind it (timed iterations, seeds)
        spread NUMERIC,
        spread_kind TEXT,             -- IQR or std
        min NUMERIC,
        max NUMERIC,
        PRIMARY KEY (run_id, metric, spec, value_name)
    )""",
    "CREATE INDEX IF NOT EXISTS measurements_series ON measurements (metric, model, value_name)",
)
_STAT_COLUMNS = ("unit", "better", "status", "reason", "value", "ci_low", "ci_high", "n",
                 "spread", "spread_kind", "min", "max")  # fmt: skip
_KEY_COLUMNS = ("run_id", "metric", "model", "image_size", "batch_size", "dtype", "mode", "device",
                "options", "spec", "value_name")  # fmt: skip


class HistoryError(ValueError):
    """A history file that cannot be used (not SQLite, damaged, another program's, busy): one
    line saying which file and what to do; the file is left as it was."""


def default_path() -> Path:
    return Path(os.environ.get(HISTORY_ENV) or DEFAULT_PATH)


def is_history_report(folder: Path) -> bool:
    """A folder ``history show`` wrote (history.md, trend.csv), not a run folder."""
    return (folder / "trend.csv").is_file() and (folder / "history.md").is_file() and not (
        folder / "results.jsonl").exists()  # fmt: skip


# --- what a record contributes: one Summary per value --------------------------------------------


@dataclass(frozen=True)
class Summary:
    """One value of a record with its samples' summary statistics (None where there are none)."""

    value_name: str
    unit: str
    better: str  # "lower", "higher" or "exact"
    value: float | int | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    spread: float | None = None
    spread_kind: str | None = None  # "IQR" or "std"
    min: float | None = None
    max: float | None = None


# the values of each metric a history follows (declared on the result types), for a record that
# is not ok too (no values to read: its rows carry the status and reason)
VALUE_NAMES = {metric: tuple(declared_values(metric)) for metric in RESULT_TYPES}


def _summary(name: str, value, *rest, **kw) -> Summary:
    """A Summary of ``name`` in the unit and better direction its result type declares."""
    return Summary(name, *_unit_better(name), value, *rest, **kw)


def _unit_better(name: str) -> tuple[str, str]:
    info = value_info(name)
    return info.unit, info.better


def _latency(r: Record) -> list[Summary]:
    res, batch = r.result, r.spec.batch_size
    times = res.times_ms or ()
    low, high = res.latency_ms_p50_ci_low, res.latency_ms_p50_ci_high
    rate = lambda ms: 1e3 * batch / ms if ms else None  # noqa: E731  (images/s of a latency)
    return [
        _summary("latency_ms_p50", res.latency_ms_p50, low, high, res.n_runs,
                res.latency_ms_iqr, "IQR", res.latency_ms_min, max(times) if times else None),
        # images/s is batch / latency: its interval and extremes are the latency's, inverted
        _summary("images_per_s", res.images_per_s,
                rate(high) if high else None, rate(low) if low else None, res.n_runs, None, None,
                rate(max(times)) if times else None, rate(res.latency_ms_min)),
    ]  # fmt: skip


def _accuracy(r: Record) -> list[Summary]:
    res = r.result
    finished = [run for run in res.runs if not run.diverged and run.final_test_accuracy is not None]
    acc = [run.final_test_accuracy for run in finished]
    times = [run.train_time_s for run in finished]
    out = []
    for name, values, mean in (
        ("test_accuracy_mean", acc, res.test_accuracy_mean),
        ("train_time_s_mean", times, res.train_time_s_mean),
    ):
        iv = stats.mean_interval(values)
        std = statistics.stdev(values) if len(values) > 1 else None
        out.append(_summary(name, mean, iv.low if iv else None, iv.high if iv else None,
                           len(values), std, "std" if std is not None else None,
                           min(values, default=None), max(values, default=None)))  # fmt: skip
    return out


def _scaling(r: Record) -> list[Summary]:
    out = []
    for p in r.result.points:
        tag = f"{p.kind}_w{p.world_size}"
        out.append(Summary(f"step_ms_p50_{tag}", *_unit_better("step_ms_p50"), p.step_ms_p50, p.step_ms_ci_low,
                           p.step_ms_ci_high, len(p.times_ms), None, None,
                           min(p.times_ms, default=None), max(p.times_ms, default=None)))  # fmt: skip
        if p.world_size > 1:
            out.append(Summary(f"efficiency_{tag}", *_unit_better("efficiency"), p.efficiency,
                               n=len(p.times_ms)))  # fmt: skip
    return out


def summaries(record: Record) -> list[Summary]:
    """What ``record`` adds to a history: its values with their summary statistics; for a record
    that is not ok, its metric's values without a number (the row carries status and reason)."""
    if record.status != "ok":
        return [Summary(name, "", "", None) for name in VALUE_NAMES.get(record.metric, ("status",))]
    res = record.result
    if record.metric == "latency":
        return _latency(record)
    if record.metric == "accuracy":
        return _accuracy(record)
    if record.metric == "scaling":
        return _scaling(record)
    if record.metric == "params":
        return [_summary("params_total", res.params_total, n=1)]
    if record.metric == "flops":
        return [_summary("gmacs", res.gmacs, n=1)]
    if record.metric == "minsize":
        return [_summary("min_size", res.min_size, n=1)]
    if record.metric == "memory":
        return [_summary("measured_bytes", res.measured_bytes, n=1),
                _summary("analytic_bytes", res.analytic_bytes, n=1)]  # fmt: skip
    if record.metric == "roofline":
        return [_summary("model_achieved_flops", res.model_achieved_flops, n=1)]
    return []


# --- a run folder as rows --------------------------------------------------------------------------


def run_id(env: dict) -> str:
    """16 hex digits of env.json as the run first wrote it (a resume's additions left out)."""
    from ..env import digest

    return digest({k: v for k, v in env.items() if k != "resumed"}, 16)


_DEFAULT_SPEC = {"channels_last": False, "compiled": False, "threads": None, "tf32": None,
                 "cast": None, "cuda_graph": False}  # fmt: skip


def _recipe_words(epochs, train_images, optimizer, lr, momentum, label_smoothing, test_images) -> list[str]:
    # lr None: the run left each model its chapter rate (a failed record never got to read it)
    rate = f"lr {lr:g}" if lr is not None else "at the model's chapter lr"
    words = [f"{epochs} epoch(s) x {train_images:,} images", f"{optimizer} {rate}"]
    if momentum:
        words.append(f"momentum {momentum:g}")
    if label_smoothing:
        words.append(f"label smoothing {label_smoothing:g}")
    return [*words, f"tested on {test_images:,}"]


# Fashion-MNIST's sizes: a run without a subset trains and tests on all of it
_FULL_TRAIN, _FULL_TEST = 60_000, 10_000


def _recipe(record: Record, train: dict) -> list[str]:
    """What else decides a value and is not in the spec: an accuracy's training recipe (two
    runs of different recipes are not one series) and a training step's optimizer. A failed
    accuracy record has no result: its recipe is the run's configuration (``train``)."""
    if record.metric == "accuracy":
        if record.status == "ok":
            r = record.result
            return _recipe_words(r.epochs, r.train_images, r.optimizer, r.lr, r.momentum,
                                 r.label_smoothing, r.test_images)  # fmt: skip
        if train.get("epochs") is None:
            return []
        return _recipe_words(train["epochs"], train.get("train_subset") or _FULL_TRAIN,
                             train.get("optimizer"), train.get("lr"), train.get("momentum"),
                             train.get("label_smoothing"), train.get("test_subset") or _FULL_TEST)  # fmt: skip
    if record.spec.mode != "train" or record.metric not in ("latency", "memory"):
        return []
    if record.status == "ok":
        optimizer = record.result.optimizer
    elif train.get("optimizer") and train.get("lr") is None:  # each model's chapter rate
        optimizer = f"{train['optimizer']} at the model's chapter lr"
    elif train.get("optimizer"):  # as the measure labels it (Optimizer.label)
        optimizer = Optimizer(train["optimizer"], train["lr"], train.get("momentum") or 0.0).label
    else:
        optimizer = None
    return [f"step {optimizer}"] if optimizer else []


def _options(spec: dict, record: Record | None = None, train: dict | None = None) -> str:
    """The spec fields outside the series columns, in words, where they are not the default;
    then the recipe of a training value."""
    words = []
    for name, default in _DEFAULT_SPEC.items():
        value = spec.get(name)
        if value == default:
            continue
        if isinstance(value, bool):
            words.append(name.replace("_", " ") if value else f"no {name.replace('_', ' ')}")
        else:
            words.append(f"{name.replace('_', ' ')} {value}")
    return ", ".join([*words, *(_recipe(record, train or {}) if record is not None else [])])


@dataclass(frozen=True)
class _Run:
    folder: Path
    row: dict
    measurements: tuple[dict, ...]


def _utc(stamp, where: Path) -> str:
    """env.json's ``collected_at`` in UTC, ISO 8601 (so that the text sorts in time order); a
    run without a readable start time cannot be placed on a trend and is refused."""
    try:
        when = dt.datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        raise HistoryError(f"{where}: collected_at {stamp!r} is not an ISO 8601 time; a run needs "
                           "its start time to be placed on a trend") from None  # fmt: skip
    if when.tzinfo is None:  # a time without a zone: taken as UTC, as cnnbench writes it
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def _resume_notes(env: dict) -> str | None:
    """What a resume changed that the run's identity does not show: another commit, machine or
    software measured part of the records."""
    from ..env import fingerprint_id

    notes = []
    for later in env.get("resumed") or []:
        if not isinstance(later, dict):
            continue
        if later.get("git_commit") and later.get("git_commit") != env.get("git_commit"):
            notes.append(f"resumed on commit {str(later['git_commit'])[:8]} (began on {str(env.get('git_commit'))[:8]})")
        if later.get("fingerprint") and fingerprint_id(later) != fingerprint_id(env):
            notes.append(f"resumed with fingerprint {fingerprint_id(later)} (began with {fingerprint_id(env)})")
    return "; ".join(dict.fromkeys(notes)) or None


def _read_run(folder: Path) -> _Run:
    """A run folder as a ``runs`` row and its ``measurements`` rows (raises HistoryError, or
    CorruptStore for a line of results.jsonl that is not a record)."""
    from ..env import fingerprint, fingerprint_id, hardware_id, machine

    store = RunStore(folder)
    missing = [p.name for p in (store.results_path, store.env_path) if not p.is_file()]
    if missing:
        raise HistoryError(f"{folder}: not a run folder (no {' or '.join(missing)}); see: cnnbench run --out DIR")  # fmt: skip
    try:
        env = store.read_env()  # names the file when it is not JSON or not an object
    except CorruptEnv as exc:
        raise HistoryError(str(exc)) from None
    records = store.records()  # a corrupt line raises CorruptStore, naming file and line
    ident = run_id(env)
    try:
        fp = env.get("fingerprint") or fingerprint(env)
        versions = env.get("versions") or {}
        row = {
            "run_id": ident, "path": str(folder), "collected_at": _utc(env.get("collected_at"), store.env_path),
            "git_commit": env.get("git_commit"), "git_dirty": env.get("git_dirty"),
            "fingerprint_id": env.get("fingerprint_id") or fingerprint_id(env),
            "hardware_id": hardware_id(env), "fingerprint": json.dumps(fp, sort_keys=True, default=str),
            "machine": machine(fp, software=False), "notes": _resume_notes(env),
            "device": env.get("device"), "torch": versions.get("torch"), "cnnbench": versions.get("cnnbench"),
            "command_line": (env.get("config") or {}).get("command_line"),
        }  # fmt: skip
    except HistoryError:
        raise
    except (AttributeError, TypeError, ValueError) as exc:
        raise HistoryError(f"{store.env_path}: not a cnnbench env.json ({type(exc).__name__}: {exc})") from None  # fmt: skip
    rows = []
    for i, record in enumerate(records):
        spec = asdict(record.spec)
        key = {"run_id": ident, "metric": record.metric, "model": spec["model"],
               "image_size": spec["image_size"], "batch_size": spec["batch_size"],
               "dtype": spec["dtype"], "mode": spec["mode"], "device": spec["device"],
               "spec": json.dumps(spec, sort_keys=True)}  # fmt: skip
        try:
            values = summaries(record)
            options = _options(spec, record, (env.get("config") or {}).get("train") or {})
        except (TypeError, ValueError, KeyError, AttributeError) as exc:  # values this cnnbench cannot read
            raise HistoryError(f"{store.results_path}: record {i + 1} ({record.metric} {spec['model']}) has "
                               f"values this cnnbench cannot read ({type(exc).__name__}: {exc}); "
                               "a newer cnnbench wrote it?") from None  # fmt: skip
        for s in values:
            rows.append({**key, "options": options, **asdict(s), "status": record.status,
                         "reason": record.reason})  # fmt: skip
    return _Run(folder, row, tuple(rows))


# --- the file --------------------------------------------------------------------------------------


def _refuse(path: Path, why: str) -> HistoryError:
    return HistoryError(f"{path}: {why}; the file was left unchanged — name another history file "
                        f"(--db, run --history or ${HISTORY_ENV}), or move this one away")  # fmt: skip


def _raise_if_busy(path: Path, exc: sqlite3.DatabaseError) -> None:
    """When SQLite gave up waiting for another writer's lock (BUSY_TIMEOUT_S), say so."""
    if "locked" in str(exc) or "busy" in str(exc):
        raise HistoryError(f"{path}: still locked by another writer after {BUSY_TIMEOUT_S:g} s; try again") from None  # fmt: skip


def _check_or_create(con: sqlite3.Connection, path: Path, app: int, create: bool) -> None:
    """Make a new or empty file a history (with ``create``), or check that it is one: ours
    (application_id), not newer than this cnnbench, and whole (quick_check)."""
    version = con.execute("PRAGMA user_version").fetchone()[0]
    objects = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master"))
    if app == 0 and version == 0 and not objects:  # a new or empty file, nobody's yet
        if not create:
            raise HistoryError(f"{path}: an empty history; add runs with: cnnbench history add RUN_DIR --db {path}")  # fmt: skip
        con.execute("BEGIN IMMEDIATE")  # a second process creating it at once waits, then no-ops
        for statement in _SCHEMA:
            con.execute(statement)
        con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        con.execute("COMMIT")
    elif app != APPLICATION_ID:
        what = f"holding {', '.join(objects)}" if objects else f"user_version {version}"
        raise _refuse(path, f"another program's SQLite database, not a cnnbench history "
                      f"(application_id {app:#x}, {what})")  # fmt: skip
    elif version > SCHEMA_VERSION:
        raise _refuse(path, f"a history of a newer cnnbench (schema {version}, this one reads {SCHEMA_VERSION})")  # fmt: skip
    problems = [r[0] for r in con.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise _refuse(path, f"a damaged cnnbench history (quick_check: {'; '.join(problems)[:200]})")  # fmt: skip


def _open(path: Path, *, create: bool) -> sqlite3.Connection:
    """A connection to a checked cnnbench history; with ``create``, a missing or empty file is
    made one. Nothing else is ever written on opening. (SQLite itself rolls back a write that a
    killed process left half done — its journal — when the file is next opened: that restores
    the last committed state, which is what a transaction promises.)"""
    if path.is_dir():
        raise HistoryError(f"{path}: is a folder, not a history file; give a file, e.g. {path / 'history.sqlite'}")  # fmt: skip
    if not path.exists() and not create:
        raise HistoryError(f"{path}: no history here; add runs with: cnnbench history add RUN_DIR --db {path}")  # fmt: skip
    app = con = None
    try:
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            app = con.execute("PRAGMA application_id").fetchone()[0]
            _check_or_create(con, path, app, create)
        except sqlite3.OperationalError as exc:
            _raise_if_busy(path, exc)
            raise _refuse(path, f"not a cnnbench history ({exc})") from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", "disk image is malformed"
            what = "a damaged cnnbench history" if app == APPLICATION_ID else "not a cnnbench history"
            raise _refuse(path, f"{what} ({exc})") from None
        except OSError as exc:  # a folder that cannot be made, a file that cannot be opened
            blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
            why = f"{blocker} is a file, not a folder" if blocker else exc.strerror or str(exc)
            raise HistoryError(f"{path}: cannot be created or opened ({why})") from None
    except BaseException:
        if con is not None:  # refused: nothing stays open on the file
            con.close()
        raise
    return con


def check(path: str | os.PathLike) -> None:
    """Raise HistoryError now if ``path`` exists and is not a usable history (``cnnbench run``
    checks before measuring, not after); a missing file is fine: add makes it."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        return  # an empty file: add makes it a history
    if path.exists():
        _open(path, create=False).close()
    elif not os.access(_existing_parent(path), os.W_OK):
        raise HistoryError(f"{path}: cannot be created ({_existing_parent(path)} is not writable)")


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


@dataclass(frozen=True)
class Added:
    """What ``add`` did with one run folder."""

    folder: str
    run_id: str
    known: bool  # the run was in the history already
    new: int  # measurement rows written for the first time
    updated: int  # rows whose values changed (a record re-measured by a resume)
    unchanged: int
    removed: int = 0  # rows of values the folder no longer holds (a retried error's)


def link(folder: Path, db: Path) -> str:
    """Where a run folder is, as the history keeps it: relative to the history file's folder when
    inside it (a history and its runs move together, e.g. as one CI artifact), else absolute."""
    folder, home = folder.resolve(), db.resolve().parent
    return folder.relative_to(home).as_posix() if folder.is_relative_to(home) else str(folder)


def _insert(con: sqlite3.Connection, run: _Run, now: str, path: str) -> Added:
    known = con.execute("SELECT path, notes FROM runs WHERE run_id = ?", (run.row["run_id"],)).fetchone()
    if known is None:
        row = {**run.row, "path": path, "added_at": now}
        con.execute(f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                    list(row.values()))  # fmt: skip
    elif tuple(known) != (path, run.row["notes"]):  # the folder moved, or was resumed since
        con.execute("UPDATE runs SET path = ?, notes = ? WHERE run_id = ?",
                    (path, run.row["notes"], run.row["run_id"]))  # fmt: skip
    new = updated = unchanged = 0
    where = " AND ".join(f"{c} = ?" for c in ("run_id", "metric", "spec", "value_name"))
    rows = list(_named_failures(con, run.measurements))
    # a record the folder holds with other values than before (a resume retried a failed one)
    # leaves none of its old rows behind; a record the folder does not hold at all (a partial
    # copy of the run) keeps its rows: adding never forgets what a run measured
    keep = {(m["metric"], m["spec"], m["value_name"]) for m in rows}
    held = {(m["metric"], m["spec"]) for m in rows}
    stale = [k for k in con.execute("SELECT metric, spec, value_name FROM measurements WHERE run_id = ?",
                                    (run.row["run_id"],))
             if tuple(k) not in keep and (k[0], k[1]) in held]  # fmt: skip
    for k in stale:
        con.execute(f"DELETE FROM measurements WHERE {where}", (run.row["run_id"], *k))
    for m in rows:
        key = (m["run_id"], m["metric"], m["spec"], m["value_name"])
        old = con.execute(f"SELECT {', '.join(_STAT_COLUMNS)} FROM measurements WHERE {where}", key).fetchone()  # fmt: skip
        if old is None:
            cols = [*_KEY_COLUMNS, *_STAT_COLUMNS]
            con.execute(f"INSERT INTO measurements ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [m[c] for c in cols])  # fmt: skip
            new += 1
        elif tuple(old) != tuple(m[c] for c in _STAT_COLUMNS):
            sets = ", ".join(f"{c} = ?" for c in _STAT_COLUMNS)
            con.execute(f"UPDATE measurements SET {sets} WHERE {where}", [*(m[c] for c in _STAT_COLUMNS), *key])  # fmt: skip
            updated += 1
        else:
            unchanged += 1
    return Added(str(run.folder), run.row["run_id"], known is not None, new, updated, unchanged, len(stale))


def _named_failures(con: sqlite3.Connection, rows: Iterable[dict]) -> Iterable[dict]:
    """The rows of a run, where a failed record whose values are named by what it measured (a
    scaling record: by kind and world size) gets one row per name its configuration had in
    earlier runs, so that "ok → error" shows in those series."""
    for m in rows:
        if m["status"] == "ok" or m["metric"] != "scaling":
            yield m
            continue
        names = [r[0] for r in con.execute(
            "SELECT DISTINCT value_name FROM measurements WHERE metric = ? AND model = ? AND image_size = ? "
            "AND batch_size = ? AND dtype = ? AND mode = ? AND device = ? AND options = ? AND status = 'ok'",
            [m[c] for c in ("metric", "model", "image_size", "batch_size", "dtype", "mode", "device", "options")])]  # fmt: skip
        for name in names or [m["value_name"]]:
            yield {**m, "value_name": name}


def add_runs(path: str | os.PathLike, folders: Iterable[str | os.PathLike]) -> list[Added]:
    """Index run folders into the history at ``path`` (made if missing), in one transaction.
    Every folder is read first: one that is not a readable run refuses the command before the
    file is touched."""
    path = Path(path)
    runs = [_read_run(Path(f)) for f in folders]
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    con = _open(path, create=True)
    try:
        con.execute("BEGIN IMMEDIATE")  # the write lock now: the reads below see no one else's half
        try:
            added = [_insert(con, run, now, link(run.folder, path)) for run in runs]
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:  # SQLite may have rolled back already (disk full, I/O error)
                con.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as exc:
        _raise_if_busy(path, exc)
        raise HistoryError(f"{path}: writing failed ({exc}); nothing of this add was kept") from None
    finally:
        con.close()
    return added


# --- reading ---------------------------------------------------------------------------------------

_RUN_COLUMNS = ("collected_at", "git_commit", "git_dirty", "hardware_id", "machine",
                "fingerprint_id", "fingerprint", "run_id", "path", "notes", "added_at")  # fmt: skip
COLUMNS = (*_RUN_COLUMNS[:-1], *_KEY_COLUMNS[1:], *_STAT_COLUMNS, "added_at")


def read(
    path: str | os.PathLike,
    *,
    metric: str | None = None,
    models: Sequence[str] | None = None,
    last: int | None = None,
) -> pd.DataFrame:
    """Every measurement of the history joined with its run, oldest run first: one tidy row per
    (run, record, value). ``metric`` is a metric (``latency``) or a value (``images_per_s``);
    ``models`` fnmatch patterns; ``last``: only the newest ``last`` runs."""
    path = Path(path)
    con = _open(path, create=False)
    try:
        cols = ", ".join(f"r.{c}" if c in _RUN_COLUMNS else f"m.{c}" for c in COLUMNS)
        sql = f"SELECT {cols} FROM measurements m JOIN runs r USING (run_id)"
        where, args = [], []
        if metric:
            where.append("(m.metric = ? OR m.value_name = ?)")
            args += [metric, metric]
        if last:  # the newest runs only: ordered by start time, ties in the order they were added
            where.append("r.run_id IN (SELECT run_id FROM runs ORDER BY collected_at DESC, rowid DESC LIMIT ?)")
            args.append(min(last, 2**62))  # more than SQLite counts: every run
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.collected_at, r.rowid, m.metric, m.model, m.image_size, m.batch_size, m.mode, m.value_name"  # fmt: skip
        rows = con.execute(sql, args).fetchall()
    except sqlite3.DatabaseError as exc:
        raise _refuse(path, f"not readable ({exc})") from None
    finally:
        con.close()
    frame = pd.DataFrame(rows, columns=list(COLUMNS), dtype=object)
    if models:
        keep = frame["model"].map(lambda m: any(fnmatch.fnmatchcase(m, p) for p in models))
        frame = frame[keep.astype(bool)].reset_index(drop=True)
    return frame
