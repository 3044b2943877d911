"""Run folders for the history tests, made from the committed reference run (reports/cpu-quick):
real records, with a chosen start time, commit, CPU family and a latency scale factor; and
``slower``, which the compare tests use on their own records too."""

from __future__ import annotations

import json
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "reports" / "cpu-quick"

# every field of a latency record that is a time (scaled together), and the one that is a rate
_TIMES = ("latency_ms_min", "latency_ms_p50", "latency_ms_mean", "latency_ms_p90", "latency_ms_p99",
          "latency_ms_iqr", "latency_ms_std", "latency_ms_p50_ci_low", "latency_ms_p50_ci_high")  # fmt: skip


def source_records(models=("googlenet", "alexnet")) -> list[dict]:
    lines = (SOURCE / "results.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["spec"]["model"] in models]


def slower(record: dict, factor: float) -> dict:
    """A latency record as if every iteration had taken ``factor`` times as long."""
    record = json.loads(json.dumps(record))
    v = record["values"]
    if record["metric"] != "latency" or record["status"] != "ok" or factor == 1.0:
        return record
    for key in _TIMES:
        if v.get(key) is not None:
            v[key] *= factor
    for key in ("times_ms", "round_medians_ms"):
        if v.get(key):
            v[key] = [x * factor for x in v[key]]
    v["images_per_s"] /= factor
    return record


def make_run(folder: Path, *, when: str, factor: float = 1.0, family: int | None = None,
             commit: str = "0" * 40, records: list[dict] | None = None) -> Path:  # fmt: skip
    """A run folder started at ``when`` (ISO 8601), latencies × ``factor``, on a CPU of another
    ``family`` if given."""
    env = json.loads((SOURCE / "env.json").read_text())
    env.update(collected_at=when, git_commit=commit, git_dirty=False)
    if family is not None:
        env["cpu"]["facts"]["family"] = family
    folder.mkdir(parents=True)
    (folder / "env.json").write_text(json.dumps(env, indent=2))
    chosen = source_records() if records is None else records
    lines = [json.dumps(slower(r, factor)) for r in chosen]
    (folder / "results.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder
