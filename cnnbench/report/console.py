"""Everything ``cnnbench`` shows on a terminal: each command's rich table (built, then printed once
by the caller) and the progress display of ``cnnbench run``. Numbers go through ``fmt``, the
formatter of the Markdown and HTML reports, so a terminal and a report show the same text.
"""

from __future__ import annotations

import contextlib
import math

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..analysis.frames import Frames
from .fmt import MISSING, accuracy, fmt, percent, shape

__all__ = [
    "MACS_NOTE",
    "RunProgress",
    "calibration_table",
    "compare_table",
    "data_lines",
    "describe",
    "duration",
    "layers_table",
    "minsize_table",
    "models_table",
    "plan_lines",
    "plan_table",
    "progress_bar",
    "run_summary",
    "added_line",
    "trend_tables",
]

MACS_NOTE = "MACs by fvcore: one fused multiply-add counts once"


def models_table(rows: list[dict], wide: bool) -> Table:
    """``cnnbench list``: one row per model; the description only on a wide terminal."""
    table = Table(
        title="cnnbench models",
        caption=f"GMACs at the default input, batch 1 ({MACS_NOTE}). * default selection",
    )
    columns = ["model", "family", "d2l §", "input", "params", "GMACs"] + (
        ["description"] if wide else []
    )
    for col in columns:
        right = col in ("input", "params", "GMACs")
        table.add_column(col, justify="right" if right else "left", no_wrap=col != "description")
    for r in rows:
        cells = [
            r["name"] + (" *" if r["default"] else ""),
            r["family"],
            r["section"] or MISSING,
            shape(r["input_shape"]),
            fmt(r["params"]),
            fmt(r["gmacs"]),
        ]
        table.add_row(*cells, *([r["description"]] if wide else []))
    return table


def layers_table(summary, model: str, in_channels: int, size: int, depth: int) -> Table:
    """``cnnbench summary``: per block (depth 1) or layer (depth 2) shapes, params and MACs."""
    table = Table(
        title=f"{model} at {in_channels}x{size}x{size}, depth {depth}",
        caption=f"batch 1; {MACS_NOTE}; shapes exclude the batch dimension",
    )
    for col in ("layer", "type", "output", "params", "% params", "GMACs", "% MACs"):
        table.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for row in summary.rows:
        table.add_row(
            row.name,
            row.layer,
            shape(row.output_shape),
            fmt(row.params),
            percent(row.params_share, suffix=""),
            fmt(row.macs, 4, scale=1e9),
            percent(row.macs_share, suffix=""),
        )
    table.add_section()
    table.add_row(
        "total", "", "", fmt(summary.params_total), "100.0", fmt(summary.gmacs_total, 4), "100.0"
    )
    return table


def minsize_table(found) -> Table:
    """``cnnbench minsize``: each model's minimum input and the chain of layers behind it."""
    table = Table(
        title="Minimum square input (shape inference on the meta device)",
        caption="the chain: every layer that shrinks the map at the minimum size, up to the one "
        "that fails one pixel below it",
    )
    for col in ("model", "min", "fails below", "size chain at the minimum"):
        table.add_column(col, justify="right" if col == "min" else "left")
    for f in found:
        chain = "\n".join(f.reductions) or "— (padding keeps every map ≥ 1x1)"
        table.add_row(f.model, str(f.min_size), f.failing_layer or MISSING, chain)
    return table


def data_lines(found) -> list[str]:
    """``cnnbench data``: where Fashion-MNIST was found, each file verified, the class balance."""
    from ..data import IDX_FILES

    loc = found.location
    lines = [f"Fashion-MNIST found in {loc.root} ({loc.source})"]
    for key, path in loc.files.items():
        spec = IDX_FILES[key]
        lines.append(
            f"  {path.name:<28} {shape(spec.shape):>12}  ok: size, magic, SHA-256 {spec.sha256[:8]}"
        )
    counts = found.train_labels.bincount(minlength=10)
    low, high = int(counts.min()), int(counts.max())
    lines.append(f"train: {fmt(found.train_images.shape[0])} images, {fmt(low)}-{fmt(high)} per class")  # fmt: skip
    lines.append(f"test: {fmt(found.test_images.shape[0])} images")
    return lines


