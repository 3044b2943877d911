"""Comparisons a reader can trust (issue 12), checked against records built in the test: like
with like, noise shown and respected, no impossible numbers, one meaning per word, escaping."""

from __future__ import annotations

import re
import statistics

import pytest

from cnnbench.cli import main
from cnnbench.report.compare import compare_runs
from cnnbench.report.fmt import ABOVE_ROOF
from cnnbench.report.render import write_report
from cnnbench.results import Record
from tests import trust_records as t

MiB = 2**20


def table(md: str, caption: str) -> list[dict]:
    """The Markdown table under ``*caption*`` as a list of {header: cell}."""
    block = md.split(f"*{caption}*", 1)[1].split("\n\n")[1]
    lines = [line for line in block.splitlines() if line.startswith("|")]
    split = lambda line: [c.strip() for c in line.strip().strip("|").split(" | ")]  # noqa: E731
    head = split(lines[0])
    return [dict(zip(head, split(line), strict=True)) for line in lines[2:]]


def row(md: str, caption: str, key: str, value: str) -> dict:
    return next(r for r in table(md, caption) if r[key] == value)


def section(md: str, title: str) -> str:
    return md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def render(tmp_path, records, **kw) -> str:
    run = t.write_run(tmp_path / "run", records, **kw)
    write_report([run])
    return (run / "report.md").read_text()


# Each round is a worker process: a drift that every model of the round shares (the machine),
# and an offset of each model's own. The identical pair's own offsets are small beside
# googlenet_bn's, so its interval is narrower than the run's resolution and the control has power.
SHARED_DRIFT = (0.03, -0.03, 0.0)
OWN_OFFSETS = {"googlenet": (0.0, 0.0, 0.0), "googlenet_ls": (0.003, -0.002, 0.0),
               "googlenet_bn": (0.03, -0.025, 0.01), "googlenet28": (0.01, 0.0, -0.01)}  # fmt: skip


def offsets(model: str, own: dict | None = None) -> tuple:
    return tuple(s + o for s, o in zip(SHARED_DRIFT, (own or OWN_OFFSETS)[model], strict=True))


def chapter_run(*, ls_drift=1.0, kept=True, alexnet_mfu=0.6, alexnet_above=0, own=None) -> list:
    """alexnet, googlenet (own size 96, counted also at 224), googlenet_ls (googlenet's latency x
    ``ls_drift``), googlenet_bn (latency +30%) and googlenet28, with chosen numbers; each latency
    in 3 rounds offset by ``offsets(model, own)``."""
    recs = [
        t.flops("googlenet", 224, t.googlenet_layers(224)),  # equal resolution, listed first
        t.params("alexnet", 224, 46_764_746, linear=43_040_778),
        t.flops("alexnet", 224, t.alexnet_layers(224)),
        t.accuracy("alexnet", 72, [0.66, 0.70, 0.71], trained=(21_600_000, 79_000_000, 4 * 79_000_000)),
        t.roofline("alexnet", alexnet_mfu, layers_above=alexnet_above, other_share=0.09),
    ]
    for model, factor, seed in (("googlenet", 1.0, 1), ("googlenet_ls", ls_drift, 2), ("googlenet_bn", 1.3, 3)):
        recs += [
            t.params(model, 96, 5_977_530, linear=10_250),
            t.flops(model, 96, t.googlenet_layers(96)),
            t.latency(model, 96, 1, "inference", 10.0 * factor, seed=seed, kept=kept, offsets=offsets(model, own)),  # fmt: skip
            t.latency(model, 96, 8, "inference", 40.0 * factor, seed=seed + 10, kept=kept, offsets=offsets(model, own)),  # fmt: skip
            t.latency(model, 96, 32, "inference", 200.0 * factor, seed=seed + 20, kept=kept, offsets=offsets(model, own)),  # fmt: skip
            t.latency(model, 96, 16, "train", 300.0 * factor, seed=seed + 30, kept=kept, optimizer="adam 0.0005", offsets=offsets(model, own)),  # fmt: skip
            t.memory(model, 96, 4, "train", 300 * MiB),
            t.memory(model, 96, 16, "train", 500 * MiB, optimizer="adam 0.0005"),
            t.accuracy(model, 28, [0.50 if model == "googlenet" else 0.547],
                       trained=(5_977_530, 123_456_789, 3 * 123_456_789)),  # fmt: skip
        ]
    recs += [
        t.roofline("googlenet", 0.4, other_share=0.42),
        t.params("googlenet28", 28, 5_974_970, linear=10_250),
        t.flops("googlenet28", 28, t.googlenet_layers(28)),
        t.latency("googlenet28", 28, 1, "inference", 6.0, seed=7, kept=kept, offsets=offsets("googlenet28", own)),  # fmt: skip
        t.accuracy("googlenet28", 28, [0.45], trained=(5_974_970, 105_000_000, 315_000_000)),
    ]
    return recs


