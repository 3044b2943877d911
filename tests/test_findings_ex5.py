"""Exercise 5's findings (issue 22): computation, rooflines and scaling, each number recomputed
here from the hand-built records (tests/trust_records.py) by its formula, not read back."""

from __future__ import annotations

import dataclasses
import math

import pytest

from cnnbench.analysis.computation import DATASHEET_PEAKS, computation
from cnnbench.analysis.frames import Frames
from cnnbench.analysis.rooflines import rooflines, sheet_below_probe
from cnnbench.analysis.scaling import scaling, weak_scaling
from cnnbench.results import Record
from cnnbench.results.types import LayerRoof, ScalingPoint, ScalingResult
from tests import trust_records as t

MiB = 2**20


# --- computation -----------------------------------------------------------------------------


def _counted(model, size, layers, params):
    return [t.params(model, size, params), t.flops(model, size, layers)]


def _pair_run(alexnet_batches=(1, 8), memory_batch=32, googlenet_batches=(1, 8, 32)):
    recs = [*_counted("alexnet", 224, t.alexnet_layers(224), 46_764_746),
            *_counted("googlenet", 96, t.googlenet_layers(96), 5_977_530),
            t.flops("googlenet", 224, t.googlenet_layers(224)),
            t.roofline("alexnet", 0.6, other_share=0.09), t.roofline("googlenet", 0.4, other_share=0.42)]  # fmt: skip
    recs += [t.latency("alexnet", 224, b, "inference", 10.0 * b, seed=b) for b in alexnet_batches]
    recs += [t.memory("alexnet", 224, memory_batch, "train", 300 * MiB)] if memory_batch else []
    recs += [t.latency("googlenet", 96, b, "inference", 5.0 * b, seed=b) for b in googlenet_batches]
    return recs


def _moved(layers, batch):
    """Per image: every layer's input and output, its weights once per batch."""
    return sum(lay.input_bytes + lay.output_bytes + lay.weight_bytes / batch for lay in layers)


def test_the_batches_are_1_and_the_largest_both_networks_were_measured_at():
    # alexnet: latency 1, 8 and memory 32; googlenet: latency 1, 8, 32 → shared 1, 8, 32
    assert computation(Frames(_pair_run())).batches == (1, 32)
    # without alexnet's memory record the largest shared batch is 8
    assert computation(Frames(_pair_run(memory_batch=None))).batches == (1, 8)
    # alexnet timed at batch 1 only: nothing larger is shared
    only_one = computation(Frames(_pair_run(alexnet_batches=(1,), memory_batch=None)))
    assert only_one.batches == (1,) and only_one.batch_models == ("alexnet", "googlenet")
    # counts alone, no timing at all
    counts = computation(Frames(_counted("nin", 224, t.alexnet_layers(224), 1_992_166)))
    assert counts.batches == (1,)


def test_rows_recompute_traffic_intensity_and_working_set_by_hand():
    c = computation(Frames(_pair_run()))
    layers = t.googlenet_layers(96)
    g = next(r for r in c.rows if r.model == "googlenet" and not r.equal_resolution)
    macs = sum(lay.macs for lay in layers)
    assert g.gmacs == pytest.approx(macs / 1e9)
    for b, moved, intensity in zip(c.batches, g.bytes_moved, g.flop_per_byte, strict=True):
        assert moved == pytest.approx(_moved(layers, b))
        assert intensity == pytest.approx(2 * macs / _moved(layers, b))
    sets = {lay.name: lay.input_bytes + lay.output_bytes + lay.weight_bytes for lay in layers}
    assert g.working_set_layer == max(sets, key=sets.get) and g.working_set_bytes == max(sets.values())
    outputs = sum(lay.output_bytes for lay in layers)
    assert g.forward_output_bytes == outputs
    assert g.crossover_batch == 4 * 5_977_530 // outputs + 1  # params record: 4 bytes each
    one_by_one = sum(lay.macs for lay in layers if lay.kernel == "1x1")
    assert g.one_by_one_mac_share == pytest.approx(one_by_one / macs)
    # googlenet is also counted at 224: a row of its own, after every own-size row
    assert [(r.model, r.image_size, r.equal_resolution) for r in c.rows] == [
        ("alexnet", 224, False), ("googlenet", 96, False), ("googlenet", 224, True)]


