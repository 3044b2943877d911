"""A report as typed blocks, and the one Markdown and one HTML renderer for them.

Every page cnnbench writes (report.md, compare.md, history.md, the GPU acceptance's verdicts) is
a :class:`Document` of these blocks, so that a table or a warning looks the same everywhere and
a renderer is written once. The blocks hold text and tables that are already worded; nothing here
decides or measures.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = [
    "Bullets", "Document", "Figure", "Fold", "Heading", "Note", "Paragraph", "Table",
    "markdown_table", "to_html", "to_markdown",
]  # fmt: skip


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Note:
    """A paragraph set apart: ``answer`` (an exercise's answer), ``warning`` (what makes the
    numbers near it untrustworthy) or ``note``."""

    text: str
    kind: str = "note"

    LABELS = {"answer": "Answer.", "warning": "Warning.", "note": "Note."}


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    caption: str
    frame: pd.DataFrame = field(compare=False)


@dataclass(frozen=True)
class Figure:
    """A figure written beside the page: its PNG is shown (inlined in HTML), its SVG linked."""

    title: str
    caption: str
    png: Path
    svg: Path


@dataclass(frozen=True)
class Fold:
    """Blocks a reader opens on demand (``<details>``): per-model tables, the glossary."""

    summary: str
    blocks: tuple = ()


@dataclass(frozen=True)
class Document:
    title: str
    blocks: tuple = ()


# --- Markdown -------------------------------------------------------------------------------


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table; a '|' or a line break inside a cell is escaped so that the row holds."""
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in frame.columns) + " |",
             "| " + " | ".join("---" for _ in frame.columns) + " |"]  # fmt: skip
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _md_block(block, out: Path | None) -> list[str]:
    if isinstance(block, Heading):
        return [f"{'#' * block.level} {block.text}", ""]
    if isinstance(block, Paragraph):
        return [block.text, ""]
    if isinstance(block, Note):
        label = f"**{Note.LABELS.get(block.kind, 'Note.')}** {block.text}"
        return [f"> {label}" if block.kind == "warning" else label, ""]
    if isinstance(block, Bullets):
        return [*(f"- {item}" for item in block.items), ""]
    if isinstance(block, Table):
        return [f"*{block.caption}*", "", markdown_table(block.frame), ""]
    if isinstance(block, Figure):
        rel = lambda p: (p.relative_to(out) if out else p).as_posix()  # noqa: E731
        return [f"![{block.title}]({rel(block.png)})", "",
                f"*{block.title}. {block.caption}* ([SVG]({rel(block.svg)}))", ""]  # fmt: skip
    if isinstance(block, Fold):
        inner = [line for b in block.blocks for line in _md_block(b, out)]
        return [f"<details><summary>{html.escape(block.summary)}</summary>", "", *inner, "</details>", ""]
    raise TypeError(f"not a block: {block!r}")


def to_markdown(doc: Document, out: Path | None = None) -> str:
    """The document as Markdown; figure paths relative to ``out`` (the page's folder)."""
    lines = [f"# {doc.title}", ""]
    for block in doc.blocks:
        lines += _md_block(block, out)
    return "\n".join(lines).rstrip("\n") + "\n"


# --- HTML -----------------------------------------------------------------------------------

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
details{margin:.5em 0}
summary{cursor:pointer;font-weight:600}
.bad{color:#b00020;font-weight:bold;text-align:left}
.answer{background:#f4f8ff;border-left:4px solid #3a6fd8;padding:.5em .8em}
.warning{background:#fff4e5;border-left:4px solid #d97a00;padding:.5em .8em}
.note{background:#f6f6f6;border-left:4px solid #999;padding:.5em .8em}
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
    wide = " wide" if len(frame.columns) > 16 else ""  # many columns: a smaller font, to fit
    return (
        f'<div class="scroll"><table class="dataframe{wide}"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
    )


def _html_block(block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Note):
        label = Note.LABELS.get(block.kind, "Note.")
        return f'<p class="{html.escape(block.kind)}"><strong>{label}</strong> {html.escape(block.text)}</p>'
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        return _html_table(block.caption, block.frame)
    if isinstance(block, Figure):
        data = base64.b64encode(block.png.read_bytes()).decode()
        return (f'<figure><img alt="{html.escape(block.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(block.title)}. {html.escape(block.caption)}</figcaption></figure>")  # fmt: skip
    if isinstance(block, Fold):
        inner = "\n".join(_html_block(b) for b in block.blocks)
        return f"<details><summary>{html.escape(block.summary)}</summary>\n{inner}\n</details>"
    raise TypeError(f"not a block: {block!r}")


def to_html(doc: Document) -> str:
    """The document as one self-contained HTML page (figures inlined, no external files)."""
    body = [f"<h1>{html.escape(doc.title)}</h1>", *(_html_block(b) for b in doc.blocks)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
