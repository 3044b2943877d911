"""The accuracy–speed frontier in words (the finding: ``analysis.frontier``): per device and
batch, which models no other model beats on both accuracy and latency beyond noise, and the most
accurate model within 1, 10 and 100 ms per image (Bianco et al.'s real-time view)."""

from __future__ import annotations

from ...analysis.frames import Frames
from ...analysis.frontier import SEEDS, Budget, Frontier, FrontierAt, Point, Recipe
from ...analysis.frontier import frontier as find_frontier
from .. import verdicts
from ..fmt import MISSING, fmt, points
from .common import Section

__all__ = ["frontier", "section"]

_TITLE = "The accuracy–speed frontier (Bianco et al.), noise-aware"


def _intro(min_seeds: int) -> str:
    return (
        "Accuracy against inference time, as Bianco et al. (2018) chart it, but judged with "
        "noise. Model B beats model A only when B is both faster beyond noise (the 95% interval "
        "of the latency ratio over the run's rounds excludes 1 and the change is at least what "
        "the run resolves) and more accurate beyond noise (Welch's 95% interval over the seeds, "
        f"which needs {min_seeds} finished seeds a side). Where either is not resolved, A stays on "
        "the frontier. Each accuracy is of the network as trained (its size and recipe in the "
        "table); its latency is the fp32, eager, contiguous inference latency at the size it was "
        "trained at where the run measured one, else at the model's own input size — the table "
        "says which. Latency per image = median latency / batch."
    )


def frontier(frames: Frames) -> Section:
    """The frontier section, from the ``analysis.frontier`` finding."""
    return section(find_frontier(frames))


def section(finding: Frontier) -> Section:
    out = Section(_TITLE, _intro(finding.min_seeds), figure="frontier")
    if not finding.groups:
        out.sentences.append("No model in these runs has both a finished seed of accuracy and an "
                             "fp32 eager inference latency: there is no frontier to draw.")  # fmt: skip
        out.summary = "No model has both an accuracy and an inference latency: no frontier."
        return out
    for group in finding.groups:
        out.add_table(_caption(group), [_row(p) for p in _ordered(group)])
    for group in finding.groups:
        if group.budgets:
            out.add_table(f"The most accurate model within a latency budget ({group.device}, batch 1)",
                          [_budget_row(b) for b in group.budgets])  # fmt: skip
    out.sentences += _notes(finding)
    first = _headline_group(finding)
    out.answer = " ".join(filter(None, (_frontier_sentence(finding, first), _budget_sentence(first))))
    out.summary = _summary(finding, first)
    if _unresolvable(finding):
        out.warning = _seed_warning(finding)
    return out


def _caption(group: FrontierAt) -> str:
    return (f"Frontier at {group.device}, batch {group.batch}: {len(group.frontier)} of "
            f"{len(group.points)} models on it (fastest first)")  # fmt: skip


def _ordered(group: FrontierAt) -> list[Point]:
    return sorted(group.points, key=lambda p: p.latency_ms_per_image)


def _interval(low, high, digits: int) -> str:
    return "" if low is None or high is None else f" ({fmt(low, digits)}–{fmt(high, digits)})"


def _accuracy_cell(p: Point) -> str:
    seeds = f"{p.seeds} seed{'s' if p.seeds != 1 else ''}"
    where = "" if p.accuracy_interval == SEEDS else "test set only, "
    status = "" if p.accuracy_status == "ok" else f", {p.accuracy_status}"
    iv = ("" if p.accuracy_low is None or p.accuracy_high is None
          else f"{fmt(p.accuracy_low)}–{fmt(p.accuracy_high)}, ")  # fmt: skip
    return f"{fmt(p.accuracy)} ({iv}{where}{seeds}{status})"


def _recipe_cell(r: Recipe) -> str:
    momentum = f" momentum {r.momentum:g}" if r.momentum else ""
    epochs = f"{r.epochs} epoch{'s' if r.epochs != 1 else ''}"
    return f"{r.optimizer} {r.lr:g}{momentum}, {epochs} × {r.train_images:,} images ({r.recipe})"


def _latency_cell(p: Point) -> str:
    iv = _interval(p.latency_low_ms_per_image, p.latency_high_ms_per_image, 2)
    rounds = "" if iv else f" (no interval: {p.rounds} round{'s' if p.rounds != 1 else ''})"
    return f"{fmt(p.latency_ms_per_image, 2)}{iv}{rounds}"


