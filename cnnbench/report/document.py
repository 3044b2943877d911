"""The report as a document: the first screen answers the chapter's exercises, states the run's
conditions once and what it resolves; details follow, one section per exercise, the record tables
folded per model, the glossary last.

Everything here is wording and layout of what ``analysis`` found and the tables show; the
numbers come from the frames and the findings, never from this module.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from ..analysis.frames import Frames
from . import exercises, tables, verdicts
from .blocks import Bullets, Document, Figure, Fold, Heading, Note, Paragraph, Table
from .glossary import glossary_table
from .runs import Runs

__all__ = ["STATUS_NOTE", "build_document"]

STATUS_NOTE = "Status: ok unless marked — oom (out of memory), error, unsupported, diverged."

OVERVIEW_INTRO = (
    "Per model: the headline number of each metric, at the model's own input ('input'); its test "
    "accuracy beside the size it was trained at ('trained at'; that network's parameters and "
    "GMACs are in the accuracy table). GMACs count one fused multiply-add once (fvcore). Latency "
    "is the median of the timed iterations; images/s = batch / median. Peak memory is CUDA's "
    "allocator peak or, on CPU, the peak anonymous RSS of a fresh worker above its baseline. Test "
    "accuracy ± the sample std over seeds (no ± with one seed). " + STATUS_NOTE
)

ENERGY_NOTE = (
    "Joules per image from the device's own energy counter (NVML's total energy on CUDA, RAPL's "
    "package counters on a CPU), read over a block of steps that starts and ends on a counter "
    "update. The counter covers the whole board or socket, idle draw and every other process "
    "included; a block too short to span enough updates is marked coarse. Where the machine "
    "exposes no counter the record is 'unsupported' with the reason, never an estimate."
)

# the measurement sections: (figure stem, table maker, caption); a table folds one model per fold
_MEASURED = (
    ("accuracy_vs_gmacs", "Accuracy after training, and exactly how it was trained"),
    ("latency_vs_batch", "Latency per model, mode and batch"),
    ("memory_breakdown", None),
    ("by_layer_type", None),
    ("training_curves", None),
)


def _summary(sections: list[exercises.Section], frames: Frames) -> list:
    """The first screen: each exercise's answer in one or two sentences, then what the run
    resolves and whether its noise control passed."""
    items = [f"{s.title}: {s.summary or s.answer}" for s in sections if s.summary or s.answer]
    blocks: list = [Heading("Summary"), Bullets(tuple(items))] if items else [Heading("Summary")]
    resolves = exercises.resolution_text(frames)
    if resolves:
        blocks.append(Paragraph(resolves))
    control = frames.control
    if control is not None:
        headline = verdicts.control_headline(control)
        blocks.append(Paragraph(headline) if control.passed else Note(headline, "warning"))
    return blocks


def _folded(caption: str, table: pd.DataFrame) -> list:
    """A record table in one fold (rows ordered by model as measured), so that the page stays
    short and every row stays one click away; a table of a few rows stays open."""
    if len(table) <= 6:
        return [Table(caption, table)]
    return [Fold(f"{caption} ({len(table)} rows, {table['model'].nunique()} models)", (Table(caption, table),))]


def _figure(fig) -> Figure:
    return Figure(fig.title, fig.caption, fig.png, fig.svg)


def _measurements(frames: Frames, figs: dict) -> list:
    """The figures of the run with the record tables behind them."""
    made = {
        "accuracy_vs_gmacs": tables.accuracy_table(frames),
        "latency_vs_batch": tables.latency_table(frames),
        "memory_breakdown": tables.memory_table(frames),
    }
    captions = dict(_MEASURED)
    captions["memory_breakdown"] = tables.memory_caption(frames)
    blocks: list = []
    for stem, _ in _MEASURED:
        table = made.get(stem)
        if stem in figs:
            blocks += [Heading(figs[stem].title), _figure(figs[stem])]
        if table is not None and len(table):
            if stem not in figs:
                blocks.append(Heading(captions[stem]))
            blocks += _folded(captions[stem], table)
            if stem == "memory_breakdown":
                blocks.append(Paragraph(tables.MEMORY_PARTS))
    energy = tables.energy_table(frames)
    if len(energy):
        blocks += [Heading("Energy per image"), Paragraph(ENERGY_NOTE), *_folded("Energy per image", energy)]
    return blocks


def _section(section: exercises.Section, figs: dict) -> list:
    blocks: list = [Heading(section.title)]
    if section.answer:
        blocks.append(Note(section.answer, "answer"))
    if section.warning:
        blocks.append(Note(section.warning, "warning"))
    blocks.append(Paragraph(section.intro))
    if section.figure in figs:
        blocks.append(_figure(figs[section.figure]))
    blocks += [Table(caption, table) for caption, table in section.tables]
    if section.sentences:
        blocks.append(Bullets(tuple(section.sentences)))
    return blocks


def _failures(frames: Frames) -> list:
    blocks: list = [Heading("Records that are not ok")]
    if len(frames.failures):
        return [*blocks, Table("Every record whose status is not ok, with its reason", frames.failures)]
    return [*blocks, Paragraph("None: every record in these runs has status ok.")]


def build_document(frames: Frames, runs: Runs, figs: dict, extra: Iterable = ()) -> Document:
    """The whole report: summary and conditions first, then the overview, each exercise, the
    measurements, the records that are not ok, any ``extra`` blocks, and the glossary."""
    sections = exercises.sections(frames)
    blocks: list = _summary(sections, frames)
    blocks += [Heading("Conditions"), Bullets(runs.conditions)]
    blocks += [Heading("Overview"), Paragraph(OVERVIEW_INTRO),
               Table("Overview", tables.overview_table(frames))]  # fmt: skip
    for section in sections:
        blocks += _section(section, figs)
    blocks += _measurements(frames, figs)
    blocks += _failures(frames)
    blocks += list(extra)
    blocks += [Heading("Glossary"), Fold("Every term in one sense", (Table("Glossary", glossary_table()),))]
    return Document("cnnbench report", tuple(blocks))
