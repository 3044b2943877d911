"""cnnbench's forward latency beside a second harness, interleaved: torch.utils.benchmark, set
up alike, on torchvision's AlexNet (224 px) and VGG-11 (64 px) at batch 4.

"Alike" means the same callable (cnnbench's workload: the model in eval mode under
``torch.inference_mode``, the same input tensor), the same thread count (``Timer`` sets one
thread unless told), and the same statistic: Timer's blocks hold one call each at these times
(a block is sized to reach 1/1000 of ``min_run_time``), so its ``median`` is a median call, as
cnnbench's is.

How "agree" is judged, with the noise these machines show. The two harnesses alternate in pairs
in one process, each going first in every other pair, so that drift hits both alike; the pair is
the replicate. On the 2-vCPU VMs the log of one pair's ratio peer / cnnbench had a standard
deviation of 0.07-0.10 in a quiet hour and 0.18-0.20 in a noisy one, with heavy tails (single
pairs at +0.38 and +0.52; measured 2026-12-07 on an AMD EPYC VM, 40-60 pairs a model; one
thread instead of two was no quieter). A fixed 8 pairs with a bare 5% bound on their median
ratio therefore failed about one CI run in three with no bias at all. Now the rule is cnnbench's
own paired one (``stats.ratio_interval``: Student's t on the pairs' log ratios, the estimate its
centre): pairs are added from ``FIRST_PAIRS`` until a difference of ``GOAL`` would be called with
80% power (``Resolution.detectable``; stopping on the precision, never on the estimate) or
``MAX_PAIRS`` are spent. Then (``_judge``): a run that can detect ``AGREE`` fails when
``stats.call`` calls a difference of at least ``AGREE`` (interval excluding 1, estimate at least
5% off) and passes otherwise; a run that cannot fails only when its whole interval lies beyond
±``AGREE``, fails when one harness's own spread is far the larger (the noise is then that
harness's, not the machine's), and is otherwise skipped with its noise named, rather than passed
for being wide. ``test_the_rule_with_the_noise_measured_here`` checks the rule on simulated pairs
with that noise; ``test_a_known_bias_is_called`` runs it against a peer known to be ``BIAS``
slower (a sleep of that share of the median call after each forward, which costs no CPU).

Beside it, what a peer set up otherwise would see, from cnnbench's harness on the same model in
the first ``FIRST_PAIRS`` pairs: ``torch.no_grad`` in place of ``inference_mode`` (timm's
benchmark.py), and the mean of the iterations in place of the median (timm reports a mean over
its steps). Both go to ``extra_info`` and the README's measurement section says which of them
moves the number.
"""

from __future__ import annotations

import math
import statistics
import time

import pytest
import torch
import torch.utils.benchmark as tub

from cnnbench import stats
from cnnbench.measure import workload
from cnnbench.measure.latency import TimingConfig, time_iterations
from cnnbench.results import Spec

BATCH = 4  # ~0.13-0.2 s a forward on 2 slow cores; the pairs were no quieter at batch 16
MIN_TIME_S = 0.5
AGREE = 0.05  # the harnesses differ when a difference this large is shown
GOAL = 0.04  # stop once a difference this large would be called with 80% power
FIRST_PAIRS = 8
# ~2 s a pair here. Pairs to reach GOAL: ~(2.85 sd / ln 1.04)^2, ~27 at sd 0.07 and ~45 at 0.09
# (runs here took 29-42); above sd ~0.095 the cap ends the run first, and a noisy hour (0.2)
# would need ~200
MAX_PAIRS = 48
assert 2 <= FIRST_PAIRS <= MAX_PAIRS
BIAS = 0.10  # the control's known slowdown: twice AGREE, the 6-10% gap once seen against timm
# a harness whose own spread from pair to pair (the interquartile range of its log medians:
# robust to the machine's single slow pairs, which a variance is not) is this many times the
# other's is the noise, not the machine: 0.80-1.18 was measured here, in quiet and noisy hours
SIDE_SPREAD_RATIO = 2.5  # by chance, 2.0 was passed in 1% of simulated noisy runs (below)
CASES = [("tv_alexnet", 224), ("tv_vgg11", 64)]

AGREES, DIFFERS, TOO_NOISY, UNEQUAL_NOISE = "agrees", "differs", "too noisy", "one side noisier"


def _median_ms(fn) -> tuple[float, float]:
    """cnnbench's harness: (median, mean) iteration in ms."""
    times, _ = time_iterations(fn, torch.device("cpu"), TimingConfig(warmup_runs=1, min_runs=3, min_time_s=MIN_TIME_S))  # fmt: skip
    return statistics.median(times), statistics.fmean(times)


def _peer_ms(fn) -> float:
    fn()  # warm-up, as cnnbench's
    timer = tub.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=MIN_TIME_S)
    assert m.number_per_run == 1, m  # one call per block: its median is a median call
    return m.median * 1e3


