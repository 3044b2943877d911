"""Time to accuracy, MLPerf-style, in words (the finding: ``analysis.time_to_accuracy``)."""

from __future__ import annotations

from ...analysis import time_to_accuracy as tta
from ...analysis.frames import Frames
from ..fmt import MISSING, fmt
from .common import Section

__all__ = ["section", "time_to_accuracy"]

_TITLE = "Time to accuracy, MLPerf-style"
_INTRO = (
    "Each seed is one run. Its clock is MLPerf Training's run_start→run_stop: from the start of "
    "epoch 1's training pass to the end of the evaluation that first reaches the target test "
    "accuracy. It includes every training pass (data preparation inside: the loader resizes, "
    "normalizes and shuffles on the device in the loop) and every evaluation up to and including "
    "the one that reached the target. It excludes the untimed warm-up before epoch 1 (one step "
    "per batch shape: cuDNN autotuning and torch.compile's compilation, MLPerf's untimed "
    "initialization) and reading the data set from disk. The score is MLPerf's olympic mean: with "
    f"at least {tta.MIN_RUNS} runs, the fastest and the slowest are dropped and the rest averaged; "
    "a run that never reaches the target counts as the slowest, and two such runs make the "
    "result invalid. 'training only' is the older clock: the training passes alone."
)
_VERDICT_WORDS = {
    tta.SCORED: "scored",
    tta.INVALID: "invalid: two or more runs never reached the target",
    tta.TOO_FEW_RUNS: f"not scored: fewer than {tta.MIN_RUNS} runs",
    tta.NO_CLOCK: "not scored: records written before the MLPerf clock",
}
_ROLE_WORDS = {"kept": "averaged", "fastest": "dropped (fastest)", "slowest": "dropped (slowest)"}


def time_to_accuracy(frames: Frames) -> Section:
    """Every accuracy record that set a target: its runs, MLPerf score and flags."""
    return section(tta.time_to_accuracy(frames))


def section(findings: tuple[tta.TimeToAccuracy, ...]) -> Section:
    section = Section(_TITLE, _INTRO)
    targeted = [f for f in findings if f.verdict not in (tta.NO_TARGET, tta.NOT_MEASURED)]
    if not targeted:
        section.sentences.append(_nothing(findings))
        section.summary = "No time to accuracy in these runs: " + _nothing(findings)
        return section
    section.add_table("MLPerf score per model and spec", [_score_row(f) for f in targeted])
    section.add_table("Each run (seed) to the target",
                      [row for f in targeted for row in _run_rows(f)])  # fmt: skip
    for f in targeted:
        section.sentences += [s for s in (_score_sentence(f), _fast_sentence(f)) if s]
    section.sentences += [f"{_spec(f)}: not measured ({f.reason})." for f in findings
                          if f.verdict == tta.NOT_MEASURED]  # fmt: skip
    section.sentences.append(_meaning(targeted))
    section.answer = " ".join(_score_sentence(f) for f in targeted)
    section.summary = "; ".join(_short(f) for f in targeted) + "."
    section.warning = " ".join(filter(None, (_fast_sentence(f) for f in targeted)))
    return section


def _nothing(findings) -> str:
    unmeasured = [f for f in findings if f.verdict == tta.NOT_MEASURED]
    if not findings:
        return "No accuracy records in these runs."
    if unmeasured and len(unmeasured) == len(findings):
        why = "; ".join(f"{f.model}: {f.reason}" for f in unmeasured)
        return f"No accuracy record holds values ({why})."
    return "No run set a target accuracy (--target-accuracy)."


def _spec(f: tta.TimeToAccuracy) -> str:
    s = f.spec
    return f"{f.model} @{s.image_size} ({s.device}, {s.dtype}, batch {s.batch_size})"


def _seeds(runs) -> str:
    seeds = [str(r.seed) for r in runs]
    return seeds[0] if len(seeds) == 1 else ", ".join(seeds[:-1]) + " and " + seeds[-1]


def _score_row(f: tta.TimeToAccuracy) -> dict:
    o = f.score
    iv = o.interval if o else None
    return {
        "model": f.model, "input": f.spec.image_size, "device": f.spec.device, "dtype": f.spec.dtype,
        "target": fmt(f.target_accuracy), "epochs": f.epochs, "runs": len(f.runs),
        "reached": sum(r.reached for r in f.runs),
        "score s": fmt(o.score_s, 1) if o else MISSING,
        "kept min–max s": f"{fmt(o.kept_min_s, 1)}–{fmt(o.kept_max_s, 1)}" if o and o.kept else MISSING,
        "95% interval s": f"{fmt(iv.low, 1)}–{fmt(iv.high, 1)}" if iv and iv.known else MISSING,
        "verdict": _VERDICT_WORDS[f.verdict] + (", fast run flagged" if f.fast_seeds else ""),
    }  # fmt: skip