def test_pairs_at_the_chapter_sizes_and_at_equal_resolution():
    c = computation(Frames(_pair_run()))
    a224 = sum(lay.macs for lay in t.alexnet_layers(224))
    g96, g224 = (sum(lay.macs for lay in t.googlenet_layers(s)) for s in (96, 224))
    chapter, equal = c.pairs
    assert not chapter.equal_resolution and equal.equal_resolution
    assert chapter.mac_ratio == pytest.approx(g96 / a224)
    assert equal.mac_ratio == pytest.approx(g224 / a224)
    assert (equal.alexnet.image_size, equal.googlenet.image_size) == (224, 224)
    g_out = sum(lay.output_bytes for lay in t.googlenet_layers(224))
    a_out = sum(lay.output_bytes for lay in t.alexnet_layers(224))
    assert equal.output_ratio == pytest.approx(g_out / a_out)
    # the measured share outside conv/linear, from the roofline records, (googlenet, alexnet)
    g, a = c.outside
    assert (g.model, g.share, g.batch) == ("googlenet", 0.42, 16) and (a.model, a.share) == ("alexnet", 0.09)


def test_costly_layers_are_the_six_largest_by_macs_at_batch_1():
    extra = [t.layer(f"x{i}", "Conv2d", 10**6 * (i + 1), 100, 4000, kernel="1x1") for i in range(4)]
    layers = t.googlenet_layers(96) + extra  # nine layers: three are left out
    c = computation(Frames(_counted("googlenet", 96, layers, 5_977_530)))
    mine = [lay for lay in c.costly_layers if lay.model == "googlenet"]
    expected = sorted(layers, key=lambda lay: -lay.macs)[:6]
    assert len(mine) == 6 and {lay.name for lay in mine} >= {"x3", "x2"} and "x0" not in {lay.name for lay in mine}
    assert [lay.name for lay in mine] == [lay.name for lay in expected]
    for got, lay in zip(mine, expected, strict=True):
        ws = lay.input_bytes + lay.output_bytes + lay.weight_bytes
        assert got.working_set_bytes == ws and got.flop_per_byte == pytest.approx(2 * lay.macs / ws)


def test_without_googlenet_there_is_no_pair_and_it_is_named_missing():
    c = computation(Frames(_counted("alexnet", 224, t.alexnet_layers(224), 46_764_746)))
    assert c.pairs == () and c.missing == ("googlenet",) and c.outside is None
    assert computation(Frames([])).rows == ()


def test_the_data_sheet_ridge_and_its_old_import_path():
    from cnnbench.report.exercises import DATASHEET_PEAKS as exported

    assert exported == DATASHEET_PEAKS
    sheet = computation(Frames([])).sheet
    assert sheet.part == "H100 SXM"
    assert sheet.ridge_fp32 == pytest.approx(67.0 / 3.35) and sheet.ridge_bf16 == pytest.approx(989.0 / 3.35)


# --- rooflines -------------------------------------------------------------------------------


def _with_layers(rec: Record, layers) -> Record:
    return Record.of("roofline", rec.spec, dataclasses.replace(rec.result, layers=tuple(layers)))


def _layer(name, intensity, fraction):
    """A layer at ``fraction`` of its roof (min(PEAK, BW x intensity))."""
    roof = min(t.PEAK, t.BW * intensity)
    return LayerRoof(name, "Conv2d", "3x3", 10**8, 4 * 10**6, 2.0, fraction * roof, intensity, roof,
                     "", fraction)  # fmt: skip