# --- like with like ------------------------------------------------------------------------------


ACCURACY = "Accuracy after training, and exactly how it was trained"


def test_overview_choices_best_batch_largest_memory_and_the_trained_network(tmp_path):
    recs = chapter_run()
    md = render(tmp_path, recs)
    g = row(md, "Overview", "model", "googlenet")
    # images/s = batch / median: ~100 at b1, ~200 at b8, ~160 at b32 → the best is batch 8, not the largest
    b8 = next(r for r in recs if r.metric == "latency" and r.spec.model == "googlenet" and r.spec.batch_size == 8)
    assert g["best inference images/s (batch)"] == f"{8e3 / statistics.median(b8.result.times_ms):.1f} (8)"
    # the largest memory batch (16), not the first or the biggest number of another batch
    assert g["peak memory training MiB (batch)"] == "500 (16)"
    # at its own size (96): its own count, never the 224 record's
    g96 = sum(lay.macs for lay in t.googlenet_layers(96)) / 1e9
    assert g["input"] == "96" and g["GMACs"] == f"{g96:.3f}"
    # the accuracy beside the network as trained (at 28), from the accuracy record: the overview
    # names the size, the accuracy table holds that network's counts
    assert g["trained at"] == "28"
    ga = row(md, ACCURACY, "model", "googlenet")
    assert ga["trained at"] == "28" and ga["GMACs as trained"] == "0.123"
    assert ga["parameters as trained"] == "5,977,530"
    a = row(md, "Overview", "model", "alexnet")
    aa = row(md, ACCURACY, "model", "alexnet")
    assert a["parameters"] == "46,764,746" and aa["parameters as trained"] == "21,600,000"
    assert aa["GMACs as trained"] == "0.079" and a["trained at"] == "72" and aa["trained at"] == "72"


def test_old_accuracy_records_pair_with_a_count_at_the_trained_size_or_none(tmp_path):
    recs = [
        t.params("googlenet", 96, 5_977_530),
        t.flops("googlenet", 96, t.googlenet_layers(96)),
        t.flops("googlenet", 28, t.googlenet_layers(28)),  # a count at the trained size
        t.accuracy("googlenet", 28, [0.5]),  # no trained_* (schema 1)
        t.params("nin", 224, 1_992_166),
        t.flops("nin", 224, t.alexnet_layers(224)),
        t.accuracy("nin", 72, [0.49]),  # nothing counted at 72
    ]
    md = render(tmp_path, recs)
    g = row(md, ACCURACY, "model", "googlenet")
    assert g["GMACs as trained"] == f"{sum(lay.macs for lay in t.googlenet_layers(28)) / 1e9:.3f}"
    n = row(md, ACCURACY, "model", "nin")
    assert n["GMACs as trained"] == "—" and n["parameters as trained"] == "—"
    assert row(md, "Overview", "model", "nin")["GMACs"] != "—"  # its own-size count stays in its own column
    # the chart plots only what it can pair like with like, and names what it left out
    fig = md.split("![Accuracy vs GMACs")[1].split("\n\n")[1]
    assert "Not plotted (no count of the network as trained): nin" in fig


