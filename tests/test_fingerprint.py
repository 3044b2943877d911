"""Runs across machines (issue 15, first part): the environment fingerprint, compare's hardware
warning, and the regression gate for CI."""

from __future__ import annotations

import copy

from cnnbench.cli import main
from cnnbench.env import collect_env, differences, fingerprint, fingerprint_id, hardware_sentence
from tests import trust_records as t

ZEN3 = {"vendor": "AuthenticAMD", "family": 25, "model": 1, "stepping": 1, "model_name": "AMD EPYC",
        "flags": ["avx", "avx2", "fma"], "physical_cores": 2, "logical_cpus": 2,
        "cache_size": "512 KB"}  # fmt: skip


def _env(**facts) -> dict:
    return {"device": "cpu", "device_name": "AMD EPYC", "python": "3.11", "git_commit": "a" * 40,
            "git_dirty": False, "versions": {"torch": "2.14.1", "torchvision": "0.29.1", "fvcore": "y"},
            "cpu": {"model": "AMD EPYC", "torch_threads": 2, "memory_bytes": 24 * 2**30,
                    "facts": {**ZEN3, **facts}},
            "worker_flags": {"torch_threads": 2, "matmul_allow_tf32": False, "cudnn_allow_tf32": False},
            "config": {"device": "cpu", "profile": "quick", "command_line": "cnnbench run"}}  # fmt: skip


def test_the_fingerprint_names_what_decides_speed():
    fp = fingerprint(collect_env("cpu"))
    for key in ("cpu.vendor", "cpu.family", "cpu.model", "cpu.stepping", "cpu.physical_cores",
                "cpu.logical_cpus", "cpu.AVX2", "cpu.AVX-512", "memory_gib", "torch", "fvcore"):  # fmt: skip
        assert key in fp, key
    assert fingerprint_id(_env()) == fingerprint_id(copy.deepcopy(_env()))
    assert fingerprint_id(_env()) != fingerprint_id(_env(family=26))
    assert len(fingerprint_id(_env())) == 12


def test_the_hardware_sentence_says_what_differs():
    zen5 = _env(family=26, flags=["avx", "avx2", "fma", "avx512f"])
    diffs = differences(_env(), zen5)
    assert ("cpu.family", 25, 26) in diffs and ("cpu.AVX-512", False, True) in diffs
    assert hardware_sentence(diffs) == (
        "these runs measured different hardware: AVX-512 absent → present, CPU family 25 → 26; "
        "speed changes below compare hardware, not code")
    assert hardware_sentence(differences(_env(), _env())) is None
    # software alone is not hardware
    newer = _env()
    newer["versions"]["torch"] = "2.15.0"
    assert differences(_env(), newer) == [("torch", "2.14.1", "2.15.0")]
    assert hardware_sentence(differences(_env(), newer)) is None


def _runs(tmp_path, factor, *, env_b=None, spread=0.02):
    counts = [t.params("googlenet", 96, 5_977_530)]
    a = t.write_run(tmp_path / "a", [t.latency("googlenet", 96, 1, "inference", 10.0, seed=1,
                                               spread=spread), *counts], env=_env())  # fmt: skip
    b = t.write_run(tmp_path / "b", [t.latency("googlenet", 96, 1, "inference", 10.0 * factor,
                                               seed=5, spread=spread), *counts],
                    env=env_b or _env())  # fmt: skip
    return a, b


def test_other_hardware_is_said_at_the_top_and_its_latency_not_flagged(tmp_path, capsys):
    a, b = _runs(tmp_path, 0.5, env_b=_env(family=26))  # 2x faster, on another CPU
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c"), "--fail-on", "regression"]) == 0
    err = capsys.readouterr().err
    assert "warning: these runs measured different hardware: CPU family 25 → 26" in err
    md = (tmp_path / "c" / "compare.md").read_text()
    assert "> **Warning.** These runs measured different hardware: CPU family 25 → 26" in md
    rows = md.split("| --- |", 1)[1]
    assert "**!**" not in rows and rows.count("| different hardware |") == 2  # latency, images/s
    # a 2x slowdown on other hardware does not fail the gate either, unless asked
    a, b = _runs(tmp_path / "slow", 2.0, env_b=_env(family=26))
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c2"), "--fail-on", "regression"]) == 0
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c3"), "--fail-on", "regression",
                 "--across-hardware"]) == 1  # fmt: skip


def test_the_gate_fails_on_a_slowdown_beyond_the_noise_and_passes_inside_it(tmp_path, capsys):
    a, b = _runs(tmp_path / "slow", 1.3)  # 30% slower, same hardware, ±2% noise
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c1"), "--fail-on", "regression"]) == 1
    err = capsys.readouterr().err
    assert "regression: latency googlenet inference b1 latency_ms_p50" in err
    assert "2 regression(s) beyond the noise and 5%" in err  # latency and images/s
    # the same 30% against a 35% threshold passes
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c2"),
                 "--fail-on", "regression:35%"]) == 0  # fmt: skip
    a, b = _runs(tmp_path / "same", 1.01, spread=0.05)  # 1% inside ±5% noise
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c3"), "--fail-on", "regression"]) == 0
    a, b = _runs(tmp_path / "fast", 0.7)  # 30% faster: a change, not a regression
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c4"), "--fail-on", "regression"]) == 0


def test_the_gate_fails_on_a_changed_count(tmp_path):
    a = t.write_run(tmp_path / "a", [t.params("googlenet", 96, 5_977_530)], env=_env())
    b = t.write_run(tmp_path / "b", [t.params("googlenet", 96, 5_977_531)], env=_env())
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c"), "--fail-on", "regression"]) == 1


def test_fail_on_refuses_what_it_cannot_read(tmp_path, capsys):
    a, b = _runs(tmp_path, 1.0)
    assert main(["compare", str(a), str(b), "--fail-on", "slowdown"]) == 2
    assert "--fail-on slowdown: expected regression" in capsys.readouterr().err


def test_the_gate_counts_a_new_failure_and_not_a_fixed_one(tmp_path, capsys):
    from cnnbench.results import Record

    ok = t.latency("googlenet", 96, 1, "inference", 10.0, seed=1)
    oom = Record.failed("latency", ok.spec, "oom", "CUDA out of memory")
    err = Record.failed("latency", ok.spec, "error", "RuntimeError: boom")
    gate = ["--fail-on", "regression"]
    fixed = [t.write_run(tmp_path / n, [r], env=_env()) for n, r in (("e", err), ("ok", ok))]
    assert main(["compare", *map(str, fixed), "--out", str(tmp_path / "c1"), *gate]) == 0
    broke = [t.write_run(tmp_path / n, [r], env=_env()) for n, r in (("ok2", ok), ("oom", oom))]
    assert main(["compare", *map(str, broke), "--out", str(tmp_path / "c2"), *gate]) == 1
    assert "regression: latency googlenet inference b1 status: ok → oom" in capsys.readouterr().err