def _pairs_until_resolved(pair) -> dict:
    """Calls ``pair(i) -> (cnnbench_ms, peer_ms)`` until the paired interval of peer / cnnbench
    would call a difference of ``GOAL`` with 80% power, or ``MAX_PAIRS``; then judges it
    (:func:`_judge`)."""
    ours, peer = [], []
    for i in range(MAX_PAIRS):
        a, b = pair(i)
        ours.append(a)
        peer.append(b)
        if i + 1 >= FIRST_PAIRS and stats.ratio_interval(ours, peer, paired=True)[1].detectable <= GOAL:
            break
    iv, res = stats.ratio_interval(ours, peer, paired=True)
    logs = [math.log(b / a) for a, b in zip(ours, peer, strict=True)]
    found = {
        "pairs": len(ours), "cnnbench_ms": ours, "torch_utils_benchmark_ms": peer,
        "pair_log_ratio_sd": statistics.stdev(logs),
        "cnnbench_log_iqr": _log_iqr(ours), "peer_log_iqr": _log_iqr(peer),
        "peer_over_cnnbench": iv.estimate, "low": iv.low, "high": iv.high,
        "callable": res.callable, "detectable": res.detectable,
        "verdict": stats.call(iv, AGREE, up="peer slower", down="peer faster"),
    }  # fmt: skip
    found["judged"], found["why"] = _judge(found)
    return found


def _log_iqr(ms: list[float]) -> float:
    q1, _, q3 = statistics.quantiles([math.log(x) for x in ms], n=4)
    return q3 - q1


def _judge(found: dict) -> tuple[str, str]:
    """(judgement, why). A run that can call ``AGREE`` (detectable with 80% power) is judged by
    cnnbench's rule: DIFFERS when it calls a difference of at least ``AGREE``, else AGREES. A run
    that cannot only says DIFFERS when its whole interval lies beyond ±``AGREE`` (at the
    interval's own 5% a noisy hour would fail one run in ten of two models); otherwise it is
    TOO_NOISY, unless one harness's own spread explains the noise (UNEQUAL_NOISE)."""
    low, high = math.log(found["low"]), math.log(found["high"])
    beyond = low > math.log1p(AGREE) or high < -math.log1p(AGREE)
    resolved = found["detectable"] <= AGREE
    if found["verdict"] != stats.NOT_RESOLVED and (resolved or beyond):
        return DIFFERS, f"peer / cnnbench {found['peer_over_cnnbench']:.3f} ({found['low']:.3f}-{found['high']:.3f})"
    if resolved:
        return AGREES, ""
    sides = found["peer_log_iqr"] / found["cnnbench_log_iqr"]
    if not 1 / SIDE_SPREAD_RATIO <= sides <= SIDE_SPREAD_RATIO:
        return UNEQUAL_NOISE, (f"the peer's spread from pair to pair is {sides:.2f}x cnnbench's "
                               f"(log IQR {found['peer_log_iqr']:.3f} against {found['cnnbench_log_iqr']:.3f})")  # fmt: skip
    return TOO_NOISY, (f"too noisy here to call a {AGREE:.0%} difference: {found['pairs']} pairs of "
                       f"log-ratio sd {found['pair_log_ratio_sd']:.3f} detect {found['detectable']:.1%} "
                       f"(log IQR per side: cnnbench {found['cnnbench_log_iqr']:.3f}, peer {found['peer_log_iqr']:.3f})")  # fmt: skip


def _compare(name: str, size: int, bias: float = 0.0) -> dict:
    """cnnbench's median call against the peer's, interleaved in pairs. ``bias`` > 0 slows the
    peer's callable by that share of cnnbench's median (the control), measured after a warm-up."""
    w = workload.build(Spec(name, size, batch_size=BATCH, threads=torch.get_num_threads()))
    forward = w.forward  # eval, inference_mode: what cnnbench times for an inference latency
    delay_s = bias * _median_ms(forward)[0] / 1e3

    def peer_fn():
        out = forward()
        if delay_s:
            time.sleep(delay_s)
        return out

    def no_grad():
        with torch.no_grad():
            return w.model(w.x)

    grad, mean = [], []

    def pair(i: int) -> tuple[float, float]:
        first = _peer_ms(peer_fn) if i % 2 else None  # every other pair the peer goes first
        median_ms, mean_ms = _median_ms(forward)
        theirs = first if first is not None else _peer_ms(peer_fn)
        if i < FIRST_PAIRS and not bias:  # the two settings a peer might differ in, on the side
            mean.append(mean_ms / median_ms)
            grad.append(_median_ms(no_grad)[0] / median_ms)
        return median_ms, theirs

    found = _pairs_until_resolved(pair)
    found.update(model=name, image_size=size, batch=BATCH, threads=torch.get_num_threads(), bias=bias)
    if bias:  # the slowdown the sleep adds, as a share of cnnbench's median over the whole run
        found["delay_ms"] = 1e3 * delay_s
        found["delay_over_cnnbench_median"] = 1e3 * delay_s / statistics.median(found["cnnbench_ms"])
    else:
        found["no_grad_over_inference_mode_median"] = statistics.median(grad)
        found["mean_over_median_median"] = statistics.median(mean)
    return found


