"""Render a report (Markdown and self-contained HTML), results.csv and figures from run folders.

Everything comes from saved files (``results.jsonl``, ``env.json``): a report never measures.
Every table and figure states its conditions; records that are not ``ok`` are listed with their
status and reason, and marked in the tables, never dropped.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import pandas as pd

from .. import stats
from ..results import Record, RunStore, records_frame
from . import exercises, figures, verdicts
from .fmt import ABOVE_ROOF, MISSING, accuracy, fmt, utilization
from ..analysis.frames import EQUAL_RESOLUTION, Frames, finished_seeds, result_of, seed_std, trained_counts

__all__ = ["Report", "build_report", "write_report"]

STATUS_NOTE = "Status: ok unless marked — oom (out of memory), error, unsupported, diverged."

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


@dataclass
class Report:
    title: str
    conditions: list[str]  # one line per run folder
    blocks: list[tuple]  # ("h2"|"p"|"warn"|"answer"|"li", text) | ("table", caption, DataFrame) | ("figure", Figure)


def _setting(cfg: dict, name: str):
    """A config value from env.json, nested by section (``config["workload"]["dtype"]``) or, as
    runs before the sectioned config wrote it, flat (``config["dtype"]``); ``name`` is a field or
    a command-line option (``train_batch_size`` is ``config["train"]["batch_size"]``)."""
    from ..config import OPTIONS, SECTIONS

    if name in cfg:
        return cfg[name]
    if name in OPTIONS and isinstance(cfg.get(OPTIONS[name].section), dict):
        return cfg[OPTIONS[name].section].get(OPTIONS[name].field)
    for section, _, _ in SECTIONS:
        if name in (cfg.get(section) or {}):
            return cfg[section][name]
    return None


def _git(env: dict) -> str:
    return f"git {str(env.get('git_commit'))[:10]}{' (dirty)' if env.get('git_dirty') else ''}"


def _conditions(env: dict, run_dir: Path) -> tuple[str, str]:
    """(the setup, the setup and every invocation): one line per run folder. A resumed run lists
    each session's commit and command line (env.json "resumed")."""
    cfg = env.get("config", {})
    device = env.get("device_name") or env.get("device")
    cuda = env.get("cuda") or {}
    if cuda:
        device += f" ({cuda.get('sm_count')} SMs, {cuda.get('memory_bytes', 0) / 2**30:.0f} GiB)"
    over = cfg.get("overrides") or []
    over_text = ", ".join(f"{k}={_setting(cfg, k)}" for k in over) or "none"
    threads = (env.get("cpu") or {}).get("torch_threads")
    sessions = [env] + [e for e in env.get("resumed") or [] if isinstance(e, dict)]
    setup = (
        f"{run_dir.name}: {cfg.get('device', env.get('device'))} — {device}; dtype {_setting(cfg, 'dtype') or 'fp32'}"
        f"{', channels_last' if _setting(cfg, 'channels_last') else ''}{', torch.compile' if _setting(cfg, 'compile') else ''}; "
        f"profile {cfg.get('profile', '?')}; overrides: {over_text}; CPU threads {threads}; "
        f"torch {env.get('versions', {}).get('torch')}, fvcore {env.get('versions', {}).get('fvcore')}, "
        f"Python {env.get('python')}"
    )  # fmt: skip
    short = f"{setup}; " + ", ".join(_git(e) for e in sessions)
    if len(sessions) == 1:
        return short, f"{setup}; {_git(env)}; command: `{cfg.get('command_line', '')}`"
    calls = "; ".join(
        f"({i}) {_git(e)}: `{(e.get('config') or {}).get('command_line', '')}`"
        for i, e in enumerate(sessions, 1)
    )
    return short, f"{setup}; {len(sessions)} invocations (resumed): {calls}"


def _with_batch(value, batch, digits: int, scale: float = 1) -> str:
    """'1,234.5 (16)': a best or peak number and the batch it was measured at."""
    return MISSING if value is None else f"{fmt(value, digits, scale=scale)} ({batch})"