def test_exercise5_compares_at_the_chapter_sizes_and_at_equal_resolution(tmp_path):
    md = render(tmp_path, chapter_run())
    ex5 = section(md, "Exercise 5 — computation")
    a224 = sum(lay.macs for lay in t.alexnet_layers(224)) / 1e9
    g96 = sum(lay.macs for lay in t.googlenet_layers(96)) / 1e9
    g224 = sum(lay.macs for lay in t.googlenet_layers(224)) / 1e9
    assert f"{a224 / g96:.1f}x fewer than alexnet" in ex5  # the chapter's sizes: 96 against 224
    answer = ex5.split("**Answer.**")[1].split("\n")[0]
    assert f"At equal resolution (224x224) googlenet needs {g224 / a224:.2f}x alexnet's MACs" in answer
    assert "224 (equal resolution)" in ex5  # googlenet's row at 224 in the table
    # the measured share of time outside conv/linear, from the roofline records
    assert "42% of googlenet's forward time goes outside convolution and linear layers against 9% for alexnet" in answer  # fmt: skip


def test_exercise3_compares_both_networks_at_the_same_input(tmp_path):
    md = render(tmp_path, chapter_run())
    rows = table(md, "googlenet against googlenet28, both at 28x28")
    assert all(r["input"] == "28" for r in rows)
    macs = next(r for r in rows if r["quantity"] == "GMACs per image")
    g28 = sum(lay.macs for lay in t.googlenet_layers(28)) / 1e9
    assert macs["googlenet"] == "0.123" and macs["googlenet28"] == f"{g28:.3f}"  # both at 28
    acc = next(r for r in rows if r["quantity"] == "test accuracy")
    assert acc["change"] == "-5.0 pp"  # 0.45 - 0.50, in percentage points
    lat = next(r for r in rows if r["quantity"] == "latency b1 ms")
    assert lat["googlenet"] == "—" and "no same-input measurement" in lat["change"]


# --- noise ---------------------------------------------------------------------------------------


LINEAGE = "Variants against their parents (train images/s at batch 16)"


def test_a_control_pair_with_a_30_percent_drift_marks_the_run_noisy(tmp_path):
    md = render(tmp_path, chapter_run(ls_drift=1.3))
    head = md.split("## Overview")[0]
    assert "Noise control failed" in head
    assert "Noise control failed" in section(md, "Exercise 1")  # repeated in the lineage
    # no change smaller than the control's is called: googlenet_bn's -23% training throughput,
    # called "slower" beside a passing control (below), is not resolved beside this one
    assert "train b16: 5.0% (a 6.2% change is called 80% of the time; 3 rounds), raised to 32.2% by the noise control" in head  # fmt: skip
    assert row(md, LINEAGE, "variant", "googlenet_bn")["train images/s verdict"].startswith("not resolved, CI ")  # fmt: skip


def test_an_identical_control_pair_passes(tmp_path):
    md = render(tmp_path, chapter_run(ls_drift=1.0))
    head = md.split("## Overview")[0]
    assert "Noise control failed" not in md and "Noise control passed" in head
    assert "raised to" not in head  # the control's intervals are narrower than the run resolves
    ls = row(md, LINEAGE, "variant", "googlenet_ls")
    assert ls["latency b1 ms verdict"].startswith("not resolved, CI ")
    bn = row(md, LINEAGE, "variant", "googlenet_bn")
    assert bn["latency b1 ms verdict"].startswith("slower, CI ")  # +30%: outside the noise
    assert bn["train images/s verdict"].startswith("slower, CI ")


def test_a_control_pair_noisier_than_its_run_has_no_power_and_raises_the_floor(tmp_path):
    """The pair agrees, but its own rounds scatter by 4-5% while the other models' do not: its
    interval is wider than the change the run says it detects, so the control does not pass and
    the run resolves no better than the control's interval."""
    quiet = {m: (0.0, 0.0, 0.0) for m in OWN_OFFSETS}
    md = render(tmp_path, chapter_run(own={**quiet, "googlenet_ls": (0.05, -0.04, -0.01)}))
    head = md.split("## Overview")[0]
    assert "Noise control without power" in head and "Noise control passed" not in head
    assert "its interval reaches ±" in head and "raised to" in head
    assert row(md, LINEAGE, "variant", "googlenet_ls")["latency b1 ms verdict"].startswith("not resolved")