@pytest.mark.serial  # ratios of timings
@pytest.mark.parametrize("name,size", CASES)
def test_cnnbench_agrees_with_torch_utils_benchmark(benchmark, name, size):
    found = benchmark.pedantic(_compare, args=(name, size), rounds=1, iterations=1)
    benchmark.extra_info.update(found)
    if found["judged"] == TOO_NOISY:
        pytest.skip(found["why"])
    assert found["judged"] == AGREES, found


@pytest.mark.serial
def test_a_known_bias_is_called(benchmark):
    """The control: a peer made ``BIAS`` slower is judged to differ, slower, by the same pairs and
    rule (the check above would pass for any harness if the rule could call nothing). It shows
    the rule calls 10% here; its power nearer ``AGREE`` rests on the simulation below."""
    found = benchmark.pedantic(_compare, args=(*CASES[0], BIAS), rounds=1, iterations=1)
    benchmark.extra_info.update(found)
    if found["judged"] == TOO_NOISY:
        pytest.skip(found["why"])
    assert found["judged"] == DIFFERS and found["verdict"] == "peer slower", found


# The pairs' noise as measured here (module docstring): log-ratio sd 0.09 in a quiet hour, 0.2 in
# a noisy one, heavy-tailed (Student's t with 4 degrees of freedom); each side draws its own half
# of that variance (the per-side spread was as large as the ratio's), plus a drift the pair shares.
# "skewed": the quiet noise with 5% of the pairs 0.4 slower on the peer's side (single pairs read
# +0.38 and +0.52 here).
NOISE = {"quiet": (0.09, 0.0), "noisy": (0.20, 0.0), "skewed": (0.09, 0.05)}
SIMULATED_RUNS = 1000


def _simulated(noise: str, true_ratio: float, rng) -> dict:
    sd, outliers = NOISE[noise]
    side = sd / math.sqrt(2) / math.sqrt(4 / (4 - 2))  # a t(4) variable has variance 4 / (4 - 2)

    def pair(i):
        shared = 150.0 * math.exp(rng.normal(0, 0.05))
        jump = 0.4 if rng.random() < outliers else 0.0
        return (shared * math.exp(side * rng.standard_t(4)),
                shared * true_ratio * math.exp(side * rng.standard_t(4) + jump))  # fmt: skip

    return _pairs_until_resolved(pair)


@pytest.mark.parametrize("noise", NOISE)
def test_the_rule_with_the_noise_measured_here(noise):
    """Against a truth known by construction: identical harnesses are judged to differ in under
    2% of runs in every kind of hour; a harness BIAS slower is caught in at least 97% of quiet
    runs; a quiet run resolves in at least 95% of runs, and most noisy ones say they cannot."""
    import numpy as np

    rng = np.random.default_rng(7)
    same = [_simulated(noise, 1.0, rng)["judged"] for _ in range(SIMULATED_RUNS)]
    slower = [_simulated(noise, 1 + BIAS, rng) for _ in range(SIMULATED_RUNS)]
    false_alarm = same.count(DIFFERS) / SIMULATED_RUNS
    power = sum(f["judged"] == DIFFERS and f["verdict"] == "peer slower" for f in slower) / SIMULATED_RUNS
    silent = same.count(TOO_NOISY) / SIMULATED_RUNS
    assert UNEQUAL_NOISE not in same, same.count(UNEQUAL_NOISE)  # both sides are alike here
    assert false_alarm < 0.02, (false_alarm, power, silent)
    if noise == "quiet":
        assert power >= 0.97 and silent < 0.05, (false_alarm, power, silent)
    if noise == "noisy":
        assert silent > 0.5, (false_alarm, power, silent)


def test_a_harness_noisier_than_the_machine_is_named_not_skipped():
    """A peer whose own timings scatter ten times as widely as cnnbench's (a broken harness, not
    the machine: the machine's noise reaches both sides of a pair) fails as UNEQUAL_NOISE where
    the same spread on both sides would be skipped as TOO_NOISY."""
    import numpy as np

    rng = np.random.default_rng(11)

    def run(ours_sd, peer_sd):
        return _pairs_until_resolved(lambda i: (150.0 * math.exp(rng.normal(0, ours_sd)),
                                                150.0 * math.exp(rng.normal(0, peer_sd))))["judged"]  # fmt: skip

    assert [run(0.02, 0.2) for _ in range(200)].count(UNEQUAL_NOISE) >= 190
    assert [run(0.14, 0.14) for _ in range(200)].count(UNEQUAL_NOISE) <= 2
