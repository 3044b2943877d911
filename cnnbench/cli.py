"""The ``cnnbench`` command: argument parsing and dispatch to the library, nothing else; what a
command shows on the terminal is built in ``report/console.py``, imported by the commands that
print (a measuring worker started from the ``cnnbench`` script runs this module again as its
``__mp_main__``, and must not pay for pandas and the report to get there).

``main(argv)`` returns an exit status so that tests call it in-process: 0 on success, 2 on a usage
error or a refused run, 1 on a failed one (one line on stderr saying what to do, never a
traceback). ``cnnbench run`` stopped by Ctrl-C, SIGTERM or SIGHUP (a scheduler's preemption)
keeps what it finished, ends its workers and says how to resume (exit 128 + the signal).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from . import config as config_fields
from . import models
from .config import DEFAULT_METRICS, METRICS, PROFILES, make_config
from .results import CorruptStore, RunStore, Spec
from .results.store import RunLocked, StoreError
from .sweep import EXECUTORS

if TYPE_CHECKING:  # imported where a command prints: a worker re-running this module does not
    from rich.console import Console

__all__ = ["build_parser", "config_from_args", "main"]


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line instead of usage + message
        raise UsageError(message)


def positive_int(text: str) -> int:
    return _argparse_type(config_fields.positive_int)(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnbench", description="Benchmark the CNNs of d2l chapter 8.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="registered models with parameters and GMACs")
    p.add_argument("patterns", nargs="*", help="names, comma lists, fnmatch patterns or 'all'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("summary", help="per-block or per-layer shapes, parameters and MACs")
    p.add_argument("model")
    p.add_argument("--size", type=positive_int, help="square input side (default: the model's)")
    p.add_argument("--depth", type=int, choices=(1, 2), default=1, help="1: blocks (default), 2: layers")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("minsize", help="smallest square input each model runs on (exercise 2)")
    p.add_argument("patterns", nargs="*", help="models (default: the four chapter models)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("report", help="render report.md/.html, results.csv and figures from runs")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="where to write (default: the first run folder)")
    p.add_argument("--benchmark-json", action="append", default=[],
                   help="a pytest-benchmark --benchmark-json file to render beside the runs")  # fmt: skip
    p.add_argument("--allow-mixed", action="store_true",
                   help="put runs of different software or devices in one report (refused "
                   "otherwise: shards of one run must have measured alike)")  # fmt: skip

    p = sub.add_parser("compare", help="two runs side by side, changes beyond noise flagged")
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--out", help="where compare.md/.csv go (default: RUN_B)")
    p.add_argument("--across-hardware", action="store_true",
                   help="call speed changes even where the runs measured different hardware")  # fmt: skip
    p.add_argument("--fail-on", metavar="regression[:THRESHOLD]", default=None,
                   help="exit 1 when a called change is a regression: slower (or fewer images/s) "
                   "beyond THRESHOLD (default 5%%, e.g. regression:10%%), lower accuracy, a changed "
                   "count; never for a difference of hardware unless --across-hardware")  # fmt: skip

    p = sub.add_parser("history", help="runs indexed in a SQLite file: trends across commits and machines")
    hist = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    db_help = "the history file (default: $CNNBENCH_HISTORY, else runs/history.sqlite)"
    h = hist.add_parser("add", help="index run folders into the history (a run added twice: no-op)")
    h.add_argument("runs", nargs="+", metavar="RUN_DIR")
    h.add_argument("--db", help=db_help)
    h = hist.add_parser("show", help="trend table and one trend figure per value")
    h.add_argument("--metric", help="a metric (latency) or a value (images_per_s)")
    h.add_argument("--model", help="models: names, comma lists or fnmatch patterns (googlenet*)")
    h.add_argument("--db", help=db_help)
    h.add_argument("--out", help="where history.md/.html, trend.csv and figures go (default: "
                   "history/ beside the history file)")  # fmt: skip
    h.add_argument("--last", type=positive_int, help="only the newest N runs")
    h.add_argument("--fail-on", metavar="regression[:THRESHOLD]", default=None,
                   help="exit 1 when the newest run of a machine is worse than the earlier runs "
                   "beyond their noise and drift (3 or more earlier runs) and THRESHOLD (default "
                   "5%%, the least a call can be), changed a count, or stopped being ok; values "
                   "without an interval (memory, roofline, one seed) are never called")  # fmt: skip
    h = hist.add_parser("export", help="every value of every run as one tidy CSV")
    h.add_argument("--db", help=db_help)
    h.add_argument("--out", help="the CSV file, - for standard output (default: history.csv beside the history file)")

    p = sub.add_parser("calibrate", help="check the latency statistics on this machine against "
                       "workloads of known truth: coverage, false alarms, power, resolution")  # fmt: skip
    p.add_argument("--out", default="runs/calibrate", help="where its runs and calibration.json go "
                   "(default: runs/calibrate)")  # fmt: skip
    p.add_argument("--replicates", type=positive_int, default=30,
                   help="runs of each workload (default 30: about 9 minutes on 2 cores)")  # fmt: skip
    p.add_argument("--rounds", type=positive_int, default=None,
                   help="latency rounds per run (default: the quick profile's)")  # fmt: skip
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: torch's)")

    p = sub.add_parser("data", help="where Fashion-MNIST is, and whether it verifies")
    p.add_argument("--data-dir", help="look here first")
    p.add_argument("--download", nargs="?", const="", metavar="DIR",
                   help="fetch the upstream files (default DIR: the user cache)")  # fmt: skip

    p = sub.add_parser("run", help="measure models and save the results in a run folder")
    _add_measure_options(p)
    p.add_argument("--out", help="run folder (default: runs/<time>-<device>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR, skipping what it has")
    p.add_argument("--shard", metavar="K/N", default=None,
                   help="measure only shard K of N (0 ≤ K < N) of the run's units, e.g. one task of "
                   "a Slurm job array; `cnnbench report DIR ...` merges the shards")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the records as JSON on stdout")
    p.add_argument("--no-report", action="store_true", help="skip rendering the report at the end")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and its time estimate; measure nothing, write nothing")
    p.add_argument("--history", metavar="FILE", default=None,
                   help="add the finished run to this history (default: $CNNBENCH_HISTORY if set)")  # fmt: skip

    # abbreviations off: the run options are handed to each shard as typed, minus the sweep's own
    p = sub.add_parser("sweep", allow_abbrev=False, help="a run split into N shards, submitted "
                       "through submitit as one job array, merged into one report")  # fmt: skip
    p.add_argument("--shards", type=positive_int, required=True, help="N: shard K runs --shard K/N")
    p.add_argument("--executor", choices=EXECUTORS, required=True,
                   help="slurm (sbatch), local (processes on this machine) or debug (in this process)")  # fmt: skip
    p.add_argument("--out", help="sweep folder: shards/K, submitit/ logs, the merged report "
                   "(default: runs/<time>-sweep)")  # fmt: skip
    p.add_argument("--slurm", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                   help="a SlurmExecutor parameter (repeatable): partition=gpu, gpus_per_node=1, "
                   "cpus_per_task=8, mem=32G, array_parallelism=4, account=...")  # fmt: skip
    p.add_argument("--timeout-min", type=_argparse_type(config_fields.positive_float), default=720.0,
                   help="each shard's wall-clock limit in minutes (default 720)")  # fmt: skip
    p.add_argument("--allow-mixed", action="store_true",
                   help="merge shards measured on different software or devices (refused otherwise)")  # fmt: skip
    _add_measure_options(p)
    return parser


def _add_measure_options(p: argparse.ArgumentParser) -> None:
    """What to measure and how: the options `cnnbench run` and each shard of a sweep share."""
    p.add_argument("--models", default=None, help="selection (default: the four chapter models)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    p.add_argument("--metrics", default=None, help=f"comma list of {', '.join(METRICS)} (default: all but energy, scaling, tricks)")  # fmt: skip
    p.add_argument("--profile", choices=sorted(PROFILES), help="quick on CPU, full on CUDA")
    _add_config_options(p)
    p.add_argument("--data-dir", help="where Fashion-MNIST is (default: searched, see README)")


def _key_value(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` → (key, value), an integer value as an int (submitit checks the types)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. partition=gpu")
    value = value.strip()
    return key.strip(), int(value) if value.lstrip("-").isdigit() else value


def _argparse_type(parse):
    """A config parse function as an argparse type: its ValueError becomes a usage error."""

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One flag per config field declared with ``opt`` (config.py), grouped by section."""
    for _, title, opts in config_fields.options():
        group = parser.add_argument_group(title)
        exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
        for o in opts:
            where = group
            if o.exclusive:
                if o.exclusive not in exclusive:
                    exclusive[o.exclusive] = group.add_mutually_exclusive_group()
                where = exclusive[o.exclusive]
            if o.parse is None and o.choices is None:
                where.add_argument(o.flag, dest=o.name, action="store_true", default=None,
                                   help=o.help)  # fmt: skip
            else:
                kind = _argparse_type(o.parse) if o.parse not in (None, str) else None
                where.add_argument(o.flag, dest=o.name, type=kind, choices=o.choices,
                                   default=None, help=o.help)  # fmt: skip


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
            raise UsageError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) here")  # fmt: skip
        return requested
    raise UsageError(f"--device {requested}: expected cpu, cuda or cuda:N")


