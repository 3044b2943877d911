import json
import math

import pytest

from cnnbench.results import CorruptStore, Record, RunStore, Spec, load_records, records_frame


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


def test_append_after_a_torn_last_line_keeps_the_new_record(tmp_path):
    store = RunStore(tmp_path).create()
    first = Record("params", Spec("nin", 224), "ok", {"params_total": 1})
    second = Record("params", Spec("googlenet", 96), "ok", {"params_total": 2})
    store.append(first)
    with open(store.results_path, "a") as f:
        f.write(second.to_json()[:37])  # a crash in the middle of a write
    message = store.append(second)
    assert "dropped a torn last line (37 bytes" in message
    assert store.records() == [first, second]
    store.append(Record("params", Spec("alexnet", 224), "ok", {"params_total": 3}))
    lines = store.results_path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x)["metric"] == "params" for x in lines)
    assert store.append(first) is None  # nothing torn: nothing said


def test_a_corrupt_middle_line_is_refused_with_its_line_number_and_left_alone(tmp_path):
    store = RunStore(tmp_path).create()
    good = Record("params", Spec("nin", 224), "ok", {"params_total": 1})
    store.results_path.write_text(good.to_json() + "\n{not json\n" + good.to_json() + "\n")
    before = store.results_path.read_bytes()
    with pytest.raises(CorruptStore, match=r"results\.jsonl:2: not a cnnbench record"):
        store.records()
    assert store.results_path.read_bytes() == before
    # a complete line (newline-terminated) that is not a record is corrupt even when it is last
    store.results_path.write_text(good.to_json() + "\n[1, 2]\n")
    with pytest.raises(CorruptStore, match=":2:"):
        store.records()
