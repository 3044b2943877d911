"""Exercises 1-4 as findings (``cnnbench.analysis``) apart from their prose
(``cnnbench.report.exercises``): every number of a finding recomputed here from the records the
test built, and the prose checked to say each pattern once, whatever the number of models."""

from __future__ import annotations

import math
import statistics

import pytest

from cnnbench.analysis.frames import Frames
from cnnbench.analysis.lineage import lineage as find_lineage
from cnnbench.analysis.native28 import NO_SAME_INPUT
from cnnbench.analysis.native28 import native_28 as find_native_28
from cnnbench.analysis.parameters import CONV_BODY, FC_HEAVY, NO_FC
from cnnbench.analysis.parameters import parameters as find_parameters
from cnnbench.analysis.sizes import minimum_sizes as find_minimum_sizes
from cnnbench.measure.shapes import min_input_size
from cnnbench.report.exercises.lineage import section as lineage_section
from cnnbench.report.exercises.minsize import section as minsize_section
from cnnbench.report.exercises.native28 import section as native28_section
from cnnbench.report.exercises.parameters import section as parameters_section
from cnnbench.results import Record
from cnnbench.results.types import MinInputSize
from tests import trust_records as t
from tests.test_report_trust import chapter_run

T_975_DOF4 = 2.776445  # Student's t, 97.5th percentile, 4 degrees of freedom (tables)
MiB = 2**20


def _median(records, model, mode, batch):
    r = next(r for r in records if r.metric == "latency" and r.spec.model == model
             and r.spec.mode == mode and r.spec.batch_size == batch)  # fmt: skip
    return statistics.median(r.result.times_ms)


# --- exercise 1: the lineage ---------------------------------------------------------------------


def _lineage_run() -> list[Record]:
    """chapter_run with training peaks that give the identical pair a spread (+4%, -3%: memory
    changes within ±16.3% are not resolved) and googlenet_bn +25% at batch 16."""
    recs = [r for r in chapter_run() if not (r.metric == "memory" and r.spec.model != "googlenet")]
    return recs + [
        t.memory("googlenet_ls", 96, 4, "train", 312 * MiB),
        t.memory("googlenet_ls", 96, 16, "train", 485 * MiB, optimizer="adam 0.0005"),
        t.memory("googlenet_bn", 96, 4, "train", 330 * MiB),
        t.memory("googlenet_bn", 96, 16, "train", 625 * MiB, optimizer="adam 0.0005"),
    ]


def test_lineage_pairs_each_variant_with_its_parent_like_with_like():
    recs = chapter_run()
    finding = find_lineage(Frames(recs))
    pairs = {p.variant: p for p in finding.pairs}
    assert set(pairs) == {"googlenet_ls", "googlenet_bn", "googlenet28"}
    assert all(p.parent == "googlenet" for p in pairs.values())
    g28 = pairs["googlenet28"]
    assert (g28.input_px, g28.parent_input_px, g28.alike) == (28, 96, False)
    # parameters do not depend on the input: compared across sizes; latency is not
    params = g28.of("params")
    assert params.comparable and params.change == pytest.approx((5_974_970 - 5_977_530) / 5_977_530)
    lat = g28.of("latency_ms_p50_b1")
    assert not lat.comparable and lat.change is None and lat.verdict is None
    assert lat.value == pytest.approx(_median(recs, "googlenet28", "inference", 1))
    # both trained at 28: the accuracy is compared, in points (0.45 - 0.50), and not called
    acc = g28.of("test_accuracy_mean")
    assert g28.trained_alike and acc.comparable and acc.change == pytest.approx(-0.05)
    assert acc.verdict.verdict == "not resolved" and acc.verdict.fewest_seeds == 1