def _resolve_metrics(text: str | None) -> tuple[str, ...]:
    if text is None:
        return DEFAULT_METRICS
    chosen = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in chosen if m not in METRICS]
    if bad or not chosen:
        raise UsageError(f"unknown metric '{','.join(bad)}'; choose from: {', '.join(METRICS)}")
    return chosen


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        k, n = -1, 0
    if not 0 <= k < n:
        raise UsageError(f"--shard {text}: expected K/N with 0 ≤ K < N, e.g. 0/4")
    return k, n


def config_from_args(args, argv: Sequence[str] | None):
    import datetime as dt
    import shlex

    device = _resolve_device(args.device)
    # --models "" is an empty selection (refused by the runner's preflight), not the default
    selection = models.list_models(args.models) if args.models is not None else models.default_models()  # fmt: skip
    if args.resume:
        out = args.resume
    else:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = args.out or f"runs/{stamp}-{device.replace(':', '')}"
    given = {o.name: getattr(args, o.name) for _, _, opts in config_fields.options() for o in opts}
    return make_config(
        models=tuple(selection),
        metrics=_resolve_metrics(args.metrics),
        device=device,
        profile=args.profile or ("full" if device.startswith("cuda") else "quick"),
        out_dir=out,
        given=given,
        data_dir=args.data_dir,
        resume=bool(args.resume),
        shard=_parse_shard(args.shard),
        command_line="cnnbench " + shlex.join(list(argv) if argv is not None else sys.argv[1:]),
    )