def test_bounds_mfu_range_and_the_layers_above_the_roof():
    ridge = t.PEAK / t.BW  # 10 FLOP/byte
    mixed = _with_layers(t.roofline("nin", 0.3), [
        _layer("c", 5 * ridge, 0.8),  # compute-bound: right of the ridge, at 80% of its roof
        _layer("m", ridge / 5, 0.6),  # memory-bound: left of it, at 60%
        _layer("o", ridge / 5, 0.2),  # overhead: below half of either roof
        _layer("o2", 5 * ridge, 0.49)])  # fmt: skip
    recs = [mixed, t.roofline("googlenet", 0.4), t.roofline("alexnet", 0.6, layers_above=2)]
    f = rooflines(Frames(recs))
    nin = next(m for m in f.models if m.model == "nin")
    assert nin.bounds == (1, 1, 2) and nin.layers_timed == 4 and not nin.under
    assert nin.forward_ms == 10.0  # no latency record at batch 16: the roofline's own pass
    alex = next(m for m in f.models if m.model == "alexnet")
    assert alex.under and alex.layers_above == 2
    # alexnet ran above the roof: its MFU is no utilization and leaves the range
    lo, hi = f.mfu_range
    assert (lo.model, lo.mfu, hi.model, hi.mfu) == ("nin", 0.3, "googlenet", 0.4)
    assert f.any_under and f.under_models == ("alexnet",)
    assert [(lay.model, lay.name) for lay in f.above] == [("alexnet", "conv0"), ("alexnet", "conv1")]
    assert f.above[0].achieved_flops == pytest.approx(1.2 * t.PEAK)
    # every model's timed layers: nin (1, 1, 2), googlenet and alexnet 3 compute each
    assert f.bounds == (1 + 3 + 3, 1, 2)
    assert len(f.probes) == 1  # one set of peaks, shared by every record


def test_a_data_sheet_below_a_probe_and_which_factor_is_suspect():
    base = t.roofline("nin", 0.4, datasheet_factors={"clock_source": "cpu MHz (nominal on a VM)"})
    low = dataclasses.replace(base.result.peaks, datasheet_flops=0.6 * t.PEAK)
    rec = Record.of("roofline", base.spec, dataclasses.replace(base.result, peaks=low))
    f = rooflines(Frames([rec]))
    assert sheet_below_probe(low) and f.low_sheet is not None
    assert f.low_sheet.probe_over_sheet == pytest.approx(1 / 0.6)
    assert f.low_sheet.sheet_suspect == "nominal_clock" and "nominal" in f.low_sheet.clock_source
    high = dataclasses.replace(low, datasheet_flops=1.5 * t.PEAK, datasheet_factors=None)
    rec = Record.of("roofline", base.spec, dataclasses.replace(base.result, peaks=high))
    f = rooflines(Frames([rec]))
    assert not sheet_below_probe(high) and f.low_sheet is None
    assert f.probes[0].sheet_suspect == "part" and f.probes[0].probe_over_sheet == pytest.approx(1 / 1.5)


def test_no_roofline_records_is_an_empty_finding():
    f = rooflines(Frames([t.params("nin", 224, 1_992_166)]))
    assert f.models == () and f.mfu_range is None and f.bounds == (0, 0, 0) and not f.any_under


# --- scaling ---------------------------------------------------------------------------------


def _point(w, eff, step, local, exposed, predicted, ci=0.01):
    return ScalingPoint(w, "weak", 16, 16 * w, step, step * (1 - ci), step * (1 + ci), local, None,
                        None, exposed, 16 * w / step * 1e3, eff * w, eff, (step,), (local,), None,
                        predicted)  # fmt: skip


def _scaled(grad_mib, eff, *, exposed=5.0, predicted=10.0, ci=0.01):
    one = _point(1, 1.0, 100.0, 100.0, 0.0, 0.0, ci)
    two = _point(2, eff, 100.0 / eff, 110.0, exposed, predicted, ci)
    return ScalingResult(int(grad_mib * MiB), int(grad_mib * MiB / 4), "gloo", {}, ("h",), 32, (one, two))