def compare_table(frame, run_a, run_b) -> Table:
    """``cnnbench compare``: the frame of ``report.compare.compare_runs``, changes outside the
    noise flagged, the rest marked not resolved."""
    from .compare import shown

    table = Table(title=f"A = {run_a}   B = {run_b}",
                  caption="! a change the two runs resolve: latency by Welch's 95% interval over "
                  "their round medians and at least what the runs resolve (IQR rule without "
                  "samples), accuracy over 3 or more seeds a side, a CPU RSS peak against the "
                  "identical pair's spread, counts exactly; anything else not resolved")  # fmt: skip
    for col in ("metric", "model", "mode", "batch", "value", "A", "B", "change", "noise", ""):
        table.add_column(
            col, justify="left" if col in ("metric", "model", "mode", "value", "noise", "") else "right"
        )
    for r in frame.to_dict("records"):
        verdict = r["verdict"] if r["verdict"] not in ("changed",) else ""
        mark = f"[red]! {verdict}[/]" if r["significant"] else escape(verdict)
        table.add_row(r["metric"], r["model"], r["mode"], str(r["batch"]), r["value"], shown(r["A"]),
                      shown(r["B"]), r["change_shown"], escape(str(r["noise_shown"])), mark)  # fmt: skip
    return table


def added_line(added) -> str:
    """What ``history add`` did with one run: "new run 3f2a…: 212 values added" or, for a run
    it had, "known run 3f2a…: 0 new, 4 updated, 208 unchanged"."""
    if not added.known:
        return f"new run {added.run_id}: {added.new} values added"
    removed = f", {added.removed} removed" if added.removed else ""
    return f"known run {added.run_id}: {added.new} new, {added.updated} updated, {added.unchanged} unchanged{removed}"


def trend_tables(table, width: int = 120) -> list[Table]:
    """``cnnbench history show``: the series table of ``report.trend.series_table``, one rich
    table per value, worse in red (!), better in green; below 100 columns without the interval
    (the report has it)."""
    from .trend import configuration, described

    tables = []
    for value, rows in table.groupby("value", sort=False):
        unit = rows["unit"].iloc[0]
        better = rows["better"].iloc[0]
        common = set.intersection(*(set(o.split(", ")) - {""} for o in rows["options"]))
        out = Table(title=f"{value}" + (f" ({described(unit, better)})" if unit else "")
                    + (f"; every row: {', '.join(sorted(common))}" if common else ""),
                    box=box.SIMPLE_HEAD, title_justify="left")  # fmt: skip
        out.add_column("configuration", overflow="fold", min_width=16, ratio=1)
        columns = ["machine", "runs", "latest", "95% interval", "earlier", "change", "verdict", "trend"]
        if width < 100:
            columns.remove("95% interval")
            columns.remove("earlier")
        for col in columns:
            folds = col == "verdict"  # "worse (2 earlier runs: drift ...)": folds, never truncated
            out.add_column(col, no_wrap=not folds, overflow="fold" if folds else "ellipsis",
                           min_width=12 if folds else None, ratio=1 if folds else None,
                           justify="right" if col in ("runs", "latest", "earlier", "change") else "left")  # fmt: skip
        for r in rows.to_dict("records"):
            verdict = escape(r["verdict"])
            if r["_worse"] and r["_judged"]:
                verdict = f"[red]! {verdict}[/]"
            elif r["_worse"]:
                verdict = f"[yellow]? {verdict}[/]"
            elif r["_called"]:
                verdict = f"[green]{verdict}[/]"

            rest = [o for o in r["options"].split(", ") if o and o not in common]
            config = configuration(r["model"], r["px"], r["batch"], r["dtype"], r["mode"], ", ".join(rest))
            if r["software"]:  # under the configuration, which folds: the verdict stays short
                config += f"\n  since the run before: {r['software']}"
            interval = r["95% interval"].replace(" – ", "–")
            cells = {"machine": r["machine"][:6], "runs": str(r["runs"]), "latest": escape(r["latest value"]),
                     "95% interval": escape(interval), "earlier": escape(r["earlier"]),
                     "change": r["change"], "verdict": verdict,
                     "trend": r["trend"]}  # fmt: skip
            out.add_row(escape(config), *(cells[c] for c in columns))
        tables.append(out)
    return tables