def test_records_without_samples_fall_back_to_the_iqr_rule_labelled(tmp_path):
    md = render(tmp_path, chapter_run(ls_drift=1.3, kept=False))
    head = md.split("## Overview")[0]
    assert "Noise control failed" in head and "IQR rule" in head
    lat = table(md, "Latency per model, mode and batch")
    assert all(r["p50 95% CI ms"] == "— (no samples)" for r in lat)


def _compare(tmp_path, factor: float, seed_b: int, spread: float = 0.02):
    a = t.write_run(tmp_path / "a", [t.latency("googlenet", 96, 1, "inference", 10.0, seed=1, spread=spread)])  # fmt: skip
    b = t.write_run(tmp_path / "b", [t.latency("googlenet", 96, 1, "inference", 10.0 * factor, seed=seed_b, spread=spread)])  # fmt: skip
    return a, b, compare_runs(a, b)


def test_compare_flags_a_shift_outside_the_noise(tmp_path):
    a, b, frame = _compare(tmp_path, 1.3, seed_b=5)
    lat = frame[frame.value == "latency_ms_p50"].iloc[0]
    assert lat.significant and lat.verdict == "slower" and lat.noise_shown.startswith("95% CI 1.")
    ips = frame[frame.value == "images_per_s"].iloc[0]
    assert ips.significant and ips.verdict == "slower"
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    assert "**!** slower" in (tmp_path / "cmp" / "compare.md").read_text()


def test_compare_does_not_flag_a_change_inside_the_noise(tmp_path):
    a, b, frame = _compare(tmp_path, 1.0, seed_b=6)  # same distribution, other draws
    lat = frame[frame.value == "latency_ms_p50"].iloc[0]
    assert lat.change != 0 and not lat.significant and lat.verdict == "not resolved"
    main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")])
    md = (tmp_path / "cmp" / "compare.md").read_text()
    rows = md.split("| --- |", 1)[1]
    assert "**!**" not in rows and "| not resolved |" in rows


def test_compare_does_not_call_a_precise_change_below_what_the_runs_resolve(tmp_path):
    """googlenet's 3% is measured to ±0.1%, but nin's rounds beside it scatter by ±6%: the runs
    resolve, from every model they measured at batch 1, about 20%, and call nothing smaller."""
    nin = dict(spread=0.02, offsets=(0.06, -0.05, 0.0))
    a = t.write_run(tmp_path / "a", [t.latency("googlenet", 96, 1, "inference", 10.0, seed=1, spread=0.002),
                                     t.latency("nin", 224, 1, "inference", 20.0, seed=2, **nin)])  # fmt: skip
    b = t.write_run(tmp_path / "b", [t.latency("googlenet", 96, 1, "inference", 10.3, seed=8, spread=0.002),
                                     t.latency("nin", 224, 1, "inference", 20.0, seed=3, **nin)])  # fmt: skip
    frame = compare_runs(a, b)
    lat = frame[(frame.value == "latency_ms_p50") & (frame.model == "googlenet")].iloc[0]
    ci, resolves = lat.noise_shown.split("; resolves ")
    low, high = (float(x) for x in ci.removeprefix("95% CI ").removesuffix(", unpaired").split("–"))
    assert low > 1.0  # the interval excludes 1 ...
    assert float(resolves.rstrip("%")) > 3.0  # ... but the runs resolve no 3% change
    assert not lat.significant and lat.verdict == "not resolved"
    # alone, the same two googlenet records are resolved: their own noise is the runs' noise
    alone = compare_runs(t.write_run(tmp_path / "a1", [t.latency("googlenet", 96, 1, "inference", 10.0, seed=1, spread=0.002)]),
                         t.write_run(tmp_path / "b1", [t.latency("googlenet", 96, 1, "inference", 10.3, seed=8, spread=0.002)]))  # fmt: skip
    assert alone[alone.value == "latency_ms_p50"].iloc[0].verdict == "slower"