def _latency_at_cell(p: Point) -> str:
    if p.latency_at_trained_size:
        return f"{p.latency_px} px (as trained)"
    return f"{p.latency_px} px (own size; none at the trained {p.trained_px} px)"


def _row(p: Point) -> dict:
    return {
        "model": p.model,
        "frontier": "on" if p.on_frontier else f"off: beaten by {', '.join(p.beaten_by)}",
        "test accuracy (95% CI)": _accuracy_cell(p),
        "trained at": f"{p.trained_px} px",
        "recipe": _recipe_cell(p.recipe),
        "latency ms/image (95% CI)": _latency_cell(p),
        "latency at": _latency_at_cell(p),
        "better on both estimates, not resolved": ", ".join(p.unresolved_by) or MISSING,
    }


def _budget_answer(b: Budget, *, names: int = 99) -> str:
    """The most accurate within (highest estimate first), or the tie; ``names`` caps the list."""
    if not b.best:
        return "none within"
    if len(b.best) == 1:
        return b.best[0]
    rest = len(b.best) - names
    shown = ", ".join(b.best[:names]) + (f" and {rest} more" if rest > 0 else "")
    return f"tied: {shown}"


def _budget_row(b: Budget) -> dict:
    return {
        "budget": f"≤ {b.budget_ms_per_image:g} ms/image",
        "most accurate within": _budget_answer(b),
        "within (95% CI below the budget)": ", ".join(b.within) or MISSING,
        "not resolved (CI straddles it or none)": ", ".join(b.straddling) or MISSING,
        "over (95% CI above it)": ", ".join(b.over) or MISSING,
    }


def _headline_group(finding: Frontier) -> FrontierAt:
    """Batch 1 of the first device where there is one: the deployment question."""
    return next((g for g in finding.groups if g.batch == 1), finding.groups[0])


def _few_seeds(finding: Frontier) -> list[str]:
    """The models with fewer seeds than an accuracy call needs: none of them beats or is beaten."""
    return sorted({p.model for g in finding.groups for p in g.points if p.seeds < finding.min_seeds})


def _unresolvable(finding: Frontier) -> bool:
    """Every model has fewer seeds than an accuracy call needs: no model can be beaten."""
    points = {p.model for g in finding.groups for p in g.points}
    return bool(points) and len(_few_seeds(finding)) == len(points)


def _seed_warning(finding: Frontier) -> str:
    few = [p for g in finding.groups for p in g.points if p.seeds < finding.min_seeds]
    names = sorted({p.model for p in few})
    if all(p.seeds == 1 for p in few):
        what = "one seed each, so the seed-to-seed noise of their accuracy is not measured"
    else:
        what = f"as few as {finding.fewest_seeds} seeds"
    return (f"{len(names)} model{'s' if len(names) != 1 else ''} ({', '.join(names)}) trained with "
            f"{what}: an accuracy difference is called only from {finding.min_seeds} seeds a side, "
            "so none of them can beat or be beaten by another model, and each stays on the "
            "frontier whatever its point estimates say. Rerun with --seeds "
            f"{','.join(map(str, range(finding.min_seeds)))} (or more) for a frontier that ranks them.")  # fmt: skip


def _beat_clause(group: FrontierAt, p: Point) -> str:
    d = next(d for d in group.dominance if d.model == p.model and d.challenger == p.beaten_by[0])
    return (f"{p.model} is beaten by {d.challenger} (latency {verdicts.text(d.latency)}; accuracy "
            f"{points(d.accuracy.difference)}, {verdicts.short(d.accuracy)})")  # fmt: skip


