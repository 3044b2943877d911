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
own paired one (``stats.ratio_interval``: Student's t on the pairs' log ratios): pairs are added
from ``FIRST_PAIRS`` until a difference of ``GOAL`` would be called with 80% power
(``Resolution.detectable``; stopping on the precision, never on the estimate) or ``MAX_PAIRS``
are spent. The harnesses differ when ``stats.call`` calls the ratio beyond ``AGREE`` (interval
excluding 1, estimate at least 5% off): the test fails. A run that stopped unable to call a
difference of ``AGREE`` and called nothing is skipped with its noise named, rather than passed
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
AGREE = 0.05  # the harnesses differ when a difference this large is called
GOAL = 0.04  # stop once a difference this large would be called with 80% power
FIRST_PAIRS = 8
MAX_PAIRS = 48  # ~2 s a pair here: a quiet hour (sd 0.07-0.09) needed 22-33, a noisy one ~250
BIAS = 0.10  # the control's known slowdown: twice AGREE, the 6-10% gap once seen against timm
CASES = [("tv_alexnet", 224), ("tv_vgg11", 64)]


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
    would call a difference of ``GOAL`` with 80% power, or ``MAX_PAIRS``; the verdict by
    cnnbench's rule with ``AGREE`` as the floor."""
    ours, peer = [], []
    for i in range(MAX_PAIRS):
        a, b = pair(i)
        ours.append(a)
        peer.append(b)
        if i + 1 >= FIRST_PAIRS:
            iv, res = stats.ratio_interval(ours, peer, paired=True)
            if res.detectable <= GOAL:
                break
    logs = [math.log(b / a) for a, b in zip(ours, peer, strict=True)]
    return {
        "pairs": len(ours), "cnnbench_ms": ours, "torch_utils_benchmark_ms": peer,
        "pair_log_ratio_sd": statistics.stdev(logs), "peer_over_cnnbench": iv.estimate,
        "low": iv.low, "high": iv.high, "callable": res.callable, "detectable": res.detectable,
        "verdict": stats.call(iv, AGREE, up="peer slower", down="peer faster"),
    }  # fmt: skip


def _too_noisy(found: dict) -> str | None:
    """Why a run that called nothing says nothing either: it could not call ``AGREE``."""
    if found["verdict"] != stats.NOT_RESOLVED or found["callable"] <= AGREE:
        return None
    return (f"too noisy here to call a {AGREE:.0%} difference: {found['pairs']} pairs of log-ratio "
            f"sd {found['pair_log_ratio_sd']:.3f} call only {found['callable']:.1%} or more")  # fmt: skip


def _compare(name: str, size: int, bias: float = 0.0) -> dict:
    """cnnbench's median call against the peer's, interleaved in pairs. ``bias`` > 0 slows the
    peer's callable by that share of cnnbench's first median (the control)."""
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
        if i % 2:  # every other pair the peer goes first: a drift within a pair cancels
            theirs = _peer_ms(peer_fn)
        median_ms, mean_ms = _median_ms(forward)
        if not i % 2:
            theirs = _peer_ms(peer_fn)
        if i < FIRST_PAIRS and not bias:  # the two settings a peer might differ in, on the side
            mean.append(mean_ms / median_ms)
            grad.append(_median_ms(no_grad)[0] / median_ms)
        return median_ms, theirs

    found = _pairs_until_resolved(pair)
    found.update(model=name, image_size=size, batch=BATCH, threads=torch.get_num_threads(), bias=bias)
    if not bias:
        found["no_grad_over_inference_mode_median"] = statistics.median(grad)
        found["mean_over_median_median"] = statistics.median(mean)
    return found


@pytest.mark.serial  # ratios of timings
@pytest.mark.parametrize("name,size", CASES)
def test_cnnbench_agrees_with_torch_utils_benchmark(benchmark, name, size):
    found = benchmark.pedantic(_compare, args=(name, size), rounds=1, iterations=1)
    benchmark.extra_info.update(found)
    assert found["verdict"] == stats.NOT_RESOLVED, found  # a difference of 5% or more, called
    if why := _too_noisy(found):
        pytest.skip(why)


@pytest.mark.serial
def test_a_known_bias_is_called(benchmark):
    """The control: a peer made ``BIAS`` slower is called slower by the same pairs and rule (the
    check above would pass for any harness if the rule could call nothing)."""
    found = benchmark.pedantic(_compare, args=(*CASES[0], BIAS), rounds=1, iterations=1)
    benchmark.extra_info.update(found)
    if found["verdict"] != "peer slower" and (why := _too_noisy(found)):
        pytest.skip(why)
    assert found["verdict"] == "peer slower", found


# the pairs' noise as measured here (module docstring): log-ratio sd 0.09 in a quiet hour, 0.2 in
# a noisy one, heavy-tailed (Student's t with 4 degrees of freedom, scaled to that sd)
NOISE_SD = {"quiet": 0.09, "noisy": 0.20}
SIMULATED_RUNS = 1000


def _simulated(sd: float, true_ratio: float, rng) -> dict:
    scale = sd / math.sqrt(4 / (4 - 2))  # a t(4) variable has variance 4 / (4 - 2)

    def pair(i):
        ours = 150.0 * math.exp(rng.normal(0, 0.05))  # what the pair shares cancels in its ratio
        return ours, ours * true_ratio * math.exp(scale * rng.standard_t(4))

    return _pairs_until_resolved(pair)


@pytest.mark.parametrize("noise", NOISE_SD)
def test_the_rule_with_the_noise_measured_here(noise):
    """Against a truth known by construction: identical harnesses are called different rarely
    (quiet: under 2% of runs, where the floor and the precision goal both guard; noisy: about
    the interval's own 5%), a harness BIAS slower is called in at least 97% of quiet runs, and a
    quiet run almost always resolves AGREE within MAX_PAIRS while most noisy ones say they cannot."""
    import numpy as np

    rng = np.random.default_rng(7)
    same = [_simulated(NOISE_SD[noise], 1.0, rng) for _ in range(SIMULATED_RUNS)]
    biased = [_simulated(NOISE_SD[noise], 1 + BIAS, rng) for _ in range(SIMULATED_RUNS)]
    false_alarm = sum(f["verdict"] != stats.NOT_RESOLVED for f in same) / SIMULATED_RUNS
    power = sum(f["verdict"] == "peer slower" for f in biased) / SIMULATED_RUNS
    silent = sum(_too_noisy(f) is not None for f in same) / SIMULATED_RUNS
    if noise == "quiet":
        assert false_alarm < 0.02 and power >= 0.97 and silent < 0.02, (false_alarm, power, silent)
    else:
        assert false_alarm < 0.075 and silent > 0.5, (false_alarm, power, silent)