def test_compare_calls_accuracy_only_from_three_seeds_a_side(tmp_path):
    """One seed has no spread from seed to seed, and the test set's binomial interval holds no
    training noise: a single seed's change is never called, however large."""
    a = t.write_run(tmp_path / "a", [t.accuracy("nin", 72, [0.50])])
    for acc_b, shown in ((0.60, "+10.0 pp"), (0.515, "+1.5 pp"), (0.40, "-10.0 pp")):
        b = t.write_run(tmp_path / f"b{acc_b}", [t.accuracy("nin", 72, [acc_b])])
        r = compare_runs(a, b)
        acc = r[r.value == "test_accuracy_mean"].iloc[0]
        assert acc.change_shown == shown and not acc.significant and acc.verdict == "not resolved"
        assert "1 seed: a call needs 3 a side" in acc.noise_shown
    # three seeds on each side: Welch's interval over them decides (+1.5 pp against 0.5 pp std)
    a3 = t.write_run(tmp_path / "a3", [t.accuracy("nin", 72, [0.50, 0.505, 0.495])])
    b3 = t.write_run(tmp_path / "b3", [t.accuracy("nin", 72, [0.515, 0.52, 0.51])])
    acc = compare_runs(a3, b3).query("value == 'test_accuracy_mean'").iloc[0]
    # Welch by hand: difference 1.5 pp, se = sqrt(2 * 0.005^2 / 3), dof 4, t = 2.776
    half = 2.776 * (2 * 0.005**2 / 3) ** 0.5
    assert acc.significant and acc.verdict == "higher"
    assert f"CI +{100 * (0.015 - half):.1f} to +{100 * (0.015 + half):.1f} pp" in acc.noise_shown
    # the same means with a spread 4x as wide: the interval reaches 0, nothing is called
    a4 = t.write_run(tmp_path / "a4", [t.accuracy("nin", 72, [0.50, 0.52, 0.48])])
    b4 = t.write_run(tmp_path / "b4", [t.accuracy("nin", 72, [0.515, 0.535, 0.495])])
    assert compare_runs(a4, b4).query("value == 'test_accuracy_mean'").iloc[0].verdict == "not resolved"


def test_latency_figure_shades_the_interval_when_samples_exist(tmp_path):
    md = render(tmp_path, chapter_run())
    assert "band and whiskers: 95% CI of the median" in md
    md = render(tmp_path / "old", chapter_run(kept=False))
    assert "no band: these records kept no samples" in md


# --- accuracy ------------------------------------------------------------------------------------


def test_one_seed_shows_no_spread_and_several_the_sample_std(tmp_path):
    md = render(tmp_path, chapter_run())
    acc = table(md, "Accuracy after training, and exactly how it was trained")
    one = next(r for r in acc if r["model"] == "googlenet")
    assert one["std"] == "—" and "0.000" not in one.values()
    three = next(r for r in acc if r["model"] == "alexnet")
    assert three["std"] == f"{statistics.stdev([0.66, 0.70, 0.71]):.3f}"  # n - 1: 0.026, not 0.022
    assert row(md, "Overview", "model", "alexnet")["test accuracy"] == f"0.690 ± {statistics.stdev([0.66, 0.70, 0.71]):.3f}"  # fmt: skip


def test_accuracy_changes_are_percentage_points(tmp_path):
    md = render(tmp_path, chapter_run())
    ls = row(md, "Variants against their parents (train images/s at batch 16)", "variant", "googlenet_ls")  # fmt: skip
    assert ls["test accuracy change"] == "+4.7 pp"  # 0.547 - 0.500, not +9.4%


def test_a_single_epoch_plots_its_curve_points_or_no_figure(tmp_path):
    with_curve = t.write_run(tmp_path / "a", [t.accuracy("nin", 72, [0.5], curve=True)])
    write_report([with_curve])
    assert (with_curve / "figures" / "training_curves.png").exists()
    assert "Training curves" in (with_curve / "report.md").read_text()
    without = t.write_run(tmp_path / "b", [t.accuracy("nin", 72, [0.5], curve=False)])
    write_report([without])
    assert not (without / "figures" / "training_curves.png").exists()
    assert "## Training curves" not in (without / "report.md").read_text()


# --- impossible numbers --------------------------------------------------------------------------


