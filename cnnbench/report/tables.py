"""Tables derived from records. A report never measures: everything here reads records."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from ..results import Record

__all__ = ["ok_records", "overview", "status_note"]


def ok_records(records: Iterable[Record], metric: str, **spec_fields) -> list[Record]:
    """The ``ok`` records of ``metric`` whose spec matches every given field (model=..., mode=...)."""
    return [
        r
        for r in records
        if r.metric == metric
        and r.status == "ok"
        and all(getattr(r.spec, k) == v for k, v in spec_fields.items())
    ]


def status_note(records: Iterable[Record]) -> str:
    """'2 oom, 1 error' for the records that did not end ok ('' when all did)."""
    counts: dict[str, int] = {}
    for r in records:
        if r.status != "ok":
            counts[r.status] = counts.get(r.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def overview(records: list[Record]) -> pd.DataFrame:
    """One row per model: the headline numbers, each taken from the record that holds it.

    Columns are ``None`` where no ok record exists; ``not_ok`` says which records failed and how.
    """
    rows = []
    for model in dict.fromkeys(r.spec.model for r in records):
        mine = [r for r in records if r.spec.model == model]
        row: dict = {"model": model, "image_size": mine[0].spec.image_size}
        p = ok_records(mine, "params")
        row["params"] = p[0].values["params_total"] if p else None
        f = ok_records(mine, "flops")
        row["gmacs"] = f[0].values["gmacs"] if f else None
        b1 = ok_records(mine, "latency", mode="inference", batch_size=1)
        row["latency_ms_p50_b1"] = b1[0].values["latency_ms_p50"] if b1 else None
        row["latency_b1_flags"] = _flags(b1[0]) if b1 else ""
        for mode, prefix in (("inference", "infer"), ("train", "train")):
            lat = ok_records(mine, "latency", mode=mode)
            best = max(lat, key=lambda r: r.values["images_per_s"], default=None)
            row[f"{prefix}_images_per_s_best"] = best.values["images_per_s"] if best else None
            row[f"{prefix}_best_batch"] = best.spec.batch_size if best else None
            mem = ok_records(mine, "memory", mode=mode)
            top = max(mem, key=lambda r: r.spec.batch_size, default=None)
            row[f"{prefix}_memory_bytes"] = top.values["measured_bytes"] if top else None
            row[f"{prefix}_memory_batch"] = top.spec.batch_size if top else None
        acc = [r for r in mine if r.metric == "accuracy" and r.status in ("ok", "diverged")]
        a = acc[0].values if acc else {}
        row["test_accuracy_mean"] = a.get("test_accuracy_mean")
        row["test_accuracy_std"] = a.get("test_accuracy_std")
        row["train_time_s_mean"] = a.get("train_time_s_mean")
        row["accuracy_status"] = acc[0].status if acc else None
        row["train_image_size"] = acc[0].spec.image_size if acc else None
        roof = ok_records(mine, "roofline")
        row["mfu"] = roof[0].values["mfu"] if roof else None
        row["not_ok"] = status_note(mine)
        rows.append(row)
    return pd.DataFrame(rows)


def _flags(record: Record) -> str:
    v = record.values
    return "".join(
        mark
        for mark, on in (("unstable", v.get("unstable")), ("contended", v.get("contended")))
        if on
    )
