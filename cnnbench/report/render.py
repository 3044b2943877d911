"""Render a report (Markdown and self-contained HTML), results.csv and figures from run folders.

Everything comes from saved files (``results.jsonl``, ``env.json``): a report never measures.
Every table and figure states its conditions; records that are not ``ok`` are listed with their
status and reason, and marked in the tables, never dropped.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..results import Record, RunStore, records_frame
from . import exercises, figures
from .fmt import MISSING, accuracy, fmt, percent
from .frames import Frames

__all__ = ["Report", "build_report", "write_report"]

STATUS_NOTE = "Status: ok unless marked — oom (out of memory), error, unsupported, diverged."


@dataclass
class Report:
    title: str
    conditions: list[str]  # one line per run folder
    blocks: list[
        tuple
    ]  # ("h2", text) | ("p", text) | ("table", caption, DataFrame) | ("figure", Figure, table?)


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


def _conditions(env: dict, run_dir: Path) -> str:
    cfg = env.get("config", {})
    device = env.get("device_name") or env.get("device")
    cuda = env.get("cuda") or {}
    if cuda:
        device += f" ({cuda.get('sm_count')} SMs, {cuda.get('memory_bytes', 0) / 2**30:.0f} GiB)"
    over = cfg.get("overrides") or []
    over_text = ", ".join(f"{k}={_setting(cfg, k)}" for k in over) or "none"
    threads = (env.get("cpu") or {}).get("torch_threads")
    return (
        f"{run_dir.name}: {cfg.get('device', env.get('device'))} — {device}; dtype {_setting(cfg, 'dtype') or 'fp32'}"
        f"{', channels_last' if _setting(cfg, 'channels_last') else ''}{', torch.compile' if _setting(cfg, 'compile') else ''}; "
        f"profile {cfg.get('profile', '?')}; overrides: {over_text}; CPU threads {threads}; "
        f"torch {env.get('versions', {}).get('torch')}, fvcore {env.get('versions', {}).get('fvcore')}, "
        f"Python {env.get('python')}; git {str(env.get('git_commit'))[:10]}{' (dirty)' if env.get('git_dirty') else ''}; "
        f"command: `{cfg.get('command_line', '')}`"
    )


def _with_batch(value, batch, digits: int, scale: float = 1) -> str:
    """'1,234.5 (16)': a best or peak number and the batch it was measured at."""
    return MISSING if value is None else f"{fmt(value, digits, scale=scale)} ({batch})"


def _overview_table(frames: Frames) -> pd.DataFrame:
    rows = []
    for r in frames.overview.to_dict("records"):
        acc = accuracy(r["test_accuracy_mean"], r["test_accuracy_std"], r["accuracy_status"])
        if r["test_accuracy_mean"] is not None and r["train_image_size"] != r["image_size"]:
            acc += f" (trained at {r['train_image_size']})"
        flags = " ".join(r["latency_b1_flags"])
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
            "test accuracy": acc,
            "training time (s)": fmt(r["train_time_s_mean"], 1),
            "MFU % (roofline batch)": percent(r["mfu"], suffix=""),
            "not ok": r["not_ok"] or "",
        })  # fmt: skip
    return pd.DataFrame(rows)


def _as_is(value):
    return MISSING if value is None else value


def _latency_table(frames: Frames) -> pd.DataFrame:
    return pd.DataFrame([{
        "model": r["model"], "mode": r["mode"], "batch": r["batch_size"], "status": r["status"],
        "p50 ms": fmt(r["latency_ms_p50"], 2), "IQR ms": fmt(r["latency_ms_iqr"], 2),
        "p90 ms": fmt(r["latency_ms_p90"], 2), "n": fmt(r["n_runs"]),
        "images/s": fmt(r["images_per_s"], 1),
        "flags": " ".join(k for k in ("unstable", "contended") if r[k]) or ("" if r["status"] == "ok" else r["reason"]),
    } for r in frames.metric("latency").to_dict("records")])  # fmt: skip


def _memory_table(frames: Frames) -> pd.DataFrame:
    def mib(value) -> str:
        return fmt(value, 1, scale=2**20)

    return pd.DataFrame([{
        "model": r["model"], "mode": r["mode"], "batch": r["batch_size"], "status": r["status"],
        "measured MiB": mib(r["measured_bytes"]), "params": mib(r["param_bytes"]), "grads": mib(r["grad_bytes"]),
        "optimizer": mib(r["optimizer_state_bytes"]), "input": mib(r["input_bytes"]),
        "activations": mib(r["activation_bytes"]), "analytic sum": mib(r["analytic_bytes"]),
        "measured / analytic": fmt(r["measured_over_analytic"], 2), "source": r["source"] or r["reason"],
    } for r in frames.metric("memory").to_dict("records")])  # fmt: skip


def _accuracy_table(frames: Frames) -> pd.DataFrame:
    return pd.DataFrame([{
        "model": r["model"], "status": r["status"], "recipe": _as_is(r["recipe"]),
        "input": r["image_size"], "optimizer": _as_is(r["optimizer"]), "lr": _as_is(r["lr"]),
        "batch": r["batch_size"], "epochs": _as_is(r["epochs"]),
        "train / test images": f"{_as_is(r['train_images'])} / {_as_is(r['test_images'])}",
        "seeds": ",".join(map(str, r["seeds"] or ())) or MISSING,
        "test accuracy mean": fmt(r["test_accuracy_mean"]), "std": fmt(r["test_accuracy_std"]),
        "min": fmt(r["test_accuracy_min"]), "max": fmt(r["test_accuracy_max"]),
        "train time s": fmt(r["train_time_s_mean"], 1), "images/s": fmt(r["images_per_s_mean"], 1),
        "reason": r["reason"] or "",
    } for r in frames.metric("accuracy").to_dict("records")])  # fmt: skip


def build_report(run_dirs: list[Path], out: Path) -> tuple[Report, list[Record]]:
    records: list[Record] = []
    conditions = []
    for d in run_dirs:
        store = RunStore(d)
        if not store.results_path.exists():
            raise FileNotFoundError(f"{d}: no results.jsonl (is it a cnnbench run folder?)")
        records += store.records()
        conditions.append(_conditions(store.read_env(), Path(d)))
    frames = Frames(records)
    cond_short = " | ".join(c.split("; command:")[0] for c in conditions)
    figs = {f.stem: f for f in figures.make_figures(frames, out / "figures", cond_short)}
    blocks: list[tuple] = [
        ("h2", "Overview"),
        ("p", "Per model: the headline number of each metric. GMACs count one fused multiply-add "
              "once (fvcore). Latency is the median of the timed iterations; images/s = batch / "
              "median. Peak memory is CUDA's allocator peak or, on CPU, the peak anonymous RSS of a "
              "fresh worker above its baseline. " + STATUS_NOTE),
        ("table", "Overview", _overview_table(frames)),
    ]  # fmt: skip
    for stem, table, caption in (
        ("accuracy_vs_gmacs", _accuracy_table(frames), "Accuracy after training, and exactly how it was trained"),
        ("latency_vs_batch", _latency_table(frames), "Latency per model, mode and batch"),
        ("memory_breakdown", _memory_table(frames), "Memory: measured peak beside the analytic breakdown"),
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
    for section in exercises.sections(frames):
        blocks.append(("h2", section.title))
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
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-style:italic;padding:.3em 0}
figure{margin:1em 0}
figure img{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#555}
.cond{font-size:.8em;color:#555}
.bad{color:#b00020;font-weight:bold}
"""


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
        elif kind == "li":
            if not in_list:
                body.append("<ul>")
                in_list = True
            body.append(f"<li>{html.escape(block[1])}</li>")
        elif kind == "table":
            table = block[2].to_html(index=False, escape=True, border=0)
            table = table.replace("<td>oom</td>", '<td class="bad">oom</td>')
            for status in ("error", "diverged", "unsupported"):
                table = table.replace(f"<td>{status}</td>", f'<td class="bad">{status}</td>')
            table = table.replace(
                '<table class="dataframe">',
                f'<table class="dataframe"><caption>{html.escape(block[1])}</caption>',
                1,
            )
            body.append(table)
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
) -> dict[str, Path]:
    """Write report.md, report.html, results.csv and figures/ into ``out`` (the first run folder)."""
    run_dirs = [Path(d) for d in run_dirs]
    out = Path(out) if out else run_dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    report, records = build_report(run_dirs, out)
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
