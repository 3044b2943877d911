import json
import math

import pytest

from cnnbench.results import Record, RunStore, Spec, load_records, records_frame


def test_record_round_trip_and_nan_is_never_written(tmp_path):
    store = RunStore(tmp_path / "run").create()
    rec = Record(
        "latency", Spec("nin", 224, 8, mode="train"), "ok", {"latency_ms_p50": 1.5, "x": None}
    )
    store.append(rec)
    store.append(Record.failed("latency", Spec("nin", 224, 512), "oom", "CUDA out of memory"))
    back = store.records()
    assert back[0] == rec
    assert back[1].status == "oom" and back[1].reason == "CUDA out of memory"
    with pytest.raises(ValueError):
        Record("latency", Spec("nin", 224), "ok", {"bad": math.nan}).to_json()


def test_status_needs_a_reason_and_a_known_value():
    with pytest.raises(ValueError):
        Record("latency", Spec("nin", 224), "error")
    with pytest.raises(ValueError):
        Record("latency", Spec("nin", 224), "weird", reason="x")


def test_latest_record_wins_and_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "results.jsonl"
    first = Record.failed("params", Spec("nin", 224), "error", "boom")
    second = Record("params", Spec("nin", 224), "ok", {"params_total": 1})
    path.write_text(first.to_json() + "\n" + second.to_json() + "\n" + second.to_json()[:40])
    assert load_records(path) == [second]
    assert len(load_records(path, latest_only=False)) == 2
    frame = records_frame(load_records(path))
    assert frame.loc[0, "params_total"] == 1 and frame.loc[0, "model"] == "nin"


def test_env_json_is_replaced_atomically(tmp_path):
    store = RunStore(tmp_path).create()
    store.write_env({"a": 1})
    store.write_env({"a": 2})
    assert json.loads((tmp_path / "env.json").read_text()) == {"a": 2}
    assert not list(tmp_path.glob("*.tmp"))
