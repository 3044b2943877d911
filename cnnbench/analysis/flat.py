"""One flat row per model and configuration, in the spirit of timm's benchmark CSV: speed with its
interval, step time, counts, peak memory and accuracy as trained, side by side, raw numbers in
the units their names say. ``results.csv`` keeps every record (tidy); this is the table to load
when one row per configuration is what a user wants."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from ..results import Record
from .frames import Frames, ok_records, result_of

__all__ = ["COLUMNS", "CONFIG_COLUMNS", "models_frame"]

# what makes two rows different configurations of one model
CONFIG_COLUMNS = ("model", "image_size", "batch_size", "device", "dtype", "channels_last", "compiled")
_SPEED = ("samples_per_s", "samples_per_s_ci_low", "samples_per_s_ci_high", "step_ms", "rounds")
COLUMNS = (
    *CONFIG_COLUMNS, *(f"infer_{c}" for c in _SPEED), *(f"train_{c}" for c in _SPEED),
    "param_count", "gmacs", "infer_peak_bytes", "train_peak_bytes",
    "test_accuracy", "test_accuracy_seeds", "accuracy_image_size", "train_images", "epochs",
)  # fmt: skip
_COUNTS = ("infer_rounds", "train_rounds", "param_count", "infer_peak_bytes", "train_peak_bytes",
           "test_accuracy_seeds", "accuracy_image_size", "train_images", "epochs")  # fmt: skip


def _config(r: Record) -> tuple:
    s = r.spec
    return (s.model, s.image_size, s.batch_size, s.device, s.dtype, s.channels_last, s.compiled)


def _speed(r: Record, side: str) -> dict:
    """images/s with its 95% interval (the latency's, inverted: images/s = batch / latency)."""
    v, batch = r.result, r.spec.batch_size
    low, high = v.latency_ms_p50_ci_low, v.latency_ms_p50_ci_high
    return {
        f"{side}_samples_per_s": v.images_per_s,
        f"{side}_samples_per_s_ci_low": 1e3 * batch / high if high else None,
        f"{side}_samples_per_s_ci_high": 1e3 * batch / low if low else None,
        f"{side}_step_ms": v.latency_ms_p50,
        f"{side}_rounds": v.rounds,
    }


def _count(records: list[Record], metric: str, model: str, size: int):
    """The model's count at ``size`` (params are the same at every size; MACs are not)."""
    found = ok_records(records, metric, model=model, image_size=size)
    return result_of(found[0]) if found else None


def _accuracy(records: list[Record], model: str) -> dict:
    """The model's accuracy as trained, with the size and recipe it was trained at (which need
    not be the row's size: the columns say so)."""
    found = [r for r in records if r.metric == "accuracy" and r.spec.model == model]
    res = result_of(found[0]) if found else None
    return {
        "test_accuracy": res.test_accuracy_mean if res else None,
        "test_accuracy_seeds": len(res.runs) if res else None,
        "accuracy_image_size": found[0].spec.image_size if res else None,
        "train_images": res.train_images if res else None,
        "epochs": res.epochs if res else None,
    }


def _rows(records: list[Record]) -> Iterable[dict]:
    configs: dict[tuple, dict] = {}
    for r in ok_records(records, "latency") + ok_records(records, "memory"):
        row = configs.setdefault(_config(r), dict(zip(CONFIG_COLUMNS, _config(r), strict=True)))
        side = "infer" if r.spec.mode == "inference" else "train"
        if r.metric == "latency":
            row.update(_speed(r, side))
        else:
            row[f"{side}_peak_bytes"] = r.result.measured_bytes
    for row in configs.values():
        params = _count(records, "params", row["model"], row["image_size"])
        flops = _count(records, "flops", row["model"], row["image_size"])
        row["param_count"] = params.params_total if params else None
        row["gmacs"] = flops.gmacs if flops else None
        row.update(_accuracy(records, row["model"]))
        yield row


def models_frame(frames: Frames) -> pd.DataFrame:
    """One row per model and configuration that has a latency or memory record (ok ones only:
    a failed unit is in results.csv with its reason), sorted by model, size and batch."""
    table = pd.DataFrame(list(_rows(list(frames.records))), columns=list(COLUMNS))
    for column in _COUNTS:  # integers stay integers beside a missing value (not 7.0)
        table[column] = table[column].astype("Int64")
    return table.sort_values(["model", "image_size", "batch_size"], kind="stable").reset_index(drop=True)