def _cmd_list(args, out: Console, err: Console) -> int:
    from .measure.flops import count_macs
    from .report import console

    rows = []
    with err.status("counting parameters and MACs…"):
        for name in models.list_models(args.patterns or None):
            spec, model = models.get_spec(name), models.create(name)
            rows.append(dict(
                name=name, family=spec.family, section=spec.section,
                input_shape=[spec.in_channels, spec.input_size, spec.input_size],
                params=sum(p.numel() for p in model.parameters()),
                gmacs=count_macs(model, Spec(name, spec.input_size)) / 1e9,
                default=spec.default, parent=spec.parent, description=spec.description,
            ))  # fmt: skip
    if args.json:
        out.print_json(json.dumps(rows))
    else:  # the description only fits on a wide terminal
        out.print(console.models_table(rows, wide=out.width >= 120))
    return 0


def _cmd_summary(args, out: Console, err: Console) -> int:
    from .measure import shapes
    from .report import console

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
    else:
        out.print(console.layers_table(summary, args.model, spec.in_channels, size, args.depth))
    return 0


def _cmd_minsize(args, out: Console, err: Console) -> int:
    from .measure import shapes
    from .report import console

    names = models.list_models(args.patterns) if args.patterns else models.default_models()
    found = [shapes.min_input_size(name) for name in names]
    if args.json:
        out.print_json(json.dumps([asdict(f) for f in found]))
    else:
        out.print(console.minsize_table(found))
    return 0


def _cmd_data(args, out: Console, err: Console) -> int:
    from . import data
    from .report import console

    try:
        if args.download is not None:
            out.print(f"downloaded to {data.download(args.download or None)}")
        found = data.load_fashion_mnist(args.data_dir, verify=True)
    except data.DataCorrupt as exc:
        err.print(f"cnnbench: corrupt data: {exc}", markup=False)
        return 1
    except (OSError, data.DataNotFound) as exc:  # a failed download, or no data found
        err.print(f"cnnbench: {exc}", markup=False)
        return 1
    for line in console.data_lines(found):
        out.print(line)
    return 0