def test_lineage_keeps_the_noise_rules_verdicts_and_counts_them():
    recs = _lineage_run()
    finding = find_lineage(Frames(recs))
    bn = next(p for p in finding.pairs if p.variant == "googlenet_bn")
    lat = bn.of("latency_ms_p50_b1")
    ratio = _median(recs, "googlenet_bn", "inference", 1) / _median(
        recs, "googlenet", "inference", 1
    )
    assert lat.change == pytest.approx(ratio - 1) and lat.verdict.verdict == "slower" and lat.called
    # counts are exact: never judged, never called
    assert bn.of("params").verdict is None and bn.of("gmacs").verdict is None
    mem = bn.of("train_memory_bytes")  # 625 against 500 MiB, beyond the pair's ±16.3%
    assert mem.change == pytest.approx(0.25) and mem.verdict.verdict == "more"
    ls_mem = next(p for p in finding.pairs if p.variant == "googlenet_ls").of("train_memory_bytes")
    assert ls_mem.change == pytest.approx(485 / 500 - 1) and not ls_mem.called
    # judged: 4 numbers of each alike pair (latency, throughput, memory, accuracy), accuracy alone
    # for googlenet28; called: googlenet_bn's latency and throughput (30% slower) and memory
    assert finding.judged == 4 + 4 + 1
    called = [(p.variant, c.key) for p, c in finding.called]
    assert called == [("googlenet_bn", "latency_ms_p50_b1"), ("googlenet_bn", "train_images_per_s"),
                      ("googlenet_bn", "train_memory_bytes")]  # fmt: skip
    assert finding.fewest_seeds == 1 and finding.train_batches == (16,)
    assert [p.variant for p in finding.unlike] == ["googlenet28"]


def test_lineage_summary_counts_and_names_what_it_resolves():
    recs = _lineage_run()
    finding = find_lineage(Frames(recs))
    section = lineage_section(finding)
    summary = section.summary
    assert summary.startswith(
        "Against their parents, this run resolves 3 of the 9 changes it judges across 3 variants "
        "— 3 in googlenet_bn; the largest: "
    )
    # the largest of the three called changes: latency +30% (with its rounds' noise), beside
    # throughput 1/1.3 - 1 = -23% and memory +25%
    bn, g = (_median(recs, m, "inference", 1) for m in ("googlenet_bn", "googlenet"))
    slower = bn / g - 1
    assert slower > 0.25
    assert f"the largest: googlenet_bn latency b1 ms {100 * slower:+.1f}% (slower)." in summary
    assert "Accuracy is not resolved (1 seed(s) per network; a call needs 3 a side)." in summary
    # the table: one row per pair, the unlike pair's change carries the parent's number instead
    rows = section.tables[0][1].to_dict("records")
    g28 = next(r for r in rows if r["variant"] == "googlenet28")
    assert g28["latency b1 ms change"].startswith("— (28 vs 96 px: parent ")


def test_a_lineage_without_pairs_says_so():
    recs = [t.params("googlenet", 96, 5_977_530)]
    finding = find_lineage(Frames(recs))
    assert finding.pairs == () and finding.fewest_seeds is None
    section = lineage_section(finding)
    assert section.tables == [] and "No variant and its parent" in section.sentences[0]


# --- exercise 2: minimum sizes -------------------------------------------------------------------


def _minsize(model, size, failing="", reductions=(), failure="") -> Record:
    return Record.of("minsize", t.spec(model, 224),
                     MinInputSize(model, size, failing, failure, tuple(reductions)))  # fmt: skip


def _pool_chain(sides: list[int]) -> tuple[str, ...]:
    return tuple(
        f"p{i} MaxPool2d 2x2/2: {a}→{b}"
        for i, (a, b) in enumerate(zip(sides[:-1], sides[1:], strict=True))
    )


def test_minimum_sizes_order_the_bounded_and_list_the_free():
    recs = [_minsize("wide", 67, "p2", _pool_chain([67, 33, 16, 8]), "too small"),
            _minsize("free_a", 1), _minsize("narrow", 32, "p1", _pool_chain([32, 16, 8])),
            _minsize("free_b", 1),
            Record.failed("minsize", t.spec("broken", 224), "error", "boom")]  # fmt: skip
    finding = find_minimum_sizes(Frames(recs))
    assert [s.model for s in finding.sizes] == ["wide", "free_a", "narrow", "free_b"]  # ok only
    assert [(s.model, s.min_size_px) for s in finding.bounded] == [("narrow", 32), ("wide", 67)]
    assert finding.unbounded == ("free_a", "free_b")
    # the failing layer receives the last reduction's input: 16 for wide (16→8), 16 for narrow
    assert [s.side_at_failing_layer_px for s in finding.bounded] == [16, 16]
    assert finding.sizes[1].side_at_failing_layer_px is None