@pytest.mark.parametrize("mfu,above,flag", [(1.2, 0, None), (0.7, 2, None), (0.7, 0, True)])
def test_mfu_above_the_roof_is_never_a_number(tmp_path, mfu, above, flag):
    recs = [t.params("alexnet", 224, 46_764_746), t.flops("alexnet", 224, t.alexnet_layers()),
            t.roofline("alexnet", mfu, layers_above=above, underestimated=flag),
            t.params("nin", 224, 1_992_166), t.roofline("nin", 0.4)]  # fmt: skip
    md = render(tmp_path, recs)
    html = (tmp_path / "run" / "report.html").read_text()
    for text in (md, html):
        assert not re.search(r"\b(1\d\d|[7-9]\d)\.\d\s?%", text)  # no MFU of 70% or more, as a percent
        assert ABOVE_ROOF in text
    assert row(md, "Overview", "model", "alexnet")["MFU % (roofline batch)"] == ABOVE_ROOF
    assert row(md, "Model FLOPs utilization and peaks", "model", "alexnet")["MFU %"] == ABOVE_ROOF
    assert row(md, "Overview", "model", "nin")["MFU % (roofline batch)"] == "40.0 (16)"
    roof = section(md, "Exercise 5, measured — rooflines")
    assert "The measured roof is underestimated" in roof
    if above:
        assert "alexnet conv0" in roof and "alexnet conv1" in roof  # the layers above it, named


def test_the_data_sheet_roof_shows_its_source_and_factors(tmp_path):
    factors = {"cores": 2, "fma_units": 2, "lanes": 16, "clock_hz": "unknown"}
    recs = [t.roofline("nin", 0.4, datasheet_source="cores x FMA units x lanes x 2 x clock",
                       datasheet_factors=factors, probes={"matmul 1536": 80e9, "conv 3x3": 100e9})]  # fmt: skip
    md = render(tmp_path, recs)
    peaks = table(md, "The peaks behind the roof: every probe, and the data sheet")[0]
    assert peaks["data-sheet factors"] == "cores 2, fma_units 2, lanes 16, clock_hz unknown"
    assert peaks["probes GFLOP/s"] == "matmul 1536 80.0; conv 3x3 100.0"


def test_a_data_sheet_below_the_measured_peak_is_called_underestimated(tmp_path):
    """A probe cannot run faster than the hardware: a data-sheet figure below it has a wrong
    factor (on a VM, the nominal clock), and the report says so instead of using it as a roof."""
    import dataclasses

    base = t.roofline("nin", 0.4, datasheet_factors={"clock_source": "cpu MHz (nominal on a VM)"})
    for ratio, shown, claimed in ((0.6, "1.67 (data sheet underestimated)", True), (1.5, "0.67", False)):
        sheet = dataclasses.replace(base.result.peaks, datasheet_flops=ratio * t.PEAK)
        rec = Record.of("roofline", base.spec, dataclasses.replace(
            base.result, peaks=sheet, datasheet_flops=sheet.datasheet_flops))  # fmt: skip
        md = render(tmp_path / str(ratio), [rec])
        row = table(md, "The peaks behind the roof: every probe, and the data sheet")[0]
        assert row["best probe / data sheet"] == shown
        said = "The data-sheet roof (60 GFLOP/s) lies below what the probes measured (100)"
        assert (said in md) is claimed
        assert ("the clock is cpu MHz (nominal on a VM)" in md) is claimed


# --- one word, one meaning; units; answers; conditions; escaping ---------------------------------


def test_memory_parts_are_named_apart_and_units_are_binary(tmp_path):
    md = render(tmp_path, chapter_run())
    mem = table(md, "Memory (MiB): measured peak beside the analytic breakdown (measured: rss_worker)")
    assert "activations" not in mem[0]
    train = next(r for r in mem if r["mode"] == "train" and r["batch"] == "16")
    assert train["saved for backward (train)"] == "30.0" and train["largest layer in+out (inference)"] == ""  # fmt: skip
    # 500 MiB measured against 20 + 20 + 40 + 1 + 30 analytic: the rest, named as such
    assert train["analytic sum"] == "111.0" and train["not in the analytic sum"] == "389.0"
    # timed at 96 px, trained at 28: the same optimizer, but not the network that was trained
    assert train["step optimizer"] == "adam 0.0005 (accuracy run: trained at 28 px, 6.0M parameters)"
    assert not re.search(r"\b(MB|KB)\b", md)  # 2^20 and 2^10 are MiB and KiB
    assert "## Glossary" in md and "| forward outputs per image |" in md


