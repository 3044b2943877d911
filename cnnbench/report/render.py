"""Write a run's report: report.md, a self-contained report.html, results.csv (every record,
tidy), models.csv (one row per model and configuration) and figures/, from run folders.

Everything comes from saved files (``results.jsonl``, ``env.json``): a report never measures.
The steps are apart: :mod:`.runs` loads, ``analysis`` finds, :mod:`.document` words and lays out,
:mod:`.blocks` renders.
"""

from __future__ import annotations

import errno
from pathlib import Path

from ..analysis.flat import models_frame
from ..analysis.frames import Frames
from ..results import records_frame
from ..results.store import StoreError, StoreFull
from . import figures
from .bench_json import benchmark_table
from .blocks import Heading, Table, to_html, to_markdown
from .document import build_document
from .runs import MixedRuns, Runs, check_mergeable, load_runs

__all__ = ["MixedRuns", "check_mergeable", "write_report"]


def _fingerprints(runs: Runs) -> str:
    """The fingerprint id of the machine and software behind the numbers (one per folder;
    shards of one run share it)."""
    from ..env import fingerprint_id

    return ";".join(sorted({fingerprint_id(env) for env in runs.envs.values()}))


def _figures(frames: Frames, out: Path) -> dict:
    return {f.stem: f for f in figures.make_figures(frames, out / "figures")}


def write_report(run_dirs: list[str | Path], out: str | Path | None = None, **kw) -> dict[str, Path]:
    """Write report.md, report.html, results.csv, models.csv and figures/ into ``out`` (the first
    run folder by default). A full disk ends in one :class:`StoreFull` naming the folder (the
    records the report reads are never written to)."""
    target = Path(out) if out else Path(run_dirs[0])
    try:
        return _write_report(run_dirs, out, **kw)
    except StoreError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise StoreFull(target, f"{target}: no space left ({exc.strerror}) while writing the report; "
                        "the run's records are untouched — free some space, then run `cnnbench "
                        "report` again", exc.errno) from exc  # fmt: skip


def _write_report(
    run_dirs: list[str | Path],
    out: str | Path | None = None,
    *,
    benchmark_json: list[str | Path] = (),
    allow_mixed: bool = False,
) -> dict[str, Path]:
    run_dirs = [Path(d) for d in run_dirs]
    out = Path(out) if out else run_dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(run_dirs, allow_mixed=allow_mixed)
    frames = Frames(list(runs.records), paired=runs.paired)
    extra = []
    for path in benchmark_json:
        caption, table = benchmark_table(path)
        extra += [Heading("pytest-benchmark results"), Table(caption, table)]
    doc = build_document(frames, runs, _figures(frames, out), extra)
    paths = {"md": out / "report.md", "html": out / "report.html", "csv": out / "results.csv",
             "models_csv": out / "models.csv", "figures": out / "figures"}  # fmt: skip
    paths["md"].write_text(to_markdown(doc, out))
    paths["html"].write_text(to_html(doc))
    records_frame(list(runs.records)).to_csv(paths["csv"], index=False)
    table = models_frame(frames)
    table.insert(len(table.columns), "fingerprint_id", _fingerprints(runs))
    table.to_csv(paths["models_csv"], index=False)
    paths["figures"].mkdir(exist_ok=True)
    return paths