@pytest.mark.parametrize("name,padding", [("alexnet", 1), ("nin", 0)])
def test_the_side_at_the_failing_layer_agrees_with_the_output_size_formula(name, padding):
    """At the measured minimum, out = (in + 2p − k) // s + 1 through the 11x11/4 stem (padding
    1 in AlexNet, 0 in NiN) and the 3x3/2 max-pools leaves exactly 3 pixels before the last
    pool, which is what the finding reads off the recorded chain."""
    found = min_input_size(name)
    pools = 3
    side = (found.min_size + 2 * padding - 11) // 4 + 1
    for _ in range(pools - 1):
        side = (side - 3) // 2 + 1
    finding = find_minimum_sizes(Frames([Record.of("minsize", t.spec(name, 224), found)]))
    assert finding.sizes[0].side_at_failing_layer_px == side == 3
    assert len(finding.sizes[0].reductions) == pools + 1


def test_minimum_sizes_prose_says_each_pattern_once():
    free = [f"g{i}" for i in range(7)]
    recs = [_minsize("a", 65, "p3", _pool_chain([65, 15, 7, 3, 1]), "window too large"),
            _minsize("b", 32, "p4", _pool_chain([32, 16, 8, 4, 2, 1]))]  # fmt: skip
    recs += [_minsize(m, 1) for m in free]
    section = minsize_section(find_minimum_sizes(Frames(recs)))
    # one sentence for the bounded chain, none per model; the free models listed once
    assert len(section.sentences) == 1 and "In b and a, " in section.sentences[0]
    assert "(4 to 5 size-changing layers) leaves 2 to 3 pixels" in section.sentences[0]
    assert section.answer.count("run on any size down to 1x1") == 1
    assert ", ".join(free) + " run on any size down to 1x1" in section.answer
    assert section.summary == ("Minimum input from 32x32 (b) to 65x65 (a), set by the chain of "
                               f"strides and pools; 7 models ({', '.join(free)}) run on any size "
                               "down to 1x1.")  # fmt: skip
    rows = {r["model"]: r for r in section.tables[0][1].to_dict("records")}
    assert rows["a"]["side there at the minimum (px)"] == "3"
    assert (
        rows["a"]["size-changing layers"] == "4"
        and rows["a"]["error one pixel below"] == "window too large"
    )
    assert (
        rows["g0"]["fails below it"] == "— (runs at 1x1)"
        and rows["g0"]["error one pixel below"] == "—"
    )


# --- exercise 3: googlenet28 against googlenet at one input --------------------------------------


def test_native28_compares_at_googlenet28s_input_and_says_what_it_lacks():
    finding = find_native_28(Frames(chapter_run()))
    assert finding.measured and finding.size_px == 28 and finding.trained_alike
    gmacs = finding.row("gmacs_per_image")
    g28 = sum(lay.macs for lay in t.googlenet_layers(28)) / 1e9
    # googlenet as trained at 28 (its accuracy record's own count), googlenet28 at its own size
    assert gmacs.googlenet == pytest.approx(0.123456789) and gmacs.googlenet28 == pytest.approx(g28)
    assert gmacs.change == pytest.approx((g28 - 0.123456789) / 0.123456789)
    params = finding.row("parameters")
    assert (params.googlenet, params.googlenet28) == (5_977_530, 5_974_970)
    assert finding.row("test_accuracy").change == pytest.approx(0.45 - 0.50)
    lat = finding.row("latency_ms_b1")
    assert lat.missing == NO_SAME_INPUT and lat.googlenet_sizes == (96,) and lat.change is None
    # one seed a side: not resolved, and the test set's own Wilson half width at 0.45 on 2,000
    assert finding.accuracy.verdict == "not resolved" and finding.accuracy.fewest_seeds == 1
    z, n, p = 1.959963984540054, 2000, 0.45
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert finding.test_set_half_width == pytest.approx(half)
    section = native28_section(finding)
    assert f"the test set alone spreads ±{100 * half:.1f} pp" in section.answer
    # googlenet28 at 28 needs fewer MACs than googlenet trained at 28 in these records
    fewer = f"{g28:.3f} GMACs per image, {0.123456789 / g28:.1f}x fewer than googlenet's 0.123"
    assert f"At 28x28 googlenet28 needs {fewer}." in section.answer
    assert section.summary.startswith(f"At 28x28, googlenet28 needs {fewer}; test accuracy -5.0 pp")