def test_a_step_optimizer_that_differs_from_the_accuracy_run_says_so(tmp_path):
    recs = [t.latency("nin", 224, 16, "train", 100.0, optimizer="sgd 0.01"), t.accuracy("nin", 72, [0.5])]
    md = render(tmp_path, recs)
    lat = table(md, "Latency per model, mode and batch")[0]
    assert lat["step optimizer"] == "sgd 0.01 (accuracy run: optimizer adam 0.0005; trained at 72 px)"
    # the step that was trained: its size and optimizer, and only then "= accuracy run"
    same = [t.latency("nin", 72, 16, "train", 100.0, optimizer="adam 0.0005"), t.accuracy("nin", 72, [0.5])]
    lat = table(render(tmp_path / "same", same), "Latency per model, mode and batch")[0]
    assert lat["step optimizer"] == "adam 0.0005 (= accuracy run)"


def test_every_exercise_opens_with_an_answer(tmp_path):
    md = render(tmp_path, chapter_run())
    for title in ("Exercise 1 —", "Exercise 3 —", "Exercise 4 —", "Exercise 5 —", "Exercise 5, measured"):  # fmt: skip
        body = section(md, title).split("\n", 1)[1]  # after the title line
        first = body.strip().split("\n\n")[0]
        assert first.startswith("**Answer.**") and re.search(r"\d", first), title


def test_conditions_list_every_invocation_of_a_resumed_run(tmp_path):
    md = render(tmp_path, chapter_run(), env=t.env_with_resume())
    line = md.split("## Conditions")[1].split("\n## ")[0]
    assert "2 invocations (resumed)" in line
    assert "(1) git 1111111111 (dirty): `cnnbench run --out R`" in line
    assert "(2) git 2222222222: `cnnbench run --metrics roofline --resume R`" in line


def test_table_cells_are_escaped_in_html(tmp_path):
    evil = "<script>alert(1)</script>"
    recs = [t.params(f"m{evil}", 224, 1000),
            t.Record.failed("latency", t.spec("nin", 224), "error", f"RuntimeError: {evil} & co")]  # fmt: skip
    render(tmp_path, recs)
    html = (tmp_path / "run" / "report.html").read_text()
    assert "<script" not in html
    assert "m&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "RuntimeError: &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html


def test_an_unlike_pair_gets_its_numbers_and_no_verdict(tmp_path):
    md = render(tmp_path, chapter_run())
    g28 = row(md, LINEAGE, "variant", "googlenet28")
    assert g28["input (variant / parent)"] == "28 / 96"
    assert g28["latency b1 ms verdict"] == "no verdict (28 vs 96 px)"
    assert g28["latency b1 ms change"].startswith("— (28 vs 96 px: parent ")
    answer = section(md, "Exercise 1").split("**Answer.**")[1].split("\n")[0]
    assert "googlenet28 (28 vs 96 px)" in answer.split("No size-dependent verdict for ")[1]
    assert "googlenet28 latency" not in answer.split("No size-dependent verdict")[0]


