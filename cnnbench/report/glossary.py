"""The glossary: every term the report uses, in one sense only, defined once (the report's last
section)."""

from __future__ import annotations

import pandas as pd

from ..analysis.frames import EQUAL_RESOLUTION
from .fmt import ABOVE_ROOF

__all__ = ["GLOSSARY", "glossary_table"]

# every term the report uses in one sense only, defined once (the Glossary section)
GLOSSARY: list[tuple[str, str]] = [
    ("activations", "not used alone in this report, where it meant three things: see 'saved "
     "for backward (train)', 'largest layer in+out (inference)' and 'forward outputs per image'."),
    ("MAC", "one fused multiply-add, counted by fvcore; GMACs = 10^9 MACs. FLOPs = 2 x MACs."),
    ("input, trained at", "the square input side in pixels a number was measured at. A model's "
     "own size is its run's size (the chapter's unless --image-size); 'trained at' is the size "
     "its accuracy was trained at, with the head sized for it."),
    ("as trained", "the parameters and GMACs of the network that was trained (its size, its "
     "head): what an accuracy is paired with. — where the run recorded no count at that size."),
    ("equal resolution", f"{EQUAL_RESOLUTION}x{EQUAL_RESOLUTION}: models compared at one "
     "input size rather than each at its chapter size (exercise 5)."),
    ("p50, median latency", "the median time of one step (a forward pass, or forward + "
     "backward + optimizer step in train mode) over every kept iteration of every round."),
    ("round", "one worker process timing a model; rounds are interleaved across models "
     "(A B C A B C ...) so that drift over time hits every model alike."),
    ("95% CI", "of a median latency: Student's t on the logarithms of the round medians, so "
     "the replicate is the worker process, not the iteration; it covers where this run's "
     "processes put the median, not the drift between runs (a history of runs shows that). Of "
     "a ratio of two latencies of one run: paired t over their interleaved rounds (the drift "
     "they share cancels); of two runs: Welch's t. Of an accuracy: t over seeds; with one seed, "
     "the test set's binomial (Wilson) interval, which holds no training noise."),
    ("resolves", "the smallest change a comparison in this run can call at a mode and batch: "
     "the half-width of a typical ratio interval there, from the noise of every model the run "
     "measured; beside it the change called 80% of the time. Nothing smaller is called."),
    ("not resolved", "a difference whose 95% interval includes no change, or that is smaller "
     "than what the run resolves: no verdict. Records without kept samples fall back to the "
     "IQR rule (a change larger than the larger IQR/median), labelled."),
    ("noise control", "googlenet_ls is googlenet (only its training loss differs): their "
     "latency ratio must be not resolved, and its interval narrow enough to have seen the change "
     "the run says it detects; where it is not, nothing smaller than its interval is called."),
    ("images/s", "batch size / median latency."),
    ("IQR", "interquartile range of the iteration times (p75 - p25)."),
    ("pp", "percentage points: the difference of two accuracies (0.472 -> 0.519 is +4.7 pp)."),
    ("± std", "the sample standard deviation (n - 1) of test accuracy over seeds; — with one "
     "seed, where no spread can be estimated."),
    ("MiB, KiB", "2^20 and 2^10 bytes. GB/s and GFLOP/s are decimal (10^9)."),
    ("peak memory", "CUDA: the allocator's peak; CPU: the peak anonymous RSS of a fresh "
     "worker above its baseline."),
    ("saved for backward (train)", "the analytic memory of the tensors autograd keeps for the "
     "backward pass of one step (memory table, train rows)."),
    ("largest layer in+out (inference)", "the analytic memory of the largest single layer's "
     "input plus output (memory table, inference rows): what an inference pass must hold at once."),
    ("forward outputs per image", "the sum of every counted layer's output of one forward pass "
     "(fp32), per image (exercise 5): what the pass writes."),
    ("bytes moved", "per image: each layer reads its input and writes its output once and reads "
     "its weights once per batch (exercise 5)."),
    ("arithmetic intensity", "FLOPs per byte moved."),
    ("working set", "one layer's input + output + weights."),
    ("roof, ridge", "attainable FLOP/s = min(peak FLOP/s, bandwidth x intensity); the ridge is "
     "the intensity where the two meet. The measured roof comes from probes on the device; a "
     "data-sheet roof from the vendor's figures or, on CPU, cores x FMA units x lanes x 2 x clock."),
    ("MFU", "model FLOPs utilization: the forward pass's achieved FLOP/s over the measured peak. "
     "Above 100% it is not a utilization but a peak probe that underestimates the machine: shown "
     f"as '{ABOVE_ROOF}'."),
    ("step optimizer", "the optimizer of the timed/measured training step, beside the accuracy "
     "run's, so that a step's cost and an accuracy can be seen to describe the same training."),
]


def glossary_table() -> pd.DataFrame:
    return pd.DataFrame([{"term": t, "meaning": m} for t, m in GLOSSARY])