def _best(value, batch) -> str:
    return MISSING if value is None else escape(f"{fmt(value, 0)}[{batch}]")


def _mib(value) -> str:
    return MISSING if value is None else f"{value / 2**20:.0f}"  # no separator: the column is narrow


def _trained(row: dict) -> str:
    """'0.665@72': the accuracy and the side it was trained at."""
    acc = accuracy(row["test_accuracy_mean"], row["test_accuracy_std"], row["accuracy_status"],
                   sep="±")  # fmt: skip
    size = row["train_image_size"]
    return acc if size is None or acc == MISSING else f"{acc}@{size}"


def resolves_line(frames) -> str:
    """' Resolves (latency between two models, 95%): inference b1 7.9%, ...' ('' without
    latencies in rounds): what the run can call, per mode and batch."""
    keys = sorted(frames.noise.by_key, key=lambda k: (k[0] != "inference", k[1]))
    if not keys:
        return ""
    floors = {k: frames.floor(*k) for k in keys}
    parts = [f"{'infer' if m == 'inference' else m} b{b} "
             + (f"{100 * floors[m, b]:.0f}%" if math.isfinite(floors[m, b]) else "nothing") for m, b in keys]  # fmt: skip
    control = frames.control
    note = "" if control is None else " (noise control passed)" if control.passed else " (noise control failed: floor raised)"
    return f" Resolves (latency between two models, 95%): {', '.join(parts)}{note}; smaller: not resolved."


def run_summary(records, config) -> Table:
    """The table ``cnnbench run`` prints at the end: the overview of the saved records."""
    frames = Frames(records)
    frame = frames.overview
    threads = config.workload.threads
    dev = config.device + (f", {threads} threads" if threads else "")
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=0,  # the box's divider is the one space between columns: ten models fit 80
        title=f"cnnbench · {dev} · {config.workload.dtype} · profile {config.profile}",
        caption="GMACs: one fused multiply-add counts once. ms b1: median forward latency at "
        "batch 1. infer/s, train/s: images per second, batch / median latency, at the best "
        "batch \\[in brackets]. MiB i/t: inference / training memory at the largest memory "
        "batch, CUDA peak allocated or CPU peak RSS above the worker's baseline. ~ unstable "
        "(IQR > 10% of median), ! contended CPU, — not measured. acc: test accuracy after the "
        "profile's short training (± sample std over seeds, none with one seed) @ the side it was "
        "trained at (see env.json). px: the side latency and memory were measured at."
        + resolves_line(frames),
    )
    columns = ["model", "px", "params", "GMACs", "ms b1", "infer/s", "train/s", "MiB i/t"]
    with_accuracy = "accuracy" in config.metrics
    if with_accuracy:
        columns += ["acc @px"]
    for col in columns:
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    failures = any(frame["not_ok"]) if len(frame) else False
    if failures:
        table.add_column("not ok", justify="left", style="red")
    for row in frame.to_dict("records"):
        flags = row["latency_b1_flags"]
        mark = ("~" if "unstable" in flags else "") + ("!" if "contended" in flags else "")
        params = fmt(row["params"], 1, scale=1e6)
        table.add_row(
            row["model"],
            str(row["image_size"]),
            params + ("M" if row["params"] is not None else ""),
            fmt(row["gmacs"], 2),
            fmt(row["latency_ms_p50_b1"], 1) + mark,
            _best(row["infer_images_per_s_best"], row["infer_best_batch"]),
            _best(row["train_images_per_s_best"], row["train_best_batch"]),
            _mib(row["infer_memory_bytes"]) + "/" + _mib(row["train_memory_bytes"]),
            *([_trained(row)] if with_accuracy else []),
            *([row["not_ok"]] if failures else []),
        )  # fmt: skip
    return table


