"""The ``cnnbench`` command: argument parsing and rich output over the library API, nothing else.

``main(argv)`` returns an exit status so that tests call it in-process: 0 on success, 2 on a usage
error (one line on stderr saying what to do, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import models
from .config import DTYPES, METRICS, PROFILES, make_config
from .measure import flops as flops_measure
from .measure import shapes
from .results import Spec

__all__ = ["build_parser", "main"]

MACS_NOTE = "MACs by fvcore: one fused multiply-add counts once"


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line instead of usage + message
        raise UsageError(message)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(value) != text.strip():
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnbench", description="Benchmark the CNNs of d2l chapter 8.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="registered models with parameters and GMACs")
    p.add_argument("patterns", nargs="*", help="names, comma lists, fnmatch patterns or 'all'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("summary", help="per-block or per-layer shapes, parameters and MACs")
    p.add_argument("model")
    p.add_argument("--size", type=positive_int, help="square input side (default: the model's)")
    p.add_argument("--depth", type=positive_int, default=1, help="1: blocks, 2: layers (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("minsize", help="smallest square input each model runs on (exercise 2)")
    p.add_argument("patterns", nargs="*", help="models (default: the four chapter models)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("report", help="render report.md/.html, results.csv and figures from runs")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="where to write (default: the first run folder)")
    p.add_argument("--benchmark-json", action="append", default=[],
                   help="a pytest-benchmark --benchmark-json file to render beside the runs")  # fmt: skip

    p = sub.add_parser("compare", help="two runs side by side, changes beyond noise flagged")
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--out", help="where compare.md/.csv go (default: RUN_B)")

    p = sub.add_parser("data", help="where Fashion-MNIST is, and whether it verifies")
    p.add_argument("--data-dir", help="look here first")
    p.add_argument(
        "--download", nargs="?", const="", metavar="DIR",
        help="fetch the upstream files (default DIR: the user cache)",
    )  # fmt: skip

    p = sub.add_parser("run", help="measure models and save the results in a run folder")
    p.add_argument("--models", default=None, help="selection (default: the four chapter models)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    p.add_argument(
        "--metrics", default=None, help=f"comma list of {', '.join(METRICS)} (default: all)"
    )
    batches = p.add_mutually_exclusive_group()
    batches.add_argument("--batch-sizes", type=positive_int_list, help="e.g. 1,32,128")
    batches.add_argument(
        "--sweep", action="store_true", default=None, help="double the batch until out of memory"
    )
    p.add_argument("--image-size", type=positive_int, help="square input side for every model")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="fp32 (default), bf16, fp16")
    p.add_argument("--channels-last", action="store_true", default=None)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile (latency)")
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: torch's)")
    p.add_argument("--profile", choices=sorted(PROFILES), help="quick on CPU, full on CUDA")
    p.add_argument("--min-time", type=float, dest="min_time_s", help="seconds timed per record")
    p.add_argument("--min-runs", type=positive_int, help="timed iterations per record, at least")
    p.add_argument("--warmup", type=int, dest="warmup_runs", help="untimed iterations first")
    p.add_argument("--memory-cap-gb", type=float, help="per-worker memory cap; above it: oom")
    t = p.add_argument_group("accuracy (short Fashion-MNIST training)")
    t.add_argument("--epochs", type=positive_int, dest="train_epochs")
    t.add_argument("--train-subset", type=positive_int, help="class-balanced training images")
    t.add_argument("--test-subset", type=positive_int, help="class-balanced test images")
    t.add_argument("--train-batch-size", type=positive_int)
    t.add_argument("--optimizer", choices=("sgd", "adam"), dest="train_optimizer")
    t.add_argument("--lr", type=float, dest="train_lr", help="default: the chapter's per model")
    t.add_argument("--momentum", type=float, dest="train_momentum")
    t.add_argument("--train-image-size", type=positive_int)
    t.add_argument("--seeds", type=nonnegative_int_list, help="e.g. 0,1,2: one run per seed")
    t.add_argument("--label-smoothing", type=float)
    t.add_argument("--target-accuracy", type=float, help="record the time to reach it")
    t.add_argument("--data-dir", help="where to look first for Fashion-MNIST")
    p.add_argument("--out", help="run folder (default: runs/<time>-<device>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR, skipping what it has")
    p.add_argument("--json", action="store_true", help="print the records as JSON on stdout")
    p.add_argument("--no-report", action="store_true", help="skip rendering the report at the end")
    return parser


def nonnegative_int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(","))
    except ValueError:
        values = (-1,)
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected a comma list of seeds (e.g. 0,1,2), got '{text}'"
        )
    return values


def positive_int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(positive_int(t) for t in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of positive integers (e.g. 1,32,128), got '{text}'"
        ) from None
    return values


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _cmd_list(args, out: Console, err: Console) -> int:
    names = models.list_models(args.patterns or None)
    rows = []
    with err.status("counting parameters and MACs…"):
        for name in names:
            spec = models.get_spec(name)
            model = models.create(name)
            macs = flops_measure.count_macs(model, Spec(name, spec.input_size))
            rows.append(
                dict(
                    name=name,
                    family=spec.family,
                    section=spec.section,
                    input_shape=[spec.in_channels, spec.input_size, spec.input_size],
                    params=sum(p.numel() for p in model.parameters()),
                    gmacs=macs / 1e9,
                    default=spec.default,
                    parent=spec.parent,
                    description=spec.description,
                )
            )
    if args.json:
        out.print_json(json.dumps(rows))
        return 0
    table = Table(
        title="cnnbench models",
        caption=f"GMACs at the default input, batch 1 ({MACS_NOTE}). * default selection",
    )
    wide = out.width >= 120  # the description only fits on a wide terminal
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
            r["section"] or "—",
            _fmt_shape(tuple(r["input_shape"])),
            f"{r['params']:,}",
            f"{r['gmacs']:.3f}",
        ]
        table.add_row(*cells, *([r["description"]] if wide else []))
    out.print(table)
    return 0


def _cmd_summary(args, out: Console, err: Console) -> int:
    spec = models.get_spec(args.model)
    size = args.size or spec.input_size
    try:
        shapes.check_input_size(args.model, size)
    except models.InputTooSmallError as exc:
        smallest = shapes.min_input_size(args.model)
        raise UsageError(
            f"--size {size} is too small for '{args.model}': layer '{exc.layer}' fails "
            f"({exc.detail}); the smallest size that works is {smallest.min_size} "
            f"(at {smallest.min_size - 1}, layer '{smallest.failing_layer}' fails)"
        ) from None
    model = models.create(args.model, image_size=size)
    summary = shapes.summarize(model, Spec(args.model, size), depth=args.depth)
    if args.json:
        out.print_json(json.dumps(asdict(summary)))
        return 0
    table = Table(
        title=f"{args.model} at {spec.in_channels}x{size}x{size}, depth {args.depth}",
        caption=f"batch 1; {MACS_NOTE}; shapes exclude the batch dimension",
    )
    for col in ("layer", "type", "output", "params", "% params", "GMACs", "% MACs"):
        table.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for row in summary.rows:
        table.add_row(
            row.name,
            row.layer,
            _fmt_shape(row.output_shape),
            f"{row.params:,}",
            f"{100 * row.params_share:.1f}",
            f"{row.macs / 1e9:.4f}",
            f"{100 * row.macs_share:.1f}",
        )
    table.add_section()
    table.add_row(
        "total", "", "", f"{summary.params_total:,}", "100.0", f"{summary.gmacs_total:.4f}", "100.0"
    )
    out.print(table)
    return 0


def _resolve_device(requested: str | None) -> str:
    import torch

    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return requested
    if requested == "cuda" or (requested.startswith("cuda:") and requested[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {requested}: CUDA is not available here; use --device cpu")
        index = int(requested[5:]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
        return requested
    raise UsageError(f"--device {requested}: expected cpu, cuda or cuda:N")


def _resolve_metrics(text: str | None) -> tuple[str, ...]:
    if text is None:
        return METRICS
    chosen = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in chosen if m not in METRICS]
    if bad or not chosen:
        raise UsageError(f"unknown metric '{','.join(bad)}'; choose from: {', '.join(METRICS)}")
    return chosen


def config_from_args(args, argv: Sequence[str] | None):
    import datetime as dt
    import shlex

    from . import models as zoo

    device = _resolve_device(args.device)
    selection = zoo.list_models(args.models) if args.models else zoo.default_models()
    profile = args.profile or ("full" if device.startswith("cuda") else "quick")
    if args.resume:
        out = args.resume
    else:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = args.out or f"runs/{stamp}-{device.replace(':', '')}"
    cap = int(args.memory_cap_gb * 2**30) if args.memory_cap_gb else None
    line = "cnnbench " + shlex.join(list(argv) if argv is not None else sys.argv[1:])
    return make_config(
        models=tuple(selection),
        metrics=_resolve_metrics(args.metrics),
        device=device,
        profile=profile,
        out_dir=out,
        batch_sizes=args.batch_sizes,
        sweep=args.sweep,
        image_size=args.image_size,
        dtype=args.dtype,
        channels_last=args.channels_last,
        compile=args.compile,
        threads=args.threads,
        min_time_s=args.min_time_s,
        min_runs=args.min_runs,
        warmup_runs=args.warmup_runs,
        memory_cap_bytes=cap,
        train_epochs=args.train_epochs,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        train_batch_size=args.train_batch_size,
        train_optimizer=args.train_optimizer,
        train_lr=args.train_lr,
        train_momentum=args.train_momentum,
        train_image_size=args.train_image_size,
        seeds=args.seeds,
        label_smoothing=args.label_smoothing,
        target_accuracy=args.target_accuracy,
        data_dir=args.data_dir,
        resume=bool(args.resume) or None,
        command_line=line,
    )


def _describe(config) -> str:
    over = ", ".join(f"{k}={getattr(config, k)}" for k in config.overrides) or "none"
    return (
        f"models {', '.join(config.models)} · device {config.device} · profile {config.profile}"
        f" · metrics {', '.join(config.metrics)}\noverrides: {over}\nresults: {config.out_dir}"
    )


def _cmd_run(args, out: Console, err: Console, argv) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from . import runner
    from .summary import summary_table

    config = config_from_args(args, argv)
    if config.dtype != "fp32" and config.device == "cpu":
        err.print(
            f"[yellow]warning:[/] {config.dtype} autocast on CPU is slow on CPUs without native "
            "support (about 10x slower than fp32 on the reference machine)"
        )
    err.print(_describe(config))
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = progress.add_task("planning", total=None)

    def on_event(kind, payload):
        if kind == "plan":
            progress.update(task, total=len(payload))
        elif kind == "start":
            progress.update(task, description=payload.label)
        elif kind in ("record", "skip"):
            progress.advance(task)
            if kind == "record" and payload.status != "ok":
                what = f"{payload.spec.model} {payload.metric}"
                err.print(f"[red]{payload.status}[/] {what}: {payload.reason}")

    try:
        with progress:
            result = runner.run(config, on_event)
    except runner.ResumeMismatch as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        err.print(f"interrupted; finished records are in {config.out_dir}/results.jsonl")
        return 130
    from .results import RunStore

    records = RunStore(config.out_dir).records()
    if args.json:
        print(json.dumps([json.loads(r.to_json()) for r in records]))
    (err if args.json else out).print(summary_table(records, config))
    console = err if args.json else out
    if result.skipped:
        console.print(f"resume: {result.skipped} measurement(s) already recorded, skipped")
    console.print(f"results: {config.out_dir}/results.jsonl, env: {config.out_dir}/env.json")
    if not args.no_report:
        from .report.render import write_report

        paths = write_report([config.out_dir])
        console.print(f"report: {paths['md']}, {paths['html']}")
    if result.failed:
        err.print(
            f"[red]{len(result.failed)} of {len(result.records)} measurements failed[/] "
            f"(status error); see {config.out_dir}/results.jsonl"
        )
        return 1
    return 0


def _cmd_data(args, out: Console, err: Console) -> int:
    from . import data

    if args.download is not None:
        try:
            where = data.download(args.download or None)
        except OSError as exc:
            err.print(f"cnnbench: {exc}", markup=False)
            return 1
        out.print(f"downloaded to {where}")
    try:
        found = data.load_fashion_mnist(args.data_dir, verify=True)
    except data.DataNotFound as exc:
        err.print(f"cnnbench: {exc}", markup=False)
        return 1
    except data.DataCorrupt as exc:
        err.print(f"cnnbench: corrupt data: {exc}", markup=False)
        return 1
    loc = found.location
    out.print(f"Fashion-MNIST found in {loc.root} ({loc.source})")
    for key, path in loc.files.items():
        spec = data.IDX_FILES[key]
        shape = "x".join(map(str, spec.shape))
        out.print(f"  {path.name:<28} {shape:>12}  ok: size, magic, SHA-256 {spec.sha256[:8]}")
    counts = found.train_labels.bincount(minlength=10)
    low, high = int(counts.min()), int(counts.max())
    out.print(f"train: {found.train_images.shape[0]:,} images, {low:,}-{high:,} per class")
    out.print(f"test: {found.test_images.shape[0]:,} images")
    return 0


def _cmd_minsize(args, out: Console, err: Console) -> int:
    names = models.list_models(args.patterns) if args.patterns else models.default_models()
    found = [shapes.min_input_size(name) for name in names]
    if args.json:
        out.print_json(json.dumps([asdict(f) for f in found]))
        return 0
    table = Table(
        title="Minimum square input (shape inference on the meta device)",
        caption="the chain: every layer that shrinks the map at the minimum size, up to the one "
        "that fails one pixel below it",
    )
    for col in ("model", "min", "fails below", "size chain at the minimum"):
        table.add_column(col, justify="right" if col == "min" else "left")
    for f in found:
        chain = "\n".join(f.reductions) or "— (padding keeps every map ≥ 1x1)"
        table.add_row(f.model, str(f.min_size), f.failing_layer or "—", chain)
    out.print(table)
    return 0


def _cmd_report(args, out: Console, err: Console) -> int:
    from .report.render import write_report

    for d in args.runs:
        if not (Path(d) / "results.jsonl").exists():
            raise UsageError(
                f"{d}: not a run folder (no results.jsonl); see: cnnbench run --out DIR"
            )
    paths = write_report(args.runs, args.out, benchmark_json=args.benchmark_json)
    out.print(
        f"report: {paths['md']}, {paths['html']}; table: {paths['csv']}; figures: {paths['figures']}"
    )
    return 0


def _cmd_compare(args, out: Console, err: Console) -> int:
    from rich.table import Table as RichTable

    from .report.compare import compare_runs, format_value, write_compare

    for d in (args.run_a, args.run_b):
        if not (Path(d) / "results.jsonl").exists():
            raise UsageError(f"{d}: not a run folder (no results.jsonl)")
    frame = compare_runs(args.run_a, args.run_b)
    table = RichTable(title=f"A = {args.run_a}   B = {args.run_b}",
                      caption="! change larger than the runs' own noise (IQR, seed std; 0 for counts)")  # fmt: skip
    for col in ("metric", "model", "mode", "batch", "value", "A", "B", "change", ""):
        table.add_column(
            col, justify="left" if col in ("metric", "model", "mode", "value") else "right"
        )
    for r in frame.to_dict("records"):
        change = (
            "—"
            if r["change"] is None or r["change"] != r["change"]
            else f"{100 * r['change']:+.1f}%"
        )
        table.add_row(r["metric"], r["model"], r["mode"], str(r["batch"]), r["value"], format_value(r["A"]),
                      format_value(r["B"]), change, "[red]![/]" if r["significant"] else "")  # fmt: skip
    out.print(table)
    paths = write_compare(frame, Path(args.out or args.run_b), Path(args.run_a), Path(args.run_b))
    out.print(f"written: {paths['md']}, {paths['csv']}")
    return 0


_COMMANDS = {
    "list": _cmd_list,
    "summary": _cmd_summary,
    "run": _cmd_run,
    "data": _cmd_data,
    "report": _cmd_report,
    "minsize": _cmd_minsize,
    "compare": _cmd_compare,
}


def main(argv: Sequence[str] | None = None) -> int:
    out = Console()
    err = Console(stderr=True)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return _cmd_run(args, out, err, argv)
        return _COMMANDS[args.command](args, out, err)
    except (UsageError, models.UnknownModelError) as exc:
        print(f"cnnbench: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
