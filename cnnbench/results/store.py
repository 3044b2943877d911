"""The run store: a run folder's ``results.jsonl`` (one record per line, appended as each
finishes) and ``env.json``; everything else (CSV, reports) is derived from them."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .record import Record, _json_default

__all__ = ["CorruptStore", "RunStore", "load_records", "records_frame"]


class CorruptStore(ValueError):
    """A line of results.jsonl that is not a record (and not a torn last line): refused, with
    the file and the line number, and the file left as it is."""

    def __init__(self, path: Path, line_no: int, detail: str):
        super().__init__(
            f"{path}:{line_no}: not a cnnbench record ({detail}); the file was left unchanged — "
            "repair or remove that line, or measure into a new folder"
        )
        self.path, self.line_no = path, line_no


class RunStore:
    """A run folder: ``results.jsonl`` appended one finished record at a time, and ``env.json``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.results_path = self.root / "results.jsonl"
        self.env_path = self.root / "env.json"

    def create(self) -> RunStore:
        """The folder, and an empty results.jsonl in it if there is none: a run with nothing to
        measure (a shard that drew no unit) is still a run folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.results_path.touch(exist_ok=True)
        return self

    def repair_torn_tail(self) -> str | None:
        """Cut a torn last line (a write interrupted by a crash: bytes after the last newline)
        back to the last complete record; says what was dropped, or None if nothing was."""
        if not self.results_path.exists():
            return None
        fd = os.open(self.results_path, os.O_RDWR)
        try:
            return _cut_torn_tail(fd, self.results_path)
        finally:
            os.close(fd)

    def append(self, record: Record) -> str | None:
        """Append ``record`` as one line, fsynced; returns what a torn-tail repair dropped first.

        One write() of one whole line on an O_APPEND descriptor, then fsync: a crash or Ctrl-C
        leaves every finished record intact and at worst a partial line of the one in flight,
        which the next append cuts away before writing (else the next record would be glued to
        the fragment and lost).
        """
        line = (record.to_json() + "\n").encode()
        fd = os.open(self.results_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            repaired = _cut_torn_tail(fd, self.results_path)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return repaired

    def records(self) -> list[Record]:
        return load_records(self.results_path) if self.results_path.exists() else []

    def write_env(self, env: dict[str, Any]) -> None:
        tmp = self.env_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(env, indent=2, default=_json_default) + "\n")
        os.replace(tmp, self.env_path)  # atomic: readers see the old or the new file, not half

    def read_env(self) -> dict[str, Any]:
        return json.loads(self.env_path.read_text()) if self.env_path.exists() else {}


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
