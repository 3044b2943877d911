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

from rich.console import Console
from rich.table import Table

from . import models
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
    return parser


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _cmd_list(args, out: Console, err: Console) -> int:
    names = models.list_models(args.patterns or None)
    rows = []
    with err.status("counting parameters and MACs…"):
        for name in names:
            spec = models.get_spec(name)
            model = models.create(name)
            count = flops_measure.measure(model, Spec(name, spec.input_size))
            rows.append(
                dict(
                    name=name,
                    family=spec.family,
                    section=spec.section,
                    input_shape=[spec.in_channels, spec.input_size, spec.input_size],
                    params=sum(p.numel() for p in model.parameters()),
                    gmacs=count.gmacs,
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


_COMMANDS = {"list": _cmd_list, "summary": _cmd_summary}


def main(argv: Sequence[str] | None = None) -> int:
    out = Console()
    err = Console(stderr=True)
    try:
        args = build_parser().parse_args(argv)
        return _COMMANDS[args.command](args, out, err)
    except (UsageError, models.UnknownModelError) as exc:
        print(f"cnnbench: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