def describe(config) -> str:
    """What ``cnnbench run`` is about to do, printed before it starts (rich markup)."""
    over = ", ".join(f"{k}={config.option_value(k)}" for k in config.overrides) or "none"
    warning = ""
    if config.workload.dtype != "fp32" and config.device == "cpu":
        warning = (
            f"[yellow]warning:[/] {config.workload.dtype} autocast on CPU is slow on CPUs without "
            "native support (about 10x slower than fp32 on the reference machine)\n"
        )
    return warning + (
        f"models {', '.join(config.models)} · device {config.device} · profile {config.profile}"
        f" · metrics {', '.join(config.metrics)}\noverrides: {over}\nresults: {config.out_dir}"
    )


def duration(seconds: float) -> str:
    """'45 s', '4 min 35 s', '1 h 52 min': an estimate's precision, no more."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


# what a part of a plan costs, and the flags that make it shorter
PART_FLAGS = {
    "accuracy": "--epochs, --train-subset, --seeds",
    "latency": "--rounds, --min-time, --batch-sizes instead of a sweep",
    "roofline": "--metrics without roofline",
    "memory": "--batch-sizes",
    "scaling": "--world-sizes",
}


def plan_lines(plan, compile_s: float) -> list[str]:
    """What would make ``plan`` much longer (or makes it long), each with the flag that changes
    it. ``compile_s``: what torch.compile adds, or would add (``plan.compile_share_s``)."""
    config, total = plan.config, plan.total_s
    lines = []
    if config.workload.compile:
        lines.append(f"--compile: about {duration(compile_s)} of this is compiling (charged for "
                     f"every batch shape of every unit); without it about {duration(total - compile_s)}")  # fmt: skip
    else:
        lines.append(f"--compile would add about {duration(compile_s)} (charged for every batch shape of every unit)")
    if config.profile == "full" and not config.device.startswith("cuda"):
        lines.append("profile full on a CPU: the chapter's training on every image, 3 seeds; "
                     "--profile quick is the CPU's run")  # fmt: skip
    parts = {k: v for k, v in plan.by_metric().items() if k in PART_FLAGS}
    if parts:
        biggest = max(parts, key=parts.get)
        lines.append(f"longest part: {biggest}, {duration(parts[biggest])} "
                     f"({100 * parts[biggest] / total:.0f}%); shorter with {PART_FLAGS[biggest]}")  # fmt: skip
    for model, mode, batch, why in plan.sweep_ends:
        lines.append(f"{model} {mode} sweep expected to end at batch {batch} ({why})")
    if plan.slowdown != 1:
        lines.append(f"this CPU runs the speed probe {plan.slowdown:.1f}x as long as the one the cost "
                     "model was fitted on: every step counted so")  # fmt: skip
    if plan.load_factor > 1:
        lines.append(f"this machine is busy (load {plan.load} on its CPUs): every step counted "
                     f"{plan.load_factor:.1f}x longer")  # fmt: skip
    for model, why in plan.uncounted:
        lines.append(f"{model}: not counted ({why}); its units are estimated from fixed costs only")
    tricks_s = plan.summary().get("tricks_s") or {}
    if tricks_s:  # what each trick costs, beside its fp32 eager baseline
        lines.append("tricks: " + ", ".join(f"{k} {duration(v)}" for k, v in tricks_s.items()))
    return lines


def plan_table(plan, compile_s: float) -> Table:
    """``cnnbench run``'s plan before it measures (and all that ``--dry-run`` prints): per
    model and metric the units and their expected time, the run-level costs, the total."""
    config = plan.config
    label = "estimate" if plan.costs.calibrated else "ESTIMATE (not calibrated on this device)"
    table = Table(
        title=f"Plan · {config.device} ({plan.device_name}) · profile {config.profile} · "
        f"{label}: about {duration(plan.total_s)}",
        caption="\n".join([f"cost model: {plan.costs.source}", *plan_lines(plan, compile_s)]),
        box=box.SIMPLE_HEAD,
        caption_justify="left",
    )
    for col in ("model", "metric", "units", "batches", "rounds", "expected"):
        table.add_column(col, justify="left" if col in ("model", "metric", "batches") else "right")
    for (model, metric), steps in _plan_groups(plan).items():
        first = [s for s in steps if s.round == 0]
        batches = sorted({s.unit.spec.batch_size for s in first if s.expected})
        rounds = max(s.round for s in steps) + 1
        table.add_row(model, metric, f"{sum(s.expected for s in first)}/{len(first)}",
                      ",".join(map(str, batches)), str(rounds),
                      duration(sum(s.seconds for s in steps)))  # fmt: skip
    table.add_section()
    for name, seconds in plan.before_s + plan.after_s:
        table.add_row(name, "", "", "", "", duration(seconds))
    seeds = len(config.train.seeds)
    table.add_row("total", f"{len(plan.models)} models, {seeds} seed{'s' * (seeds > 1)}",
                  str(len(plan.measured_units)), "", "", duration(plan.total_s))  # fmt: skip
    return table


def _plan_groups(plan) -> dict:
    groups: dict[tuple[str, str], list] = {}
    for s in plan.steps:
        groups.setdefault((s.unit.spec.model, s.unit.metric), []).append(s)
    return groups


class RunProgress:
    """The progress bar of ``cnnbench run`` on ``console``: ``with`` it around the run and pass
    :meth:`on_event` as the runner's event callback; a failed record is printed as it lands.

    With a ``plan`` (``cnnbench.plan.Plan``) the ETA is the plan's cost model for the steps
    left (``plan.remaining_s``), not an extrapolation of the pace so far: a run's units differ
    by orders of magnitude (a parameter count against a training)."""

    def __init__(self, console: Console, plan=None):
        self.console = console
        self.plan = plan
        self.steps_done = 0  # steps of the plan finished: see _step_events
        self.open = False  # a step has started and not finished
        eta = TextColumn("ETA {task.fields[eta]}") if plan is not None else TimeRemainingColumn()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            *([] if plan is not None else [TextColumn("ETA")]),
            eta,
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("planning", total=None, eta=self.eta())

    def __enter__(self) -> RunProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def eta(self) -> str:
        """The plan's expected time for what is left ('' without a plan)."""
        return "" if self.plan is None else duration(self.plan.remaining_s(self.steps_done))

    def _step_events(self, kind: str) -> None:
        """Count finished steps (one unit in one round) from the runner's events: a ``start``
        finishes the step before it if no record did (a round pooled into a later record), a
        ``record`` finishes the open step or is one of its own (a sweep's limit, a lost worker's
        units), a ``skip`` is a step not measured."""
        if kind == "start":
            self.steps_done += self.open
            self.open = True
        elif kind == "record" or kind == "skip":
            self.steps_done += 1
            self.open = self.open and kind == "skip"
        else:
            return
        self.progress.update(self.task, eta=self.eta())

    def on_event(self, kind: str, payload) -> None:
        self._step_events(kind)
        if kind == "plan":
            self.progress.update(self.task, total=len(payload))
        elif kind == "start":
            self.progress.update(self.task, description=payload.label)
        elif kind == "warning":  # e.g. a torn last line of results.jsonl, cut away
            self.console.print(f"[yellow]warning:[/] {escape(str(payload))}")
        elif kind in ("record", "skip"):
            self.progress.advance(self.task)
            if kind == "record" and payload.status != "ok":
                what = f"{payload.spec.model} {payload.metric}"
                self.console.print(f"[red]{payload.status}[/] {what}: {payload.reason}")