def _overview_table(frames: Frames) -> pd.DataFrame:
    rows = []
    for r in frames.overview.to_dict("records"):
        flags = " ".join(r["latency_b1_flags"])
        trained = r["test_accuracy_mean"] is not None or r["accuracy_status"] is not None
        rows.append({
            "model": r["model"],
            "input": r["image_size"],
            "parameters": fmt(r["params"]),
            "GMACs": fmt(r["gmacs"]),
            "latency p50 b1 (ms)": fmt(r["latency_ms_p50_b1"], 2) + (f" ({flags})" if flags else ""),
            "best inference images/s (batch)": _with_batch(r["infer_images_per_s_best"], r["infer_best_batch"], 1),
            "best training images/s (batch)": _with_batch(r["train_images_per_s_best"], r["train_best_batch"], 1),
            "peak memory inference MiB (batch)": _with_batch(r["infer_memory_bytes"], r["infer_memory_batch"], 0, 2**20),
            "peak memory training MiB (batch)": _with_batch(r["train_memory_bytes"], r["train_memory_batch"], 0, 2**20),
            "test accuracy": accuracy(r["test_accuracy_mean"], r["test_accuracy_std"], r["accuracy_status"]),
            "trained at": fmt(r["train_image_size"]) if trained else MISSING,
            "parameters as trained": fmt(r["trained_params"]),
            "GMACs as trained": fmt(r["trained_gmacs"]),
            "training time (s)": fmt(r["train_time_s_mean"], 1),
            "MFU % (roofline batch)": utilization(r["mfu"], bool(r["above_roof"]), suffix="")
            + (f" ({r['roofline_batch']})" if r["mfu"] is not None and not r["above_roof"] else ""),
            "not ok": r["not_ok"] or "",
        })  # fmt: skip
    table = pd.DataFrame(rows)
    if len(table) and not any(table["not ok"]):
        table = table.drop(columns="not ok")  # every record ok: the section at the end says so
    return table


def _as_is(value):
    return MISSING if value is None else value


@dataclass(frozen=True)
class _Trained:
    """What a model's accuracy run trained: the optimizer labelled as a training step's
    ('adam 0.0005', 'sgd 0.01 momentum 0.9'), the side and the parameters of the network."""

    optimizer: str
    image_size: int
    params: int | None


def _accuracy_optimizers(frames: Frames) -> dict[str, _Trained]:
    """model → what its accuracy run trained."""
    found = {}
    for rec in frames.records:
        if rec.metric != "accuracy" or rec.spec.model in found:
            continue
        res = result_of(rec)
        if res is None or res.optimizer is None or res.lr is None:
            continue
        momentum = f" momentum {res.momentum:g}" if res.momentum else ""
        params, _, _ = trained_counts(frames.records, rec)
        found[rec.spec.model] = _Trained(f"{res.optimizer} {res.lr:g}{momentum}", rec.spec.image_size, params)
    return found


def _step_optimizer(r: dict, theirs: dict[str, _Trained]) -> str:
    """A training step's optimizer beside the accuracy run's: 'adam 0.0005 (= accuracy run)' only
    where the timed step trains the network that was trained — the same side (so the same head
    and parameters) and the same optimizer; otherwise what differs."""
    if r["mode"] != "train" or r["status"] != "ok":
        return ""
    acc = theirs.get(r["model"])
    if r["optimizer"] is None:
        return MISSING + (f" (accuracy run: {acc.optimizer})" if acc else " (not recorded)")
    if acc is None:
        return r["optimizer"]
    differs = []
    if " ".join(r["optimizer"].lower().split()) != " ".join(acc.optimizer.lower().split()):
        differs.append(f"optimizer {acc.optimizer}")
    if r["image_size"] != acc.image_size:
        net = f", {acc.params / 1e6:.1f}M parameters" if acc.params else ""
        differs.append(f"trained at {acc.image_size} px{net}")
    if not differs:
        return f"{r['optimizer']} (= accuracy run)"
    return f"{r['optimizer']} (accuracy run: {'; '.join(differs)})"


def _ci_text(r: dict) -> str:
    """The 95% interval of a latency record's median: recorded, else computed from its kept
    samples, else — (schema 1 kept none)."""
    if r["status"] != "ok":
        return ""
    low, high = r["latency_ms_p50_ci_low"], r["latency_ms_p50_ci_high"]
    if (low is None or high is None) and r["times_ms"]:
        iv = stats.median_interval(r["times_ms"], r["round_sizes"])
        low, high = iv.low, iv.high
    return MISSING + " (no samples)" if low is None else f"{fmt(low, 2)}–{fmt(high, 2)}"


