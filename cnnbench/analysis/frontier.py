"""The accuracy–speed frontier (Bianco et al. 2018, accuracy against inference time), made
noise-aware: per device and batch, the models that no other model beats on both axes.

B *beats* A only when B is faster beyond noise (``noise.latency_change``, the run's floor at that
batch, paired where the run interleaved its rounds) *and* more accurate beyond noise
(``noise.accuracy_change``: Welch over ``MIN_SEEDS`` finished seeds a side). Where either axis is
not resolved the dominance is ``NOT_RESOLVED`` and A stays on the frontier: a frontier drawn from
point estimates would drop models that the noise cannot tell apart. With both axes resolved and
one in A's favour, B does not beat A (``NOT_BEATEN``).

Like with like: a model's accuracy is of the network as trained (``spec.image_size``, its recipe:
optimizer, learning rate, epochs, images), and its latency is the fp32, eager, contiguous
inference record at the size it was trained at where the run has one, else at the model's own
input size (``Frames.sizes``); each point keeps both sizes so a reader sees what was paired.
Models trained under different recipes are still compared; each point keeps its recipe.

Latency budgets (Bianco's real-time view, batch 1): latency per image = p50 / batch, and a model
is within a budget only when its 95% interval's upper end is below it, over it when the lower end
is above it, and ``NOT_RESOLVED`` when the interval straddles it or there is none (one round).
The answer is the most accurate model within, with every model within whose accuracy the best
does not beat beyond noise (tied).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .. import stats
from ..results import Record
from .frames import Frames, finished_seeds, ok_records, result_of
from .noise import MIN_SEEDS, AccuracyChange, Change, accuracy_change, latency_change

__all__ = [
    "BEATS",
    "BUDGETS_MS",
    "NOT_BEATEN",
    "NO_ACCURACY",
    "NO_LATENCY",
    "OVER",
    "SEEDS",
    "TEST_SET",
    "WITHIN",
    "Budget",
    "Dominance",
    "Frontier",
    "FrontierAt",
    "Point",
    "Recipe",
    "budget_verdict",
    "dominance_verdict",
    "frontier",
]

BEATS, NOT_BEATEN = "beats", "does not beat"  # and stats.NOT_RESOLVED
WITHIN, OVER = "within", "over"  # and stats.NOT_RESOLVED
BUDGETS_MS = (1.0, 10.0, 100.0)  # ms per image at batch 1: Bianco et al.'s real-time view
SEEDS, TEST_SET = "seeds", "test set"  # what an accuracy interval covers
# why a model with records is not on any frontier
NO_ACCURACY, NO_LATENCY = "no finished seed", "no fp32 eager inference latency"


@dataclass(frozen=True)
class Recipe:
    """How a model's accuracy was trained (``TrainResult`` fields): compare, never merge."""

    recipe: str  # "d2l" when every field is the chapter's, else "modified"
    optimizer: str
    lr: float
    momentum: float
    epochs: int
    train_images: int  # images per epoch


@dataclass(frozen=True)
class Point:
    """One model at one (device, batch): its accuracy as trained and its inference latency."""

    model: str
    accuracy_status: str  # the accuracy record's status ("ok", "diverged": finished seeds only)
    trained_px: int  # the size the accuracy was trained at
    recipe: Recipe
    accuracy: float  # mean test accuracy over the finished seeds (fraction)
    accuracy_low: float | None  # 95%: over seeds (>= 2), else the test set's binomial interval
    accuracy_high: float | None
    accuracy_interval: str  # SEEDS or TEST_SET: what the interval covers
    seeds: int  # finished seeds
    latency_px: int  # the size the latency was measured at
    latency_ms_per_image: float  # p50 / batch
    latency_low_ms_per_image: float | None  # 95% interval between the run's processes, / batch
    latency_high_ms_per_image: float | None
    rounds: int  # worker processes behind the latency
    beaten_by: tuple[str, ...] = ()  # models that beat it beyond noise on both axes
    unresolved_by: tuple[str, ...] = ()  # better on both point estimates, not resolved

    @property
    def on_frontier(self) -> bool:
        return not self.beaten_by

    @property
    def latency_at_trained_size(self) -> bool:
        return self.latency_px == self.trained_px


@dataclass(frozen=True)
class Dominance:
    """Does ``challenger`` (B) beat ``model`` (A)? Both axes as B against A."""

    model: str
    challenger: str
    latency: Change  # B / A latency ratio; verdict "faster": B is faster beyond noise
    accuracy: AccuracyChange | None  # B − A; verdict "higher": B more accurate beyond noise
    verdict: str  # BEATS, NOT_BEATEN or stats.NOT_RESOLVED

    @property
    def better_on_estimates(self) -> bool:
        """B is faster and more accurate on the point estimates alone."""
        return self.latency.ratio < 1 and self.accuracy is not None and self.accuracy.difference > 0