def test_native28_accuracy_verdict_is_welchs_interval_over_three_seeds():
    recs = [r for r in chapter_run() if r.metric != "accuracy"]
    recs += [t.accuracy("googlenet", 28, [0.50, 0.505, 0.495], trained=(5_977_530, 123_456_789, 0)),
             t.accuracy("googlenet28", 28, [0.515, 0.52, 0.51])]  # fmt: skip
    finding = find_native_28(Frames(recs))
    half = T_975_DOF4 * math.sqrt(2 * 0.005**2 / 3)  # Welch by hand: equal spreads, dof 4
    acc = finding.accuracy
    assert acc.verdict == "higher" and acc.seeds == (3, 3)
    assert acc.low == pytest.approx(0.015 - half, abs=1e-6)
    assert acc.high == pytest.approx(0.015 + half, abs=1e-6)
    section = native28_section(finding)
    assert (f"googlenet28's test accuracy is higher by +1.5 pp (95% CI {100 * (0.015 - half):+.1f} "
            f"to {100 * (0.015 + half):+.1f} pp over 3 and 3 seeds)") in section.answer  # fmt: skip
    assert section.summary.startswith("At 28x28, googlenet28 needs ")
    assert "test accuracy +1.5 pp (higher, CI " in section.summary


def test_native28_pairs_the_batch_1_latency_measured_at_the_same_input():
    """Both also measured at batch 8 (listed last): the row is batch 1's, as its label says."""
    recs = chapter_run() + [
        t.latency("googlenet", 28, 1, "inference", 4.0, seed=9),
        t.latency("googlenet", 28, 8, "inference", 20.0, seed=10),
        t.latency("googlenet28", 28, 8, "inference", 30.0, seed=11),
    ]
    finding = find_native_28(Frames(recs))
    lat = finding.row("latency_ms_b1")
    a, b = (next(r for r in recs if r.metric == "latency" and r.spec.model == m
                 and r.spec.image_size == 28 and r.spec.batch_size == 1).result
            for m in ("googlenet", "googlenet28"))  # fmt: skip
    assert lat.missing == "" and lat.googlenet == a.latency_ms_p50 == pytest.approx(4.0, rel=0.05)
    assert lat.change == pytest.approx(b.latency_ms_p50 / a.latency_ms_p50 - 1)


def test_native28_without_googlenet28_has_no_rows():
    finding = find_native_28(Frames([t.params("googlenet", 96, 5_977_530)]))
    assert not finding.measured and finding.rows == ()
    assert "not both measured" in native28_section(finding).sentences[0]


# --- exercise 4: where the parameters sit --------------------------------------------------------


def _googlenet_like(model: str) -> list[Record]:
    return [
        t.params(model, 96, 5_977_530, linear=10_250),
        t.flops(model, 96, t.googlenet_layers(96)),
    ]