def _latency_table(frames: Frames) -> pd.DataFrame:
    theirs = _accuracy_optimizers(frames)
    return pd.DataFrame([{
        "model": r["model"], "input": r["image_size"], "mode": r["mode"], "batch": r["batch_size"],
        "status": r["status"], "p50 ms": fmt(r["latency_ms_p50"], 2), "p50 95% CI ms": _ci_text(r),
        "rounds": fmt(r["rounds"]) if r["status"] == "ok" else "",
        "IQR ms": fmt(r["latency_ms_iqr"], 2), "p90 ms": fmt(r["latency_ms_p90"], 2),
        "n": fmt(r["n_runs"]), "images/s": fmt(r["images_per_s"], 1),
        "step optimizer": _step_optimizer(r, theirs),
        "flags": " ".join(k for k in ("unstable", "contended") if r[k]) or ("" if r["status"] == "ok" else r["reason"]),
    } for r in frames.metric("latency").to_dict("records")])  # fmt: skip


def _memory_table(frames: Frames) -> pd.DataFrame:
    theirs = _accuracy_optimizers(frames)

    def mib(value) -> str:
        return fmt(value, 1, scale=2**20)

    def part(r, mode) -> str:
        return mib(r["activation_bytes"]) if r["mode"] == mode else ""

    table = pd.DataFrame([{
        "model": r["model"], "input": r["image_size"], "mode": r["mode"], "batch": r["batch_size"],
        "status": r["status"], "measured MiB": mib(r["measured_bytes"]), "parameters": mib(r["param_bytes"]),
        "gradients": mib(r["grad_bytes"]), "optimizer state": mib(r["optimizer_state_bytes"]),
        "input tensor": mib(r["input_bytes"]), "saved for backward (train)": part(r, "train"),
        "largest layer in+out (inference)": part(r, "inference"), "analytic sum": mib(r["analytic_bytes"]),
        "measured / analytic": fmt(r["measured_over_analytic"], 2),
        "not in the analytic sum": mib(None if r["measured_bytes"] is None else r["measured_bytes"] - r["analytic_bytes"]),
        "step optimizer": _step_optimizer(r, theirs), "source": r["source"] or r["reason"],
    } for r in frames.metric("memory").to_dict("records")])  # fmt: skip
    if len(table) and table["source"].nunique() == 1 and all(table["status"] == "ok"):
        table = table.drop(columns="source")  # one source for all: the caption names it
    return table


def _memory_caption(frames: Frames) -> str:
    sources = sorted({s for s in frames.metric("memory").get("source", []) if s})
    return "Memory (MiB): measured peak beside the analytic breakdown" + (
        f" (measured: {', '.join(sources)})" if sources else ""
    )


MEMORY_PARTS = (
    "The measured peak is above the process's baseline (Python and torch are loaded before it "
    "and not counted); the analytic sum counts parameters, gradients, optimizer state, the input "
    "and, in training, the tensors autograd saves for backward — in inference only the largest "
    "layer's input and output, a lower bound. What the sum leaves out ('not in the analytic "
    "sum') is what this run cannot take apart: tensors alive during the step but not saved (a "
    "layer's output before the next layer reads it, gradients of activations during backward), "
    "library workspaces (oneDNN's scratchpads; cuDNN and cuBLAS workspaces on CUDA) and the "
    "allocator's own slack (glibc's arenas and free lists on CPU; the caching allocator's rounding "
    "on CUDA). An inference ratio well above 1 is mostly the first: its sum is a lower bound."
)


def _accuracy_table(frames: Frames) -> pd.DataFrame:
    rows = []
    records = [r for r in frames.records if r.metric == "accuracy"]
    for rec, r in zip(records, frames.metric("accuracy").to_dict("records"), strict=True):
        res = result_of(rec)
        params, gmacs, _ = trained_counts(frames.records, rec)
        step = res.trained_step_flops if res else None
        rows.append({
            "model": r["model"], "status": r["status"], "recipe": _as_is(r["recipe"]),
            "trained at": r["image_size"], "parameters as trained": fmt(params),
            "GMACs as trained": fmt(gmacs), "train step GFLOPs / image": fmt(step, 3, scale=1e9),
            "optimizer, lr": f"{_as_is(r['optimizer'])} {_as_is(r['lr'])}",
            "batch": r["batch_size"], "epochs": _as_is(r["epochs"]),
            "train / test images": f"{_as_is(r['train_images'])} / {_as_is(r['test_images'])}",
            "seed ids": ",".join(map(str, r["seeds"] or ())) or MISSING,
            "test accuracy mean": fmt(r["test_accuracy_mean"]), "95% interval": _accuracy_interval(res),
            "std": fmt(seed_std(res)),
            "min–max": f"{fmt(r['test_accuracy_min'])}–{fmt(r['test_accuracy_max'])}" if res and finished_seeds(res) > 1 else MISSING,
            "train time s": fmt(r["train_time_s_mean"], 1), "images/s": fmt(r["images_per_s_mean"], 1),
            "reason": r["reason"] or "",
        })  # fmt: skip
    table = pd.DataFrame(rows)
    if len(table) and not any(table["reason"]):
        table = table.drop(columns="reason")
    return table


