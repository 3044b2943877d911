"""What every exercise section shares: the Section type, the run's resolution paragraph."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from ...analysis.computation import DATASHEET_PEAKS
from ...analysis.frames import Frames


__all__ = ["DATASHEET_PEAKS", "Section", "resolution_text"]




@dataclass
class Section:
    title: str
    intro: str
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)
    sentences: list[str] = field(default_factory=list)
    figure: str | None = None  # stem of the figure that belongs to it (figures.py)
    answer: str = ""  # one to three sentences that answer the exercise, citing its numbers
    summary: str = ""  # one or two sentences for the report's first screen: key numbers, verdicts
    warning: str = ""  # what makes the section's comparisons untrustworthy, if anything

    def add_table(self, caption: str, rows: list[dict], empty: str | None = None) -> None:
        """A table of ``rows``; when there are none, the sentence ``empty`` (if given) instead."""
        if rows:
            self.tables.append((caption, pd.DataFrame(rows)))
        elif empty:
            self.sentences.append(empty)


def _ratio(x: float, y: float) -> str:
    """x against y in words: '3.4x fewer than' / '1.60x'."""
    return f"{y / x:.1f}x fewer than" if x < y else f"{x / y:.2f}x"


def resolution_text(frames: Frames) -> str:
    """What the run's latencies resolve, per mode and batch, in one paragraph ('' without
    latencies measured in rounds)."""
    noise = frames.noise
    if not noise.by_key:
        return ""
    keys = sorted(noise.by_key, key=lambda k: (k[0] != "inference", k[1]))
    parts = []
    for mode, batch in keys:
        res = noise.by_key[(mode, batch)]
        floor = frames.floor(mode, batch)
        text = (f"{mode} b{batch}: {100 * res.callable:.1f}% (a {100 * res.detectable:.1f}% change "
                f"is called 80% of the time; {noise.rounds[(mode, batch)]} rounds)")  # fmt: skip
        if floor > res.callable:
            text += f", raised to {100 * floor:.1f}% by the noise control" if floor != float("inf") else ", nothing: the noise control has no interval"  # fmt: skip
        parts.append(text)
    how = ("paired round by round (one run, interleaved rounds)" if noise.paired else
           "unpaired (shards or a resumed run: their rounds did not run side by side)")  # fmt: skip
    text = (f"What this run resolves: the smallest latency change it calls between two models, "
            f"{how} — {'; '.join(parts)}. A smaller difference is 'not resolved' everywhere in "
            "this report.")
    mem = frames.memory_noise
    if mem is not None:
        diffs = ", ".join(f"{100 * math.expm1(d):+.1f}%" for d in mem.log_differences)
        text += (f" Peak memory is measured once per unit: the identical pair (googlenet_ls, "
                 f"googlenet) differs by {diffs}, so memory changes within ±{100 * mem.threshold:.0f}% "
                 "are not resolved.")  # fmt: skip
    return text


def _no_facts(section: Section, frames: Frames) -> bool:
    if not frames.facts:
        section.sentences.append("No model in these runs has both params and flops records.")
    return not frames.facts