@dataclass(frozen=True)
class Budget:
    """The most accurate model within one latency budget (ms per image, batch 1)."""

    budget_ms_per_image: float
    best: tuple[str, ...]  # the most accurate within, and those it does not beat beyond noise
    within: tuple[str, ...]  # interval's upper end below the budget
    straddling: tuple[str, ...]  # interval straddles it, or no interval: NOT_RESOLVED
    over: tuple[str, ...]  # interval's lower end above it


@dataclass(frozen=True)
class FrontierAt:
    """The frontier at one device and batch."""

    device: str
    batch: int
    points: tuple[Point, ...]
    dominance: tuple[Dominance, ...]  # every ordered pair (A, B), B != A
    floor: float  # the smallest latency change the run resolves here (Frames.floor)
    paired: bool  # latency ratios paired round by round
    budgets: tuple[Budget, ...] = ()  # batch 1 only

    @property
    def frontier(self) -> tuple[Point, ...]:
        """The points no model beats, fastest first."""
        return tuple(sorted((p for p in self.points if p.on_frontier),
                            key=lambda p: p.latency_ms_per_image))  # fmt: skip

    @property
    def resolved(self) -> int:
        """Dominances resolved either way (BEATS or NOT_BEATEN)."""
        return sum(d.verdict != stats.NOT_RESOLVED for d in self.dominance)

    def point(self, model: str) -> Point | None:
        return next((p for p in self.points if p.model == model), None)


@dataclass(frozen=True)
class Frontier:
    groups: tuple[FrontierAt, ...]
    left_out: tuple[tuple[str, str], ...] = ()  # (model, NO_ACCURACY or NO_LATENCY)
    min_seeds: int = MIN_SEEDS

    @property
    def fewest_seeds(self) -> int | None:
        seeds = [p.seeds for g in self.groups for p in g.points]
        return min(seeds) if seeds else None


def dominance_verdict(latency: Change, accuracy: AccuracyChange | None, *,
                      like_with_like: bool = True) -> str:  # fmt: skip
    """B against A: NOT_BEATEN as soon as one axis is resolved against B (slower, or less
    accurate, beyond noise: the other axis cannot change that); else NOT_RESOLVED when either
    axis is not resolved (A stays on the frontier), BEATS when both are resolved for B.
    ``like_with_like``: both latencies are of the networks as trained (at their trained sizes);
    a latency at another size is not the trained network's and beats nothing."""
    if latency.verdict == "slower" or (accuracy is not None and accuracy.verdict == "lower"):
        return NOT_BEATEN
    if not like_with_like or accuracy is None or not latency.significant or not accuracy.significant:
        return stats.NOT_RESOLVED
    return BEATS


def budget_verdict(low: float | None, high: float | None, budget: float) -> str:
    """WITHIN when the interval's upper end is below ``budget``, OVER when its lower end is above,
    else NOT_RESOLVED (straddling, or no interval)."""
    if low is None or high is None:
        return stats.NOT_RESOLVED
    if high < budget:
        return WITHIN
    return OVER if low > budget else stats.NOT_RESOLVED


# --- which records pair -------------------------------------------------------------------------


def _accuracy_record(frames: Frames, model: str) -> Record | None:
    """The model's first accuracy record with a finished seed (ok or diverged keep them)."""
    for r in frames.mine(model):
        if r.metric == "accuracy" and (res := result_of(r)) is not None and finished_seeds(res):
            return r
    return None


def _baseline_latencies(frames: Frames, model: str) -> list[Record]:
    """fp32, eager, contiguous inference latencies of ``model``: what a reader deploys first."""
    return [r for r in ok_records(frames.mine(model), "latency", mode="inference", dtype="fp32",
                                  channels_last=False, compiled=False)
            if not r.spec.cuda_graph and r.spec.cast is None]  # fmt: skip


def _latency_at(frames: Frames, model: str, trained_px: int, device: str, batch: int) -> Record | None:
    """The baseline latency at (device, batch): at the trained size where there is one, else at
    the model's own size."""
    mine = [r for r in _baseline_latencies(frames, model)
            if r.spec.device == device and r.spec.batch_size == batch]  # fmt: skip
    for size in (trained_px, frames.sizes.get(model)):
        found = next((r for r in mine if r.spec.image_size == size), None)
        if found is not None:
            return found
    return None


def _recipe(res) -> Recipe:
    return Recipe(res.recipe, res.optimizer, res.lr, res.momentum, res.epochs, res.train_images)


def _accuracy_interval(res) -> tuple[float, float | None, float | None, str]:
    """(mean, low, high, what the interval covers): over seeds where two or more finished, else
    the test set's own binomial interval (no training noise in it)."""
    finals = [run.final_test_accuracy for run in res.runs if run.final_test_accuracy is not None]
    mean = sum(finals) / len(finals)
    over_seeds = stats.mean_interval(finals)
    if over_seeds is not None:
        return mean, over_seeds.low, over_seeds.high, SEEDS
    if res.test_images:
        test = stats.binomial_interval(mean, res.test_images)
        return mean, test.low, test.high, TEST_SET
    return mean, None, None, TEST_SET