def _parameter_records() -> list[Record]:
    nin_layers = [t.layer("nin1.0", "Conv2d", 10**8, 34_944, 10**6, kernel="11x11"),
                  t.layer("nin1.2", "Conv2d", 10**7, 9_312, 10**6, kernel="1x1"),
                  t.layer("nin4.4", "Conv2d", 10**5, 110, 40, kernel="1x1"),
                  t.layer("pool", "AdaptiveAvgPool2d", 0, 0, 40)]  # fmt: skip
    recs = [t.params("alexnet", 224, 46_764_746, linear=43_040_778),
            t.flops("alexnet", 224, t.alexnet_layers(224)),
            t.params("nin", 224, 44_366), t.flops("nin", 224, nin_layers)]  # fmt: skip
    for model in ("googlenet", "googlenet_bn", "googlenet_v3"):
        recs += _googlenet_like(model)
    return recs


def test_parameters_recompute_each_share_from_the_layers():
    finding = find_parameters(Frames(_parameter_records()))
    assert finding.heaviest == "alexnet"
    by = {m.model: m for m in finding.models}
    a, n, g = by["alexnet"], by["nin"], by["googlenet"]
    assert a.kind == FC_HEAVY and n.kind == NO_FC and g.kind == CONV_BODY
    assert a.linear_share == pytest.approx(43_040_778 / 46_764_746)
    assert (a.largest_name, a.largest_params) == ("fc6.1", 26_218_496)
    assert a.largest_share == pytest.approx(26_218_496 / 46_764_746)
    assert (a.head_name, a.head_params) == ("fc8", 40_970)
    # nin: no linear layer, the last convolution is its classifier; 1x1 share from the layers
    assert (n.head_name, n.head_params, n.global_pool) == ("nin4.4", 110, True)
    assert n.one_by_one_share == pytest.approx((9_312 + 110) / 44_366)
    assert n.times_fewer_than_heaviest == pytest.approx(46_764_746 / 44_366)
    assert g.one_by_one_share == pytest.approx(1_000_000 / 5_977_530)
    assert (g.head_name, g.head_params, g.global_pool) == ("fc", 10_250, False)
    assert [m.model for m in finding.pooled] == ["nin"]  # the trust layers have no pooling layer


def test_parameters_prose_says_the_pattern_once_and_the_table_holds_each_model():
    finding = find_parameters(Frames(_parameter_records()))
    section = parameters_section(finding)
    assert len(section.sentences) == 3  # one per head kind, whatever the number of models
    fc, no_fc, conv = section.sentences
    assert fc.startswith(f"alexnet holds most of its parameters in fully connected layers "
                         f"({100 * 43_040_778 / 46_764_746:.0f}%)")  # fmt: skip
    assert no_fc.startswith("nin has no fully connected layer at all")
    assert f"it has {46_764_746 / 44_366:.0f}x fewer parameters than alexnet" in no_fc
    assert conv.startswith("googlenet, googlenet_bn and googlenet_v3 keep 100% of their parameters")
    assert f"1x1 convolutions hold {100 * 1_000_000 / 5_977_530:.0f}% of the parameters" in conv
    assert f"these models have {46_764_746 / 5_977_530:.1f}x fewer parameters than alexnet" in conv
    rows = {r["model"]: r for r in section.tables[0][1].to_dict("records")}
    assert rows["googlenet_v3"]["x fewer than alexnet"] == f"{46_764_746 / 5_977_530:.1f}"
    assert rows["alexnet"]["largest layer %"] == f"{100 * 26_218_496 / 46_764_746:.1f}"
    assert rows["nin"]["classifier"] == "nin4.4 (Conv2d, 110)"
    assert section.answer.startswith(
        f"alexnet holds {46_764_746 / 1e6:.1f}M parameters, 92% of them"
    )
    assert section.summary == (f"alexnet holds 46.8M parameters, 92% in fully connected layers; 1 "
                               f"model with global average pooling instead (nin) holds "
                               f"{46_764_746 / 44_366:.1f}x fewer.")  # fmt: skip


def test_parameters_without_counts_say_so():
    finding = find_parameters(Frames([t.params("nin", 224, 44_366)]))  # no flops record
    assert finding.models == () and finding.heaviest is None
    assert parameters_section(finding).sentences == [
        "No model in these runs has both params and flops records."
    ]