def _frontier_sentence(finding: Frontier, group: FrontierAt) -> str:
    on = ", ".join(p.model for p in group.frontier)
    head = (f"At {group.device}, batch {group.batch}, {len(group.frontier)} of {len(group.points)} "
            f"models are on the frontier (fastest first: {on}).")  # fmt: skip
    off = [p for p in _ordered(group) if not p.on_frontier]
    if off:
        return head + " " + "; ".join(_beat_clause(group, p) for p in off[:3]) + "."
    estimates = [p.model for p in group.points if p.unresolved_by]
    if not estimates:
        return head + " No model is faster and more accurate than another even on point estimates."
    few = _few_seeds(finding)
    if _unresolvable(finding):
        why = "each accuracy comes from too few seeds to call a difference"
    elif few:
        why = (f"{', '.join(few)} trained too few seeds to call a difference, and between the "
               "others the intervals overlap on at least one axis or the latency is not at the "
               "trained size")  # fmt: skip
    else:
        why = "the intervals overlap on at least one axis, or a latency is not at the trained size"
    return (head + f" On point estimates alone {len(estimates)} would be off it "
            f"({', '.join(estimates)}), but none is beaten beyond noise: {why}.")  # fmt: skip


def _budget_clause(group: FrontierAt, b: Budget) -> str:
    where = f"within {b.budget_ms_per_image:g} ms per image"
    if not b.best:
        straddle = f" ({', '.join(b.straddling)} straddle it)" if b.straddling else ""
        return f"{where} no model is resolved within the budget{straddle}"
    top = group.point(b.best[0])
    if len(b.best) == 1 and len(b.within) == 1:
        text = f"{where} only {top.model} is resolved within the budget ({top.accuracy:.3f})"
    elif len(b.best) == 1:
        text = f"{where} the most accurate is {top.model} ({top.accuracy:.3f}, beyond noise)"
    else:
        text = (f"{where} {top.model} has the highest estimate ({top.accuracy:.3f}), but its lead "
                f"over {len(b.best) - 1} other model{'s' if len(b.best) > 2 else ''} within is not "
                "resolved (tied)")  # fmt: skip
    better = [m for m in b.straddling if group.point(m).accuracy > top.accuracy]
    if better:  # a more accurate model may or may not fit: the answer hangs on it
        text += f"; {', '.join(better)}, more accurate on its estimate, straddles the budget"
    return text


def _budget_sentence(group: FrontierAt) -> str:
    parts = [_budget_clause(group, b) for b in group.budgets]
    return ("At batch 1, " + "; ".join(parts) + ".") if parts else ""


def _summary(finding: Frontier, group: FrontierAt) -> str:
    text = (f"{len(group.frontier)} of {len(group.points)} models on the frontier at "
            f"{group.device} batch {group.batch}")  # fmt: skip
    if _unresolvable(finding):
        text += f" (none can be beaten: accuracy from {finding.fewest_seeds} seed(s), a call needs {finding.min_seeds})"  # fmt: skip
    best = [b for b in group.budgets if b.best]
    if best:
        text += "; within " + ", ".join(f"{b.budget_ms_per_image:g} ms: {_budget_answer(b, names=2)}" for b in best)
    return text + "."


def _notes(finding: Frontier) -> list[str]:
    """Like with like: mixed recipes, latencies at another size, models left out."""
    notes = []
    points = [p for g in finding.groups for p in g.points]
    recipes = {p.recipe for p in points}
    if len(recipes) > 1:
        notes.append(f"The accuracies come from {len(recipes)} different training recipes: they are "
                     "compared as measured, and the table shows each model's recipe.")  # fmt: skip
    moved = sorted({p.model for p in points if not p.latency_at_trained_size})
    if moved:
        notes.append(f"{', '.join(moved)}: no inference latency at the size trained at, so the "
                     "latency is at the model's own input size ('latency at' says which); that is "
                     "not the trained network's latency, so such a model neither beats another "
                     "nor is beaten here (not resolved). A run that times the trained size "
                     "(--metrics tricks does) judges it.")  # fmt: skip
    if finding.left_out:
        notes.append("Not on the frontier for want of a number: "
                     + "; ".join(f"{m} ({why})" for m, why in finding.left_out) + ".")  # fmt: skip
    floors = [_floor_text(g) for g in finding.groups if g.floor > 0]
    if floors:
        how = "paired round by round" if finding.groups[0].paired else "unpaired"
        notes.append(f"Smallest latency change called ({how}): {'; '.join(floors)}.")
    return notes


def _floor_text(group: FrontierAt) -> str:
    where = f"{group.device} batch {group.batch}"
    if group.floor == float("inf"):  # the noise control held no interval there
        return f"{where}: none (the noise control has no interval)"
    return f"{where}: {100 * group.floor:.1f}%"