def _cmd_run(args, out: Console, err: Console, argv) -> int:
    from . import runner
    from .report import console
    from .report.render import write_report
    from .results.history import HISTORY_ENV, HistoryError, add_runs
    from .results.history import check as check_history

    config = config_from_args(args, argv)
    history_file = args.history or os.environ.get(HISTORY_ENV) or None
    _start_workers_early(config)
    try:
        with _signals_as_interrupts():
            if history_file:  # a history that cannot take the run refuses it before measuring
                check_history(history_file)
            work = runner.preflight(config)
            plan = _print_plan(config, args, err, work)
            if args.dry_run:
                return 0  # preflight creates nothing: no folder, no record
            with console.RunProgress(err, plan=plan) as progress:
                result = runner.run(config, progress.on_event, estimate=plan.summary(),
                                    unit_estimates_s=plan.unit_seconds())  # fmt: skip
    except runner.RunRefused as exc:
        raise UsageError(exc.naming(_flag)) from None
    except (HistoryError, RunLocked) as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt as exc:
        err.print(_interrupted_line(exc, config, argv), markup=False, soft_wrap=True)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except StoreError as exc:  # a full disk, a read-only folder: every record before it is whole
        err.print(f"cnnbench: {exc}; resume with: {_resume_command(argv, config.out_dir)}",
                  markup=False, soft_wrap=True)  # fmt: skip
        return 1
    records = RunStore(config.out_dir).records()
    shown = err if args.json else out  # stdout holds nothing but the JSON
    if args.json:
        print(json.dumps([json.loads(r.to_json()) for r in records]))
    shown.print(console.run_summary(records, config))
    if result.skipped:
        shown.print(f"resume: {result.skipped} measurement(s) already recorded, skipped")
    shown.print(f"results: {config.out_dir}/results.jsonl, env: {config.out_dir}/env.json")
    if not args.no_report:
        try:
            paths = write_report([config.out_dir])
        except OSError as exc:  # a full disk: the records are whole, only the report is missing
            raise _unwritable(Path(config.out_dir), exc, "--out") from None
        shown.print(f"report: {paths['md']}, {paths['html']}")
    if history_file:
        try:
            (added,) = add_runs(history_file, [config.out_dir])
        except HistoryError as exc:
            err.print(f"cnnbench: history not updated: {exc}", markup=False)
            return 1
        shown.print(f"history: {console.added_line(added)} in {history_file}")
    if result.failed:
        err.print(f"[red]{len(result.failed)} of {len(result.records)} measurements failed[/] "
                  f"(status error); see {config.out_dir}/results.jsonl")  # fmt: skip
        return 1
    return 0


def _start_workers_early(config) -> None:
    """The worker server starts now: its imports (torch's) overlap the plan's work here."""
    if config.isolation == "process":
        from .measure.worker import start_server

        start_server()


def _print_plan(config, args, err: Console, work: dict | None = None):
    """What the run will do and how long the cost model expects it to take (``cnnbench.plan``),
    printed before anything is measured; ``work``: counted by the preflight's worker (None:
    counted now)."""
    from . import plan as run_plan
    from .report import console

    plan = run_plan.build(config, report=not args.no_report, work=work)
    err.print(console.describe(config))
    err.print(console.plan_table(plan, run_plan.compile_share_s(plan)))
    return plan