def test_a_memory_change_is_judged_against_the_identical_pairs_spread(tmp_path):
    """The pair differs by +4% and -3%: threshold = t(0.975, 2) x their root mean square =
    4.302653 x 0.0351 = 16.3%; a +10% variant is not resolved, a +25% one is."""
    import math

    recs = chapter_run()
    recs = [r for r in recs if not (r.metric == "memory" and r.spec.model in ("googlenet_ls", "googlenet_bn"))]
    recs += [t.memory("googlenet_ls", 96, 4, "train", 312 * MiB), t.memory("googlenet_ls", 96, 16, "train", 485 * MiB, optimizer="adam 0.0005"),  # fmt: skip
             t.memory("googlenet_bn", 96, 4, "train", 330 * MiB), t.memory("googlenet_bn", 96, 16, "train", 625 * MiB, optimizer="adam 0.0005")]  # fmt: skip
    md = render(tmp_path, recs)
    rms = math.sqrt((math.log(312 / 300) ** 2 + math.log(485 / 500) ** 2) / 2)
    threshold = math.expm1(4.302653 * rms)
    assert f"so memory changes within ±{100 * threshold:.0f}% are not resolved" in md.split("## Overview")[0]
    ls = row(md, LINEAGE, "variant", "googlenet_ls")  # 485 against 500: -3%
    assert ls["train memory MiB verdict"] == f"not resolved, within ±{100 * threshold:.0f}%"
    bn = row(md, LINEAGE, "variant", "googlenet_bn")  # 625 against 500: +25%
    assert bn["train memory MiB verdict"] == f"more, beyond ±{100 * threshold:.0f}%"


def test_mfu_divides_the_pass_by_the_latency_tables_median(tmp_path):
    """googlenet's roofline ran its pass at 10 ms (MFU 0.4 of the peak); the latency table's
    median at the same batch is what the report shows: MFU = work / that median / peak."""
    recs = chapter_run()
    roof = next(r for r in recs if r.metric == "roofline" and r.spec.model == "googlenet")
    lat = t.latency("googlenet", 96, 16, "inference", 12.5, seed=40)
    md = render(tmp_path, [*recs, lat])
    work = roof.result.model_achieved_flops * roof.result.model_ms / 1e3
    expected = work / (lat.result.latency_ms_p50 / 1e3) / roof.result.peak_flops
    assert row(md, "Overview", "model", "googlenet")["MFU % (roofline batch)"] == f"{100 * expected:.1f} (16)"
    # alexnet has no inference latency at 16: its roofline's own pass, and the report says so
    assert "no latency record at this batch" in md


def test_gradient_bytes_order_scaling_only_beyond_both_intervals():
    """Exercise 4's scaling answer: an ordering by gradient bytes is claimed only where the
    efficiencies' intervals separate; a point without an interval (one process per world size
    holds none between processes) orders nothing."""
    from types import SimpleNamespace as NS

    from cnnbench.analysis.scaling import _bytes_verdict

    def result(grad_bytes, eff, ci):
        one = NS(kind="weak", world_size=1, step_ms_p50=100.0, step_ms_ci_low=ci and 100.0 - ci,
                 step_ms_ci_high=ci and 100.0 + ci)  # fmt: skip
        two = NS(kind="weak", world_size=2, efficiency=eff, step_ms_p50=100.0 / eff,
                 step_ms_ci_low=ci and 100.0 / eff - ci, step_ms_ci_high=ci and 100.0 / eff + ci)  # fmt: skip
        v = NS(grad_bytes=grad_bytes, points=[one, two])
        return ("m", v, two)

    tight = [result(10, 0.9, 1.0), result(1000, 0.5, 1.0)]
    assert _bytes_verdict(tight) == "yes"
    assert _bytes_verdict([result(10, 0.5, 1.0), result(1000, 0.9, 1.0)]) == "no"
    assert _bytes_verdict([result(10, 0.9, None), result(1000, 0.5, None)]) == "noise"
    assert _bytes_verdict([result(10, 0.9, 1.0), result(1000, 0.5, None)]) == "noise"


def test_memory_noise_needs_two_pairs_and_a_spread():
    """One pair of peaks, or pairs equal to the byte, hold no estimate of the noise: no memory
    change is then called (a threshold of 0 would call every difference)."""
    from cnnbench.analysis.noise import memory_noise

    def pair(*ls_bytes):
        out = []
        for batch, ls in zip((4, 16), ls_bytes, strict=False):
            out += [t.memory("googlenet", 96, batch, "train", 300 * MiB), t.memory("googlenet_ls", 96, batch, "train", ls)]
        return out

    assert memory_noise(pair(312 * MiB)) is None  # one pair
    assert memory_noise(pair(300 * MiB, 300 * MiB)) is None  # equal to the byte
    assert memory_noise(pair(312 * MiB, 291 * MiB)).threshold > 0