def test_weak_scaling_recomputes_bounds_shares_and_verdicts():
    small, big = _scaled(8, 0.9, exposed=-1.0, predicted=10.0), _scaled(80, 0.6, exposed=20.0, predicted=10.0)
    w = weak_scaling([("small", small, small.points[1]), ("big", big, big.points[1])])
    assert [m.model for m in w.models] == ["small", "big"] and w.world_size == 2
    s, b = w.models
    # efficiency bounds: eff x (step / its CI) x (one rank's CI / its step)
    p, one = big.points[1], big.points[0]
    assert b.efficiency_bounds == pytest.approx(
        (p.efficiency * p.step_ms_p50 / p.step_ms_ci_high * one.step_ms_ci_low / one.step_ms_p50,
         p.efficiency * p.step_ms_p50 / p.step_ms_ci_low * one.step_ms_ci_high / one.step_ms_p50))  # fmt: skip
    assert b.compute_change == pytest.approx(110.0 / 100.0 - 1)
    assert s.exposed_share == 0.0  # a negative exposed time is no time
    assert b.exposed_share == pytest.approx(20.0 / (100.0 / 0.6))
    assert (s.comm, b.comm) == ("below", "above")  # -1 < 0.7 x 10; 20 > 1.3 x 10
    assert w.bytes_verdict == "yes" and w.heaviest.model == "big"
    close = _scaled(8, 0.9, exposed=10.0, predicted=10.0)
    assert weak_scaling([("m", close, close.points[1])]).models[0].comm == "close"
    assert weak_scaling([("m", close, close.points[1])]).bytes_verdict is None  # one network
    wide = [("small", _scaled(8, 0.9, ci=0.3), None), ("big", _scaled(80, 0.6, ci=0.3), None)]
    wide = [(m, v, v.points[1]) for m, v, _ in wide]
    assert weak_scaling(wide).bytes_verdict == "noise"  # 90% against 60%, each step ±30%


def test_scaling_reads_every_point_and_the_largest_weak_size():
    res = _scaled(8, 0.8)
    rec = Record.of("scaling", t.spec("googlenet28", 28, 4, "train"), res)
    f = scaling(Frames([rec]))
    assert [(r.point.world_size, r.point.kind) for r in f.rows] == [(1, "weak"), (2, "weak")]
    assert f.weak.models[0].point.world_size == 2 and f.weak.models[0].grad_bytes == 8 * MiB
    assert math.isclose(f.weak.models[0].point.efficiency, 0.8)
    empty = scaling(Frames([]))
    assert empty.rows == () and empty.weak is None


# --- prose: the batches are said, once ------------------------------------------------------


def test_exercise5_names_its_batches_and_the_rooflines_summary_counts_layers():
    from cnnbench.report.exercises.computation import exercise5
    from cnnbench.report.exercises.rooflines import rooflines as roof_section

    frames = Frames(_pair_run())
    section = exercise5(frames)
    assert "at batch 1 and at batch 32 (the largest batch this run measured alexnet and googlenet at" in section.intro
    caption, table = section.tables[0]
    assert {"MiB moved b1", "MiB moved b32", "FLOP/byte b32"} <= set(table.columns)
    g = computation(frames).pairs[0].googlenet
    assert f"googlenet {g.flop_per_byte[0]:.1f} and {g.flop_per_byte[1]:.1f}" in " ".join(section.sentences)
    a224 = sum(lay.macs for lay in t.alexnet_layers(224))
    g96 = sum(lay.macs for lay in t.googlenet_layers(96))
    assert f"{a224 / g96:.1f}x fewer MACs per image than alexnet at the chapter's sizes" in section.summary
    assert "42% of its forward time goes outside convolution and linear layers against 9%" in section.summary
    roof = roof_section(Frames([t.roofline("googlenet", 0.4), t.roofline("nin", 0.3)]))
    assert roof.summary.startswith("MFU ranges from 30% (nin) to 40% (googlenet) of the measured peak.")
    assert "Of 6 timed layers, 6 are compute-bound" in roof.summary


def test_the_scaling_summary_says_the_range_and_the_bytes_verdict():
    from cnnbench.report.exercises.scaling import _summary

    small, big = _scaled(8, 0.9), _scaled(80, 0.6)
    w = weak_scaling([("small", small, small.points[1]), ("big", big, big.points[1])])
    assert _summary(w) == ("Weak-scaling efficiency at 2 ranks ranges from 60% (big) to 90% (small); "
                           "the networks with more gradient bytes scale worse, beyond the noise.")  # fmt: skip
    noisy = [(m, v, v.points[1]) for m, v in (("small", _scaled(8, 0.9, ci=0.3)), ("big", _scaled(80, 0.6, ci=0.3)))]
    assert _summary(weak_scaling(noisy)).endswith("whether gradient bytes order them is not resolved.")