def _accuracy_interval(res) -> str:
    """Over the seeds (t), or with one seed the test set's own binomial interval, which holds no
    training noise: said so."""
    if res is None or res.test_accuracy_mean is None:
        return MISSING
    finals = [run.final_test_accuracy for run in res.runs if run.final_test_accuracy is not None]
    if len(finals) >= 2:
        iv = stats.mean_interval(finals)
        return f"{fmt(iv.low)}–{fmt(iv.high)} ({len(finals)} seeds)"
    if not finals or not res.test_images:  # a diverged seed, or a record without its test size
        return MISSING
    iv = stats.binomial_interval(finals[0], res.test_images)
    return f"{fmt(iv.low)}–{fmt(iv.high)} (test set only: no training noise)"


def _glossary() -> pd.DataFrame:
    return pd.DataFrame([{"term": t, "meaning": m} for t, m in GLOSSARY])


class MixedRuns(ValueError):
    """Run folders measured on different software or devices, put in one report unasked."""


# what must agree between run folders merged into one report (shards of one run)
MERGE_KEYS = (("torch", ("versions", "torch")), ("torchvision", ("versions", "torchvision")),
              ("fvcore", ("versions", "fvcore")), ("device", ("device_name",)))  # fmt: skip


def _merge_key(env: dict) -> dict[str, Any]:
    out = {}
    for name, path in MERGE_KEYS:
        value: Any = env
        for part in path:
            value = (value or {}).get(part) if isinstance(value, dict) else None
        out[name] = value
    return out


def check_mergeable(envs: dict[Path, dict]) -> None:
    """Refuse folders that measured on different software or device kinds (one line naming the
    first difference); ``--allow-mixed`` skips this."""
    keys = {d: _merge_key(e) for d, e in envs.items()}
    first_dir, first = next(iter(keys.items()))
    for d, k in keys.items():
        for name in first:
            if k[name] != first[name]:
                raise MixedRuns(
                    f"{d} measured with {name} {k[name]!r}, {first_dir} with {first[name]!r}: "
                    "not shards of one run; pass --allow-mixed to put them in one report anyway"
                )