class _Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C raises KeyboardInterrupt, so that a run stopped by
    a scheduler (Slurm and Kubernetes send SIGTERM on preemption) or a closed terminal ends as an
    interrupted run does: workers ended, records kept, queues released (no resource_tracker
    warning about leaked semaphores, which a process killed by the signal's default leaves)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_signalled(signum, frame) -> None:
    raise _Signalled(signum)


@contextlib.contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`_Signalled` inside the block (main thread only: Python
    delivers signals there), the handlers found are restored after it."""
    if sys.platform == "win32" or not _in_main_thread():
        yield
        return
    wanted = (signal.SIGTERM, signal.SIGHUP)
    saved = {s: signal.signal(s, _raise_signalled) for s in wanted}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _interrupted_line(exc: KeyboardInterrupt, config, argv: Sequence[str] | None) -> str:
    """One line: what stopped the run, where its records are, and the command that resumes it."""
    what = f"interrupted ({exc.args[0]})" if isinstance(exc, _Signalled) else "interrupted"
    if not RunStore(config.out_dir).has_records():
        return f"{what} before any measurement was recorded; nothing to resume"
    return (f"{what}; finished records are kept in {config.out_dir}/results.jsonl; resume with: "
            f"{_resume_command(argv, config.out_dir)}")  # fmt: skip


def _resume_command(argv: Sequence[str] | None, out_dir: str) -> str:
    """The same ``cnnbench run`` command with ``--resume OUT`` in place of ``--out``/``--resume``
    (the same settings: a resume with other measurement settings is refused)."""
    given = list(argv) if argv is not None else sys.argv[1:]
    kept, skip = [], False
    for arg in given:
        if skip:
            skip = False
        elif arg in ("--out", "--resume"):
            skip = True
        elif not arg.startswith(("--out=", "--resume=")):
            kept.append(arg)
    return "cnnbench " + shlex.join([*kept, "--resume", out_dir])


# RunConfig's own fields that a `cnnbench run` flag sets (the sections' flags are in config.OPTIONS)
_RUN_FLAGS = {"models": "--models", "metrics": "--metrics", "device": "--device",
              "profile": "--profile", "out_dir": "--out", "resume": "--resume",
              "data_dir": "--data-dir", "shard": "--shard"}  # fmt: skip


def _flag(field: str) -> str:
    """The flag that sets a RunConfig field (``train.seeds`` → ``--seeds``): the runner names
    settings by field, the command line by flag."""
    options = {f"{o.section}.{o.field}": o.flag for o in config_fields.OPTIONS.values()}
    return options.get(field) or _RUN_FLAGS.get(field, field)


def _run_folders(*dirs: str) -> None:
    for d in dirs:
        if not (Path(d) / "results.jsonl").exists():
            raise UsageError(f"{d}: not a run folder (no results.jsonl); see: cnnbench run --out DIR")  # fmt: skip


def _cmd_report(args, out: Console, err: Console) -> int:
    from .report.render import MixedRuns, write_report

    _run_folders(*args.runs)
    try:
        paths = write_report(args.runs, args.out, benchmark_json=args.benchmark_json,
                             allow_mixed=args.allow_mixed)  # fmt: skip
    except MixedRuns as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # a full disk or a folder that cannot be written: one line
        raise _unwritable(Path(args.out or args.runs[0]), exc) from None
    out.print(f"report: {paths['md']}, {paths['html']}; table: {paths['csv']}; figures: {paths['figures']}")  # fmt: skip
    return 0


def _cmd_compare(args, out: Console, err: Console) -> int:
    from .report import console
    from .report.compare import compare_runs, hardware_differences, regressions, write_compare

    threshold = _parse_fail_on(args.fail_on)
    _run_folders(args.run_a, args.run_b)
    hardware, _ = hardware_differences(args.run_a, args.run_b)
    if hardware:
        err.print(f"warning: {hardware}" + ("" if args.across_hardware else
                  " (speed changes are not called; --across-hardware to call them)"))  # fmt: skip
    frame = compare_runs(args.run_a, args.run_b, across_hardware=args.across_hardware)
    out.print(console.compare_table(frame, args.run_a, args.run_b))
    paths = write_compare(frame, Path(args.out or args.run_b), Path(args.run_a), Path(args.run_b))
    out.print(f"written: {paths['md']}, {paths['csv']}")
    if threshold is None:
        return 0
    worse = regressions(frame, threshold)
    for r in worse.to_dict("records"):
        err.print(f"regression: {r['metric']} {r['model']} {r['mode']} b{r['batch']} {r['value']}: "
                  f"{r['A']} → {r['B']} ({r['change_shown']})", soft_wrap=True)  # fmt: skip
    err.print(f"{len(worse)} regression(s) beyond the noise and {threshold:.0%}", soft_wrap=True)
    return 1 if len(worse) else 0


def _cmd_calibrate(args, out: Console, err: Console) -> int:
    from .calibrate import calibrate
    from .config import PROFILES
    from .report import console

    target = Path(args.out)
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"--out {target}: not empty (calibrate writes fresh runs there)")
    rounds = args.rounds or PROFILES["quick"].overrides["timing"]["rounds"]
    if rounds < 2:
        raise UsageError("--rounds 1: an interval between processes needs 2 rounds or more")
    with console.progress_bar(err, "calibrating", args.replicates) as step:
        result = calibrate(target, replicates=args.replicates, rounds=rounds, threads=args.threads,
                           progress=lambda done, total: step(done))  # fmt: skip
    out.print(console.calibration_table(result))
    out.print(f"written: {target / 'calibration.json'}")
    return 0


def _cmd_history(args, out: Console, err: Console) -> int:
    from .results import history

    db = Path(args.db) if args.db else history.default_path()
    action = {"add": _history_add, "export": _history_export, "show": _history_show}[args.action]
    try:
        return action(args, db, out, err)
    except history.HistoryError as exc:
        raise UsageError(str(exc)) from None


def _history_add(args, db: Path, out: Console, err: Console) -> int:
    from .report import console
    from .results import history

    # a `history show` report beside the runs (runs/history/ for the default file) is not a
    # run: `history add runs/*/` skips it, saying so
    reports = [d for d in args.runs if history.is_history_report(Path(d))]
    for d in reports:
        err.print(f"skipped {d}: a history report (history show --out), not a run", markup=False,
                  soft_wrap=True)  # fmt: skip
    folders = [d for d in args.runs if d not in reports]
    for d in folders:
        if not Path(d).is_dir():
            raise UsageError(f"{d}: no such folder")
    _run_folders(*folders)
    for added in history.add_runs(db, folders):
        out.print(f"{added.folder}: {console.added_line(added)}", markup=False, soft_wrap=True)
    out.print(f"history: {db}")
    return 0


def _history_export(args, db: Path, out: Console, err: Console) -> int:
    from .results import history

    frame = history.read(db)
    if args.out == "-":
        frame.to_csv(sys.stdout, index=False)
        return 0
    target = Path(args.out) if args.out else db.parent / "history.csv"
    if target.exists() and target.resolve() == db.resolve():
        raise UsageError(f"--out {target}: is the history file itself; give a CSV file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(target, index=False)
    except OSError as exc:
        raise _unwritable(target, exc) from None
    out.print(f"{len(frame)} values of {frame['run_id'].nunique()} run(s) written to {target}")
    return 0


def _history_show(args, db: Path, out: Console, err: Console) -> int:
    from .report import console
    from .report.trend import write_history_report
    from .results import history

    threshold = _parse_fail_on(args.fail_on)
    models_ = [p.strip() for p in (args.model or "").split(",") if p.strip()]
    frame = history.read(db, metric=args.metric, models=models_ or None, last=args.last)
    if frame.empty:
        wanted = " ".join(f"--{k} {v}" for k, v in (("metric", args.metric), ("model", args.model)) if v)
        raise UsageError(f"{db}: no values" + (f" for {wanted}" if wanted else "") +
                         "; see: cnnbench history export, or add runs with cnnbench history add")  # fmt: skip
    target = Path(args.out) if args.out else db.parent / "history"
    try:
        with err.status("drawing the trend figures…"):
            paths, table = write_history_report(frame, db, target)
    except OSError as exc:
        raise _unwritable(target, exc) from None
    out.print(f"history {db}: a row per series (one value of one configuration on one machine); "
              "worse/better only beyond the earlier runs' intervals, 5% and their drift; the rule "
              f"in full: {paths['md']}", soft_wrap=False)  # fmt: skip
    for t in console.trend_tables(table, out.width):
        out.print(t)
    out.print(f"report: {paths['md']}, {paths['html']}; table: {paths['csv']}; figures: {paths['figures']}")  # fmt: skip
    return 0 if threshold is None else _history_gate(table, threshold, err)


def _history_gate(table, threshold: float, err: Console) -> int:
    """``history show --fail-on``: 1 when the newest run of a machine is worse (printed)."""
    from .report.trend import DRIFT_RUNS, gate

    worse, unjudged = gate(table, threshold)
    for r in worse:
        err.print(f"regression: {r['value']} {r['model']} {r['px']}px b{r['batch']} {r['mode']} on "
                  f"{r['machine']}: {r['earlier']} → {r['latest value']} ({r['change']}, {r['verdict']})", soft_wrap=True)  # fmt: skip
    if unjudged:
        first = sum(r["_first"] for r in unjudged)
        err.print(f"not judged: {first} series with no earlier run on this machine, "
                  f"{len(unjudged) - first} call(s) with fewer than {DRIFT_RUNS} earlier runs (drift unknown)", soft_wrap=True)  # fmt: skip
    err.print(f"{len(worse)} regression(s) in the newest runs beyond the noise and {threshold:.0%}", soft_wrap=True)
    return 1 if worse else 0


def _unwritable(target: Path, exc: OSError, flag: str = "--out") -> UsageError:
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return UsageError(f"{flag} {target}: cannot be written{where}: {exc.strerror or exc}")


def _parse_fail_on(text: str | None) -> float | None:
    """``regression`` (5%) or ``regression:THRESHOLD`` (``10%`` or ``0.1``) → a fraction."""
    if text is None:
        return None
    kind, _, value = text.partition(":")
    try:
        if kind != "regression":
            raise ValueError
        threshold = 0.05 if not value else (
            float(value[:-1]) / 100 if value.endswith("%") else float(value))  # fmt: skip
        if not 0 <= threshold < 10:
            raise ValueError
    except ValueError:
        raise UsageError(f"--fail-on {text}: expected regression or regression:THRESHOLD, THRESHOLD "
                         "a percentage (10%) or a fraction (0.1) from 0 to 1000%") from None  # fmt: skip
    return threshold


# `cnnbench sweep`'s own options (True: takes a value); every other option is a run option
_SWEEP_OWN = {"--shards": True, "--executor": True, "--out": True, "--slurm": True,
              "--timeout-min": True, "--allow-mixed": False}  # fmt: skip


def _run_tokens(tokens: Sequence[str]) -> list[str]:
    """The `cnnbench run` options of a `cnnbench sweep` command line, as typed: its tokens minus
    the sweep's own options (``--out D`` and ``--out=D`` alike; abbreviations are refused)."""
    kept, skip = [], False
    for token in tokens:
        name = token.split("=", 1)[0]
        if skip:
            skip = False
        elif name in _SWEEP_OWN:
            skip = _SWEEP_OWN[name] and "=" not in token
        else:
            kept.append(token)
    return kept


def _cmd_sweep(args, out: Console, err: Console, argv: Sequence[str] | None) -> int:
    import datetime as dt

    from . import sweep
    from .report import console
    from .report.render import MixedRuns

    # an unknown model or metric is refused before anything is submitted
    if args.models is not None:
        models.list_models(args.models)
    _resolve_metrics(args.metrics)
    tokens = list(argv) if argv is not None else sys.argv[1:]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    plan = sweep.SweepPlan(
        run_args=tuple(_run_tokens(tokens[tokens.index("sweep") + 1:])), shards=args.shards,
        out_dir=Path(args.out or f"runs/{stamp}-sweep"), executor=args.executor,
        executor_params=tuple(args.slurm), timeout_min=args.timeout_min, allow_mixed=args.allow_mixed,
    )  # fmt: skip
    if args.slurm and args.executor != "slurm":
        raise UsageError(f"--slurm is for --executor slurm, not {args.executor}")
    try:
        with console.sweep_progress(err, args.shards) as show:
            result = sweep.run_sweep(plan, on_progress=show)
    except (sweep.SubmititMissing, sweep.SweepRefused, MixedRuns) as exc:
        raise UsageError(str(exc)) from None
    for s in result.failed:
        err.print(f"shard {s.index}/{args.shards} failed {s.attempts} time(s), last: {s.reason}; "
                  f"log: {s.log_path or 'this terminal (debug)'}; run folder: {s.run_dir}",
                  markup=False, soft_wrap=True)  # fmt: skip
    if result.report:
        out.print(f"report: {result.report['md']}, {result.report['html']}; table: {result.report['csv']}",
                  markup=False, soft_wrap=True)  # fmt: skip
    out.print(f"sweep: {plan.out_dir / 'sweep.json'}; shards: {plan.out_dir / 'shards'}",
              markup=False)  # fmt: skip
    return 1 if result.failed else 0


_COMMANDS = {
    "list": _cmd_list,
    "summary": _cmd_summary,
    "data": _cmd_data,
    "report": _cmd_report,
    "minsize": _cmd_minsize,
    "compare": _cmd_compare,
    "calibrate": _cmd_calibrate,
    "history": _cmd_history,
}


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console

    out = Console()
    err = Console(stderr=True)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return _cmd_run(args, out, err, argv)
        if args.command == "sweep":
            return _cmd_sweep(args, out, err, argv)
        return _COMMANDS[args.command](args, out, err)
    except (UsageError, CorruptStore, models.UnknownModelError, models.PluginError) as exc:
        print(f"cnnbench: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:  # a run folder that could not be written (a full disk): it says so
        print(f"cnnbench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