def _run_rows(f: tta.TimeToAccuracy) -> list[dict]:
    rows = []
    for r in f.runs:
        best = fmt(r.best_test_accuracy)
        missed = f"not reached (best {best}{', diverged' if r.diverged else ''})"
        rows.append({
            "model": f.model, "input": f.spec.image_size, "seed": r.seed,
            "epochs to target": r.epochs_to_target if r.reached else missed,
            "MLPerf clock s": fmt(r.mlperf_s, 2) if r.reached else "not reached",
            "training only s": fmt(r.train_s, 2) if r.reached else "not reached",
            "in the score": _ROLE_WORDS.get(r.role, MISSING),
            "flag": "converged much faster than the others" if r.fast else "",
        })  # fmt: skip
    return rows


def _score_sentence(f: tta.TimeToAccuracy) -> str:
    o, head = f.score, f"{_spec(f)}, target {f.target_accuracy:.3f} in at most {f.epochs} epochs"
    missed = [r for r in f.runs if not r.reached]
    if f.verdict == tta.TOO_FEW_RUNS:
        n = len(f.runs)
        return (f"{head}: not scored — {n} run{'' if n == 1 else 's'}, and MLPerf's olympic mean "
                f"needs at least {tta.MIN_RUNS}.")  # fmt: skip
    if f.verdict == tta.NO_CLOCK:
        return f"{head}: not scored — these records predate the MLPerf clock (rerun to score)."
    if f.verdict == tta.INVALID:
        return (f"{head}: invalid — seeds {_seeds(missed)} never reached the target, and MLPerf "
                "voids a result with two or more such runs.")  # fmt: skip
    by_index = dict(enumerate(f.runs))
    kept = [by_index[i] for i in o.kept]
    fastest, slowest = by_index[o.fastest], by_index[o.slowest]
    slow_how = "never reached the target" if not slowest.reached else f"{slowest.mlperf_s:.1f} s"
    text = (f"{head}: scored {o.score_s:.1f} s, the mean of seeds {_seeds(kept)} after dropping "
            f"seed {fastest.seed} (fastest, {fastest.mlperf_s:.1f} s) and seed {slowest.seed} "
            f"(slowest, {slow_how}); the kept runs span {o.kept_min_s:.1f}–{o.kept_max_s:.1f} s")  # fmt: skip
    iv = o.interval
    if iv is not None and iv.known:
        text += (f", and the score's 95% interval is {iv.low:.1f}–{iv.high:.1f} s ({iv.scope}: "
                 "few runs, so wide)")  # fmt: skip
    return text + "."


def _fast_sentence(f: tta.TimeToAccuracy) -> str:
    fast = [r for r in f.runs if r.fast]
    if not fast:
        return ""
    epochs = ", ".join(f"seed {r.seed} at epoch {r.epochs_to_target}" for r in fast)
    return (f"{_spec(f)}: {epochs} reached the target more than one epoch sooner than the other "
            "runs' 95% prediction bound allows; MLPerf's reference convergence points would "
            "reject such a run. Its time stays in the runs above: look at it before trusting the "
            "score.")  # fmt: skip


def _meaning(targeted: list[tta.TimeToAccuracy]) -> str:
    """What a small target on a subset means, and what it does not."""
    f = min(targeted, key=lambda x: x.train_images or 0)
    step = f" (about {f.epoch_s_median:.1f} s here)" if f.epoch_s_median else ""
    return (
        f"What this measures: the time this machine takes to train {f.model} from scratch to "
        f"{f.target_accuracy:.3f} test accuracy on {f.test_images:,} test images, training on "
        f"{f.train_images:,} images per epoch with this run's recipe. It compares machines, "
        "settings (threads, channels_last, compile) or models only at the same target, subset, "
        "epochs and recipe. It is not an MLPerf result (MLPerf fixes the data set, the quality "
        "target, the reference hyperparameters and a full system), and a target reached on a "
        "subset says nothing about the accuracy the chapter's full recipe reaches. The clock "
        f"moves in whole epochs{step}: a run's clock stops at the end of the evaluation that crosses (its training goes on), so "
        "two runs that cross in the same epoch differ only by their epochs' speed."
    )


def _short(f: tta.TimeToAccuracy) -> str:
    if f.verdict == tta.SCORED:
        flag = ", a fast run flagged" if f.fast_seeds else ""
        return f"{f.model} reached {f.target_accuracy:.3f} in {f.score.score_s:.1f} s (MLPerf score{flag})"
    return f"{f.model} to {f.target_accuracy:.3f}: {_VERDICT_WORDS[f.verdict]}"