def build_report(
    run_dirs: list[Path], out: Path, *, allow_mixed: bool = False
) -> tuple[Report, list[Record]]:
    records: list[Record] = []
    conditions, short = [], []
    envs = {}
    for d in run_dirs:
        store = RunStore(d)
        if not store.results_path.exists():
            raise FileNotFoundError(f"{d}: no results.jsonl (is it a cnnbench run folder?)")
        envs[Path(d)] = store.read_env()
    if len(envs) > 1 and not allow_mixed:
        check_mergeable(envs)
    for d, env in envs.items():
        records += RunStore(d).records()
        brief, full = _conditions(env, d)
        short.append(brief)
        conditions.append(full)
    # rounds pair across models only inside one run measured in one go
    paired = len(envs) == 1 and not next(iter(envs.values())).get("resumed")
    frames = Frames(records, paired=paired)
    cond_short = " | ".join(short)
    figs = {f.stem: f for f in figures.make_figures(frames, out / "figures", cond_short)}
    blocks: list[tuple] = []
    resolves = exercises.resolution_text(frames)
    if resolves:
        blocks.append(("p", resolves))
    control = frames.control
    if control is not None:
        blocks.append(("p" if control.passed else "warn", verdicts.control_headline(control)))
    blocks += [
        ("h2", "Overview"),
        ("p", "Per model: the headline number of each metric, at the model's own input ('input'); "
              "its test accuracy beside the network as trained ('trained at', with that network's "
              "parameters and GMACs; a dash where the run recorded no count at that size). GMACs count one fused "
              "multiply-add once (fvcore). Latency is the median of the timed iterations; images/s "
              "= batch / median. Peak memory is CUDA's allocator peak or, on CPU, the peak "
              "anonymous RSS of a fresh worker above its baseline. Test accuracy ± the sample std "
              "over seeds (no ± with one seed). " + STATUS_NOTE),
        ("table", "Overview", _overview_table(frames)),
    ]  # fmt: skip
    for stem, table, caption in (
        ("accuracy_vs_gmacs", _accuracy_table(frames), "Accuracy after training, and exactly how it was trained"),
        ("latency_vs_batch", _latency_table(frames), "Latency per model, mode and batch"),
        ("memory_breakdown", _memory_table(frames), _memory_caption(frames)),
        ("by_layer_type", None, None),
        ("training_curves", None, None),
    ):  # fmt: skip
        if stem in figs:
            blocks.append(("h2", figs[stem].title))
            blocks.append(("figure", figs[stem]))
        if table is not None and len(table):
            if stem not in figs:
                blocks.append(("h2", caption))
            blocks.append(("table", caption, table))
            if stem == "memory_breakdown":
                blocks.append(("p", MEMORY_PARTS))
    for section in exercises.sections(frames):
        blocks.append(("h2", section.title))
        if section.answer:
            blocks.append(("answer", section.answer))
        if section.warning:
            blocks.append(("warn", section.warning))
        blocks.append(("p", section.intro))
        if section.figure in figs:
            blocks.append(("figure", figs[section.figure]))
        for caption, table in section.tables:
            blocks.append(("table", caption, table))
        for sentence in section.sentences:
            blocks.append(("li", sentence))
    blocks.append(("h2", "Records that are not ok"))
    if len(frames.failures):
        blocks.append(
            ("table", "Every record whose status is not ok, with its reason", frames.failures)
        )
    else:
        blocks.append(("p", "None: every record in these runs has status ok."))
    blocks += [("h2", "Glossary"), ("table", "Every term in one sense", _glossary())]
    return Report("cnnbench report", conditions, blocks), records


def _md_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = [
        "| " + " | ".join(esc(c) for c in cols) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(esc(v) for v in row) + " |")
    return "\n".join(lines)


def render_markdown(report: Report, out: Path) -> str:
    parts = [f"# {report.title}", "", "Conditions:", ""]
    parts += [f"- {c}" for c in report.conditions]
    parts.append("")
    for block in report.blocks:
        kind = block[0]
        if kind != "li" and parts and parts[-1].startswith("- "):
            parts.append("")  # a list must end before the next block
        if kind == "h2":
            parts += [f"## {block[1]}", ""]
        elif kind == "p":
            parts += [block[1], ""]
        elif kind == "answer":
            parts += [f"**Answer.** {block[1]}", ""]
        elif kind == "warn":
            parts += [f"> **Warning.** {block[1]}", ""]
        elif kind == "li":
            parts += [f"- {block[1]}"]
        elif kind == "table":
            parts += [f"*{block[1]}*", "", _md_table(block[2]), ""]
        elif kind == "figure":
            fig = block[1]
            rel = fig.png.relative_to(out)
            parts += [
                f"![{fig.title}]({rel.as_posix()})",
                "",
                f"*{fig.title}. {fig.caption}* ([SVG]({fig.svg.relative_to(out).as_posix()}))",
                "",
            ]
    return "\n".join(parts) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.8em;max-width:100%}