@contextlib.contextmanager
def sweep_progress(console: Console, total: int):
    """``cnnbench sweep``'s bar: shards finished, with how many are done, failed and
    resubmitted; yields ``show(progress)`` for ``sweep.run_sweep``'s events."""
    bar = Progress(TextColumn("shards"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[states]}"), TimeElapsedColumn(), console=console,
                   transient=True)  # fmt: skip
    task = bar.add_task("shards", total=total, states="submitting")

    def show(p) -> None:
        bar.update(task, completed=p.done + p.failed,
                   states=f"done {p.done}, failed {p.failed}, resubmitted {p.resubmitted}")  # fmt: skip

    with bar:
        yield show


@contextlib.contextmanager
def progress_bar(console: Console, what: str, total: int):
    """A transient bar of ``total`` steps; yields ``step(done)``."""
    progress = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True)  # fmt: skip
    task = progress.add_task(what, total=total)
    with progress:
        yield lambda done: progress.update(task, completed=done)


def calibration_table(cal) -> Table:
    """``cnnbench calibrate``'s result: each property with its estimate's interval, then what a
    run resolves by rounds."""
    table = Table(
        title=f"Calibration: {cal.replicates} runs of each workload, {cal.rounds} rounds each "
        f"({cal.wall_s / 60:.1f} min)",
        caption=f"sleep: truth known (the asked time plus the harness's own {1e3 * cal.overhead_ms:.0f} µs "
        "a call, the median of a noise-free twin in each run), "
        f"process sd {100 * cal.process_sd:.0f}% (its rounds measured "
        f"{100 * cal.round_sd_measured:.1f}%), iterations {100 * cal.iteration_sd:.0f}%; compute: "
        f"this machine's own noise (rounds {100 * cal.compute_round_sd:.1f}%), truth only that the "
        "two are identical. Rates with Wilson's 95% interval.",
        box=box.SIMPLE_HEAD,
    )  # fmt: skip
    for col in ("property", "sleep (known truth)", "compute (this machine)", "target"):
        table.add_column(col)
    checks = cal.checks()
    table.add_row("interval covers the true median", cal.coverage.text(), MISSING,
                  f"92-98% ({'ok' if checks['coverage 92-98%'] else 'MISSED'})")  # fmt: skip
    table.add_row("identical pair called a change, one run (paired)", cal.paired_false_alarm.text(),
                  cal.compute_paired_false_alarm.text(), f"<= 6%, with the sleep row below ({'ok' if checks['false alarms <= 6%'] else 'MISSED'})")  # fmt: skip
    table.add_row("identical truth called a change, compare of two runs", cal.compare_false_alarm.text(),
                  cal.compute_compare_false_alarm.text(), "<= 6% (compute: not judged, the drift "
                  "between runs that only a history shows)")  # fmt: skip
    table.add_row("10% slower called, one run (paired)", cal.paired_power_10.text(), MISSING, "")
    table.add_row("10% slower called, compare of two runs", cal.compare_power_10.text(), MISSING, "")
    table.add_row("25% slower called, one run (paired)", cal.paired_power_25.text(), MISSING,
                  f">= 80% ({'ok' if checks['power at 25% >= 80%'] else 'MISSED'})")  # fmt: skip
    table.add_row("25% slower called, compare of two runs", cal.compare_power_25.text(), MISSING, ">= 80%")
    table.add_section()
    for k, timed, wall, sleep, compute in cal.resolution_by_rounds:
        table.add_row(f"detectable change (80% power) after {k} rounds", f"{100 * sleep:.1f}%",
                      f"{100 * compute:.1f}%", f"{timed:.2f} s timed, ~{wall:.1f} s wall per model")  # fmt: skip
    return table