def _point(model: str, acc: Record, lat: Record) -> Point:
    res, lr = acc.result, lat.result
    batch = lat.spec.batch_size
    mean, a_low, a_high, scope = _accuracy_interval(res)
    l_low, l_high = stats.recorded_or_median_interval(lr.latency_ms_p50_ci_low, lr.latency_ms_p50_ci_high,
                                                      lr.times_ms, lr.round_sizes)  # fmt: skip
    per = lambda v: None if v is None else v / batch  # noqa: E731
    return Point(
        model=model, accuracy_status=acc.status, trained_px=acc.spec.image_size,
        recipe=_recipe(res), accuracy=mean, accuracy_low=a_low, accuracy_high=a_high,
        accuracy_interval=scope, seeds=finished_seeds(res), latency_px=lat.spec.image_size,
        latency_ms_per_image=lr.latency_ms_p50 / batch, latency_low_ms_per_image=per(l_low),
        latency_high_ms_per_image=per(l_high), rounds=lr.rounds,
    )  # fmt: skip


# --- the frontier -------------------------------------------------------------------------------


def _dominances(frames: Frames, pairs: dict[str, tuple[Record, Record]], batch: int) -> list[Dominance]:
    floor = frames.floor("inference", batch)
    found = []
    for a, (acc_a, lat_a) in pairs.items():
        for b, (acc_b, lat_b) in pairs.items():
            if a == b:
                continue
            lat = latency_change(lat_a.result, lat_b.result, paired=frames.paired, floor=floor)
            acc = accuracy_change(acc_a.result, acc_b.result)
            alike = all(lt.spec.image_size == ac.spec.image_size
                        for ac, lt in ((acc_a, lat_a), (acc_b, lat_b)))  # fmt: skip
            found.append(Dominance(a, b, lat, acc, dominance_verdict(lat, acc, like_with_like=alike)))
    return found


def _with_verdicts(point: Point, dominance: list[Dominance]) -> Point:
    mine = [d for d in dominance if d.model == point.model]
    beaten = tuple(d.challenger for d in mine if d.verdict == BEATS)
    unresolved = tuple(d.challenger for d in mine
                       if d.verdict == stats.NOT_RESOLVED and d.better_on_estimates)  # fmt: skip
    return dataclasses.replace(point, beaten_by=beaten, unresolved_by=unresolved)


def _budget(points: tuple[Point, ...], accuracy: dict[str, Record], budget: float) -> Budget:
    by = {stats.NOT_RESOLVED: [], WITHIN: [], OVER: []}
    for p in points:
        by[budget_verdict(p.latency_low_ms_per_image, p.latency_high_ms_per_image, budget)].append(p)
    within = sorted(by[WITHIN], key=lambda p: -p.accuracy)
    best: tuple[str, ...] = ()
    if within:
        top = within[0]
        # tied: every model within that the most accurate does not beat on accuracy beyond noise
        best = tuple(p.model for p in within if p is top or
                     (c := accuracy_change(accuracy[p.model].result, accuracy[top.model].result))
                     is None or c.verdict != "higher")  # fmt: skip
    names = lambda ps: tuple(p.model for p in ps)  # noqa: E731
    return Budget(budget, best, names(within), names(by[stats.NOT_RESOLVED]), names(by[OVER]))


def _group(frames: Frames, accuracy: dict[str, Record], device: str, batch: int) -> FrontierAt | None:
    pairs = {}
    for model, acc in accuracy.items():
        lat = _latency_at(frames, model, acc.spec.image_size, device, batch)
        if lat is not None:
            pairs[model] = (acc, lat)
    if not pairs:
        return None
    dominance = _dominances(frames, pairs, batch)
    points = tuple(_with_verdicts(_point(m, acc, lat), dominance) for m, (acc, lat) in pairs.items())
    budgets = tuple(_budget(points, accuracy, b) for b in BUDGETS_MS) if batch == 1 else ()
    return FrontierAt(device, batch, points, tuple(dominance), frames.floor("inference", batch),
                      frames.paired, budgets)  # fmt: skip


def frontier(frames: Frames) -> Frontier:
    """The noise-aware accuracy–latency frontier at every (device, batch) the run measured a
    baseline inference latency at, over the models with a finished seed of accuracy."""
    accuracy, left_out = {}, []
    for model in frames.models:
        acc = _accuracy_record(frames, model)
        if acc is None:
            if any(r.metric == "accuracy" for r in frames.mine(model)):
                left_out.append((model, NO_ACCURACY))
            continue
        if not _baseline_latencies(frames, model):
            left_out.append((model, NO_LATENCY))
            continue
        accuracy[model] = acc
    keys = sorted({(r.spec.device, r.spec.batch_size) for m in accuracy
                   for r in _baseline_latencies(frames, m)})  # fmt: skip
    groups = [g for device, batch in keys if (g := _group(frames, accuracy, device, batch))]
    return Frontier(tuple(groups), tuple(left_out))