.scroll{max-width:100%;overflow-x:auto;margin:.5em 0 1.5em}
.scroll table{margin:0}
table.wide{font-size:.72em}
th,td{border:1px solid #ccc;padding:.25em .4em;vertical-align:top;white-space:normal;word-break:normal}
th{background:#f3f3f3;font-weight:600;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.text{text-align:left}
td.text:not(:first-child){min-width:6em}
caption{caption-side:top;text-align:left;font-style:italic;padding:.3em 0}
figure{margin:1em 0}
figure img{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#555}
.cond{font-size:.8em;color:#555;overflow-wrap:anywhere}
.bad{color:#b00020;font-weight:bold;text-align:left}
.answer{background:#f4f8ff;border-left:4px solid #3a6fd8;padding:.5em .8em}
.warn{background:#fff4e5;border-left:4px solid #d97a00;padding:.5em .8em}
"""


_NUMBER = re.compile(r"[+\-−]?[\d,]*\.?\d+\s*(%|pp|s)?(\s*\([^)]*\))?|—|[\d.,]+\s*[–/]\s*[\d.,]+")
_BAD = {"oom", "error", "diverged", "unsupported"}


def _html_table(caption: str, frame: pd.DataFrame) -> str:
    """A table whose every header and cell is escaped; numbers right-aligned, text left-aligned,
    a status that is not ok marked."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            text = "" if value is None else str(value)
            cls = "bad" if text in _BAD else "num" if _NUMBER.fullmatch(text.strip()) else "text"
            cells.append(f'<td class="{cls}">{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    wide = ' wide' if len(frame.columns) > 16 else ""  # many columns: a smaller font, to fit
    return (
        f'<table class="dataframe{wide}"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def render_html(report: Report) -> str:
    body = [
        f"<h1>{html.escape(report.title)}</h1>",
        '<p class="cond">Conditions:</p><ul class="cond">',
    ]
    body += [f"<li>{html.escape(c)}</li>" for c in report.conditions]
    body.append("</ul>")
    in_list = False
    for block in report.blocks:
        kind = block[0]
        if kind != "li" and in_list:
            body.append("</ul>")
            in_list = False
        if kind == "h2":
            body.append(f"<h2>{html.escape(block[1])}</h2>")
        elif kind == "p":
            body.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "answer":
            body.append(f'<p class="answer"><strong>Answer.</strong> {html.escape(block[1])}</p>')
        elif kind == "warn":
            body.append(f'<p class="warn"><strong>Warning.</strong> {html.escape(block[1])}</p>')
        elif kind == "li":
            if not in_list:
                body.append("<ul>")
                in_list = True
            body.append(f"<li>{html.escape(block[1])}</li>")
        elif kind == "table":
            body.append(f'<div class="scroll">{_html_table(block[1], block[2])}</div>')
        elif kind == "figure":
            fig = block[1]
            data = base64.b64encode(fig.png.read_bytes()).decode()
            body.append(
                f'<figure><img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(fig.title)}. {html.escape(fig.caption)}</figcaption></figure>"
            )
    if in_list:
        body.append("</ul>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def benchmark_table(path: str | Path) -> tuple[str, pd.DataFrame]:
    """A pytest-benchmark ``--benchmark-json`` file as a table: one row per benchmark."""
    import json

    data = json.loads(Path(path).read_text())
    rows = []
    for b in data.get("benchmarks", []):
        st, info = b["stats"], b.get("extra_info", {})
        rows.append({
            "benchmark": b["name"], "model": info.get("model", ""), "batch": info.get("batch", ""),
            "device": info.get("device", ""), "dtype": info.get("dtype", ""),
            "median ms": fmt(1e3 * st["median"], 3), "IQR ms": fmt(1e3 * st["iqr"], 3),
            "min ms": fmt(1e3 * st["min"], 3), "rounds": fmt(st["rounds"]),
            "images/s": fmt(info["batch"] / st["median"], 1) if info.get("batch") and "mode" in info else "",
        })  # fmt: skip
    machine = data.get("machine_info", {})
    caption = (
        f"pytest-benchmark {Path(path).name}: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', ''))}, "
        f"Python {machine.get('python_version', '?')}, {data.get('datetime', '')}"
    )
    return caption, pd.DataFrame(rows)


def write_report(
    run_dirs: list[str | Path],
    out: str | Path | None = None,
    *,
    benchmark_json: list[str | Path] = (),
    allow_mixed: bool = False,
) -> dict[str, Path]:
    """Write report.md, report.html, results.csv and figures/ into ``out`` (the first run folder)."""
    run_dirs = [Path(d) for d in run_dirs]
    out = Path(out) if out else run_dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    report, records = build_report(run_dirs, out, allow_mixed=allow_mixed)
    for path in benchmark_json:
        caption, table = benchmark_table(path)
        report.blocks += [("h2", "pytest-benchmark results"), ("table", caption, table)]
    paths = {"md": out / "report.md", "html": out / "report.html", "csv": out / "results.csv"}
    paths["md"].write_text(render_markdown(report, out))
    paths["html"].write_text(render_html(report))
    frame = records_frame(records)
    frame.to_csv(paths["csv"], index=False)
    (out / "figures").mkdir(exist_ok=True)
    paths["figures"] = out / "figures"
    return paths
