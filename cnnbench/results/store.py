"""The run store: a run folder's ``results.jsonl`` (one record per line, appended as each
finishes) and ``env.json``; everything else (CSV, reports) is derived from them.

Faults end in one typed error that names the file, never a bare traceback: :class:`StoreError`
(an ``OSError``: a write that failed; :class:`StoreFull` when the disk or quota is full, and the
partial line is cut back first), :class:`CorruptStore` / :class:`CorruptEnv` (a file that is not
what a run writes), :class:`RunLocked` (another process is writing into the folder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .record import Record, _json_default

__all__ = [
    "CorruptEnv",
    "CorruptStore",
    "LockHolder",
    "RunLock",
    "RunLocked",
    "RunStore",
    "StoreError",
    "StoreFull",
    "load_records",
    "records_frame",
]

LOCK_NAME = "run.lock"
# a full device (ENOSPC) or a full quota (EDQUOT): space, not a broken disk, and freeing some
# lets a resume go on where the run stopped
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
# flock refused by the filesystem (Lustre without -o flock, some FUSE and old NFS mounts)
_NO_FLOCK = frozenset({errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK})


class CorruptStore(ValueError):
    """A line of results.jsonl that is not a record (and not a torn last line): refused, with
    the file and the line number, and the file left as it is."""

    def __init__(self, path: Path, line_no: int, detail: str):
        super().__init__(
            f"{path}:{line_no}: not a cnnbench record ({detail}); the file was left unchanged — "
            "repair or remove that line, or measure into a new folder"
        )
        self.path, self.line_no = path, line_no


class CorruptEnv(CorruptStore):
    """An env.json that is not a JSON object (damaged, truncated by hand, another program's):
    refused, naming the file, which is left as it is."""

    def __init__(self, path: Path, detail: str):
        ValueError.__init__(
            self,
            f"{path}: not a cnnbench env.json ({detail}); the file was left unchanged — restore "
            "it from a copy, or measure into a new folder",
        )
        self.path, self.line_no = path, None


class StoreError(OSError):
    """A run folder that could not be written: one line naming the file (``str(exc)``), and the
    OS error's ``errno`` and ``filename`` as any ``OSError`` has them."""

    def __init__(self, path: str | os.PathLike, message: str, code: int | None = None):
        super().__init__(code, message, str(path))
        self.path, self.message = Path(path), message

    def __str__(self) -> str:
        return self.message


class StoreFull(StoreError):
    """No space left for the run folder (ENOSPC or EDQUOT); what was written before is whole."""


@dataclass(frozen=True)
class LockHolder:
    """Who took a run folder's lock, as its lock file says (None where it did not say)."""

    pid: int | None = None
    host: str | None = None
    started_at: str | None = None  # ISO 8601, UTC
    command_line: str | None = None

    def describe(self) -> str:
        if self.pid is None:
            return "a process that has not written its details yet"
        line = f"pid {self.pid} on {self.host}, started {self.started_at}"
        return line + (f" ({self.command_line})" if self.command_line else "")


class RunLocked(StoreError):
    """The run folder is locked by a live process (``holder``): a second run is refused."""

    def __init__(self, root: Path, holder: LockHolder):
        super().__init__(
            root / LOCK_NAME,
            f"{root}: another run is writing into this folder: {holder.describe()}; wait for it "
            "to end, or measure into another folder",
            errno.EWOULDBLOCK,
        )
        self.holder = holder


@contextlib.contextmanager
def _as_store_error(path: Path, doing: str) -> Iterator[None]:
    """An OSError inside becomes a :class:`StoreError` (``StoreFull`` for a full disk) that
    names ``path`` and what was being done."""
    try:
        yield
    except StoreError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno in _FULL:
            raise StoreFull(
                path,
                f"{path}: no space left ({reason}) while {doing}; every record written before is "
                "kept whole — free some space, then resume the run",
                exc.errno,
            ) from exc
        raise StoreError(path, f"{path}: failed while {doing} ({reason})", exc.errno) from exc


class RunStore:
    """A run folder: ``results.jsonl`` appended one finished record at a time, and ``env.json``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.results_path = self.root / "results.jsonl"
        self.env_path = self.root / "env.json"
        self.lock_path = self.root / LOCK_NAME

    def create(self) -> RunStore:
        """The folder, and an empty results.jsonl in it if there is none: a run with nothing to
        measure (a shard that drew no unit) is still a run folder."""
        with _as_store_error(self.results_path, "creating the run folder"):
            self.root.mkdir(parents=True, exist_ok=True)
            self.results_path.touch(exist_ok=True)
        return self

    def has_records(self) -> bool:
        """Whether results.jsonl holds anything (a new run must not write into an old one's)."""
        return self.results_path.exists() and self.results_path.stat().st_size > 0

    def lock(self, command_line: str = "") -> RunLock:
        """Take the folder's lock for this process (creating the folder): use as ``with
        store.lock(...) as lock``. Raises :class:`RunLocked` naming the holder when a live
        process has it; a lock a dead process left behind is taken over (``lock.took_over``)."""
        with _as_store_error(self.lock_path, "taking the run folder's lock"):
            self.root.mkdir(parents=True, exist_ok=True)
            return RunLock.take(self.lock_path, command_line)

    def held_by(self) -> LockHolder | None:
        """The live holder of the folder's lock, or None: a check before a run, which takes the
        lock only for an instant (:meth:`lock` is what decides)."""
        with _as_store_error(self.lock_path, "reading the run folder's lock"):
            try:
                fd = os.open(self.lock_path, os.O_RDWR)
            except FileNotFoundError:
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd)
            except OSError as exc:
                if exc.errno not in _NO_FLOCK:
                    raise
                return _live_here(_read_holder(fd))  # no flock here: the pid is all there is
            finally:
                os.close(fd)  # closing releases a flock this check took
        return None

    def repair_torn_tail(self) -> str | None:
        """Cut a torn last line (a write interrupted by a crash: bytes after the last newline)
        back to the last complete record; says what was dropped, or None if nothing was."""
        if not self.results_path.exists():
            return None
        with _as_store_error(self.results_path, "repairing its torn last line"):
            fd = os.open(self.results_path, os.O_RDWR)
            try:
                return _cut_torn_tail(fd, self.results_path)
            finally:
                os.close(fd)

    def append(self, record: Record) -> str | None:
        """Append ``record`` as one line, fsynced; returns what a torn-tail repair dropped first.

        The whole line goes onto an O_APPEND descriptor, then fsync: a crash or Ctrl-C leaves
        every finished record intact and at worst a partial line of the one in flight, which the
        next append cuts away before writing (else the next record would be glued to the
        fragment and lost). A write or fsync that fails (a full disk) cuts its partial line back
        at once and raises :class:`StoreError` / :class:`StoreFull`.
        """
        line = (record.to_json() + "\n").encode()
        with _as_store_error(self.results_path, "appending a record"):
            fd = os.open(self.results_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                repaired = _cut_torn_tail(fd, self.results_path)
                _append_whole(fd, line)
            finally:
                os.close(fd)
        return repaired

    def records(self) -> list[Record]:
        return load_records(self.results_path) if self.results_path.exists() else []

    def write_env(self, env: dict[str, Any]) -> None:
        """env.json, replaced atomically: readers (and a crash) see the old file or the new one,
        never half of one; a failed write leaves the old file and no temporary file."""
        data = (json.dumps(env, indent=2, default=_json_default) + "\n").encode()
        tmp = self.env_path.with_suffix(".json.tmp")
        with _as_store_error(self.env_path, "writing env.json"):
            try:
                _write_durably(tmp, data)
                os.replace(tmp, self.env_path)
            except BaseException:  # a full disk, or a signal between the write and the rename
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
                raise
        _fsync_folder(self.root)

    def read_env(self) -> dict[str, Any]:
        """env.json as a dict ({} when there is none); raises :class:`CorruptEnv` naming the
        file when it is not a JSON object."""
        if not self.env_path.exists():
            return {}
        try:
            env = json.loads(self.env_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptEnv(self.env_path, f"{type(exc).__name__}: {exc}"[:200]) from None
        if not isinstance(env, dict):
            raise CorruptEnv(self.env_path, f"a JSON {type(env).__name__}, not an object")
        return env


class RunLock:
    """A held run-folder lock: an exclusive ``flock`` on ``run.lock``, kept open for the run's
    life, so that the OS releases it when the process ends however it ends (a crash, SIGKILL).
    The file's JSON names the holder for a refused second run; a file left by a process that
    died is stale, since its flock went with it, and is taken over (``took_over`` says so).

    flock is per open file: two takers in one process also exclude each other. The descriptor
    is not inherited by exec'd children (O_CLOEXEC); the workers come from a forkserver, which
    never held it. Where the filesystem refuses flock, a holder named in the file is refused
    while its pid lives on this host, and ``unlocked`` says the folder is not truly locked."""

    def __init__(self, path: Path, fd: int, stale: LockHolder | None, unlocked: str | None = None):
        self.path, self._fd, self.stale, self.unlocked = path, fd, stale, unlocked

    @classmethod
    def take(cls, path: Path, command_line: str = "") -> RunLock:
        fd, unlocked = _flock_file(path)
        try:
            previous = os.pread(fd, 4096, 0)
            stale = _parse_holder(previous) if previous.strip() else None
            os.ftruncate(fd, 0)
            _write_all(fd, json.dumps(dataclasses.asdict(_this_holder(command_line))).encode())
            os.fsync(fd)
        except BaseException:
            cls(path, fd, None).release()
            raise
        return cls(path, fd, stale, unlocked)

    @property
    def warning(self) -> str | None:
        """What a run should say on taking the lock (a stale lock taken over, or no OS lock)."""
        return "; ".join(w for w in (self.unlocked, self.took_over) if w) or None

    @property
    def took_over(self) -> str | None:
        """A line saying that a stale lock was taken over, or None."""
        if self.stale is None:
            return None
        return (f"{self.path}: took over the lock of {self.stale.describe()}: that process is "
                "gone (it ended without releasing it: a crash or a kill)")  # fmt: skip

    def release(self) -> None:
        """Remove the lock file, then let go of the flock (in this order: a taker that opened
        the old file before the removal sees that it is no longer the folder's and retries)."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _flock_file(path: Path) -> tuple[int, str | None]:
    """An open descriptor of ``path`` holding its exclusive flock, and None; or, where the
    filesystem has no flock, the descriptor and a line saying so. Raises :class:`RunLocked`."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLocked(path.parent, holder) from None
        except OSError as exc:
            live = _live_here(_read_holder(fd)) if exc.errno in _NO_FLOCK else None
            if exc.errno in _NO_FLOCK and not live:
                return fd, (f"{path}: this filesystem cannot lock files ({exc.strerror}); a "
                            "second run into this folder from another machine would not be "
                            "refused")  # fmt: skip
            os.close(fd)  # closed, not removed: the file is the live holder's
            if live:
                raise RunLocked(path.parent, live) from None
            raise
        except BaseException:
            os.close(fd)
            raise
        if _is_same_file(fd, path):
            return fd, None
        os.close(fd)  # the holder removed this file as it let go: lock the one there now


def _live_here(holder: LockHolder) -> LockHolder | None:
    """``holder`` if it is a live process of this host (the check where flock is missing)."""
    # our own pid in the file is a leftover (a container reuses its small pids), not a holder
    if holder.pid is None or holder.host != socket.gethostname() or holder.pid == os.getpid():
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return holder


def _is_same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _this_holder(command_line: str) -> LockHolder:
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return LockHolder(os.getpid(), socket.gethostname(), started, command_line or None)


def _read_holder(fd: int) -> LockHolder:
    return _parse_holder(os.pread(fd, 4096, 0))


def _parse_holder(data: bytes) -> LockHolder:
    """The holder a lock file names; an empty or half-written file names nobody yet."""
    try:
        facts = json.loads(data)
        return LockHolder(**{f.name: facts.get(f.name) for f in dataclasses.fields(LockHolder)})
    except (ValueError, TypeError, AttributeError):
        return LockHolder()


def _write_all(fd: int, data: bytes) -> None:
    """``data`` at the descriptor's position, however many writes it takes (a write may be
    short: a signal, or the last free blocks of a disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _append_whole(fd: int, line: bytes) -> None:
    """Append ``line`` and fsync, or leave the file as it was: a failed write or fsync (a full
    disk; ext4 and XFS often report it only at fsync) cuts its partial line back before the
    error goes on, so that the file holds whole records only."""
    start = os.fstat(fd).st_size
    try:
        _write_all(fd, line)
        os.fsync(fd)
    except OSError:
        # truncating frees space, so it works on a full disk; if it fails too, the torn tail is
        # cut by the next append or resume (repair_torn_tail)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
            os.fsync(fd)
        raise


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)  # the data is on disk before the rename makes it the file
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable. Best effort: some filesystems refuse to fsync a
    folder, and the rename itself is already atomic for readers."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _cut_torn_tail(fd: int, path: Path) -> str | None:
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return None
    data = os.pread(fd, size, 0)
    keep = data.rfind(b"\n") + 1  # 0 when the file holds nothing but the fragment
    dropped = data[keep:]
    os.ftruncate(fd, keep)
    os.fsync(fd)
    preview = dropped[:60].decode("utf-8", "replace")
    return (
        f"{path}: dropped a torn last line ({len(dropped)} bytes, '{preview}…') left by an "
        "interrupted write; every complete record before it is kept"
    )


def load_records(path: str | os.PathLike, *, latest_only: bool = True) -> list[Record]:
    """Records of a ``results.jsonl``; with ``latest_only`` a re-measured key keeps its last record.

    A last line without its newline that does not parse is a write cut short by a crash: it is
    skipped (every complete line before it is kept). Any other line that is not a record raises
    :class:`CorruptStore` with its line number.
    """
    path = Path(path)
    records: list[Record] = []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")  # the last item is "" when the file ends with a newline
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        torn = i == len(lines) - 1  # no newline after it
        try:
            records.append(Record.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError, ValueError, KeyError) as exc:
            if torn:
                continue
            raise CorruptStore(path, i + 1, f"{type(exc).__name__}: {exc}"[:200]) from None
    if latest_only:
        by_key = {r.key: r for r in records}
        records = list(by_key.values())
    return records


def records_frame(records: Iterable[Record]):
    """One tidy pandas row per record: ``spec`` and ``values`` flattened beside status/reason."""
    import pandas as pd

    rows = []
    for r in records:
        row = {
            "metric": r.metric,
            "status": r.status,
            "reason": r.reason,
            "duration_s": r.duration_s,
        }
        row.update(dataclasses.asdict(r.spec))
        for k, v in r.values.items():
            if not isinstance(v, (dict, list)):
                row[k] = v
        rows.append(row)
    return pd.DataFrame(rows)
