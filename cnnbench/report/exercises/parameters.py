"""Exercise 4 in words: where the parameters sit, and how NiN and GoogLeNet cut them (the
finding: ``analysis.parameters``). The per-model numbers are the table's; the sentences say the
pattern once per head kind, naming its models."""

from __future__ import annotations

from ...analysis.frames import Frames
from ...analysis.parameters import CONV_BODY, FC_HEAVY, NO_FC, Parameters, ParameterSplit
from ...analysis.parameters import parameters as find_parameters
from ..fmt import fmt, percent
from .common import Section

_TITLE = "Exercise 4 — parameter sizes, and how NiN and GoogLeNet cut them"
_INTRO = ("Parameters by where they sit, counted from each model's records at its own input (fp32 "
          "bytes: 4 per parameter).")  # fmt: skip


def exercise4(frames: Frames) -> Section:
    """Exercise 4: where the parameters sit, and how NiN and GoogLeNet cut them."""
    return section(find_parameters(frames))


def section(finding: Parameters) -> Section:
    section = Section(_TITLE, _INTRO)
    top = finding.top
    if top is None:
        section.sentences.append("No model in these runs has both params and flops records.")
        return section
    section.add_table("Where the parameters are", [_row(m, top.model) for m in finding.models])
    for kind, sentence in ((FC_HEAVY, _fc_heavy), (NO_FC, _no_fc),
                           (CONV_BODY, _conv_body)):  # fmt: skip
        if group := finding.of_kind(kind):
            section.sentences.append(sentence(group, top))
    section.answer = _answer(finding, top)
    section.summary = _summary(finding, top)
    return section


def _row(m: ParameterSplit, heaviest: str) -> dict:
    return {
        "model": m.model, "input": m.image_size_px, "parameters": fmt(m.params),
        "MiB (fp32)": fmt(m.param_bytes, 1, scale=2**20), "in convolutions": fmt(m.conv_params),
        "in fully connected": fmt(m.linear_params),
        "% fully connected": percent(m.linear_share, suffix=""),
        "% in 1x1 convolutions": percent(m.one_by_one_share, suffix=""),
        "largest layer": f"{m.largest_name} ({m.largest_layer}, {fmt(m.largest_params)})",
        "largest layer %": percent(m.largest_share, suffix=""),
        "classifier": f"{m.head_name} ({m.head_layer}, {fmt(m.head_params)})",
        "global average pooling": "yes" if m.global_pool else "no",
        f"x fewer than {heaviest}": fmt(m.times_fewer_than_heaviest, 1),
    }  # fmt: skip


def _names(group) -> str:
    """'a', 'a and b', 'a, b and c'."""
    names = [m.model for m in group]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _span(values, form: str, unit: str = "") -> str:
    """'92%' or '92% to 99%': the smallest and largest of ``values`` in ``form``."""
    lo, hi = format(min(values), form) + unit, format(max(values), form) + unit
    return lo if lo == hi else f"{lo} to {hi}"


def _fc_heavy(group, top) -> str:
    one = len(group) == 1
    of_whom = "them" if one else "a model's parameters"
    return (
        f"{_names(group)} hold{'s' if one else ''} most of {'its' if one else 'their'} parameters "
        f"in fully connected layers ({_span([100 * m.linear_share for m in group], '.0f', '%')}); "
        "the largest layer alone holds "
        f"{_span([100 * m.largest_share for m in group], '.0f', '%')} of {of_whom}."
    )


def _no_fc(group, top) -> str:
    one = len(group) == 1
    whose = "its" if one else "each one's"
    return (
        f"{_names(group)} ha{'s' if one else 've'} no fully connected layer at all: {whose} last "
        "convolution outputs one channel per class (the classifier column) and global average "
        "pooling turns those maps into logits; 1x1 convolutions hold "
        f"{_span([100 * m.one_by_one_share for m in group], '.0f', '%')} of the parameters, and "
        f"{'it has' if one else 'they have'} "
        f"{_span([m.times_fewer_than_heaviest for m in group], '.0f', 'x')} fewer parameters "
        f"than {top.model}."
    )


def _conv_body(group, top) -> str:
    one = len(group) == 1
    pooled = " after global average pooling" if all(m.global_pool for m in group) else ""
    return (
        f"{_names(group)} keep{'s' if one else ''} "
        f"{_span([100 * (1 - m.linear_share) for m in group], '.0f', '%')} of "
        f"{'its' if one else 'their'} parameters in convolutions; the classifier{pooled} has only "
        f"{_span([m.head_params for m in group], ',')} parameters. 1x1 convolutions hold "
        f"{_span([100 * m.one_by_one_share for m in group], '.0f', '%')} of the parameters (they "
        "reduce channels before the wider kernels), and "
        f"{'the model has' if one else 'these models have'} "
        f"{_span([m.times_fewer_than_heaviest for m in group], '.1f', 'x')} fewer parameters "
        f"than {top.model}."
    )


def _answer(finding: Parameters, top: ParameterSplit) -> str:
    answer = (f"{top.model} holds {top.params / 1e6:.1f}M parameters, "
              f"{100 * top.linear_share:.0f}% of them in fully connected layers.")  # fmt: skip
    if pooled := finding.pooled:
        cut = ", ".join(
            f"{m.model} has {m.params / 1e6:.2f}M ({m.times_fewer_than_heaviest:.0f}x fewer)"
            for m in pooled[:3]
        )
        answer += (f" Global average pooling replaces that head: {cut}, with 1x1 convolutions "
                   "reducing channels before the wider kernels.")  # fmt: skip
    return answer


def _summary(finding: Parameters, top: ParameterSplit) -> str:
    text = (f"{top.model} holds {top.params / 1e6:.1f}M parameters, "
            f"{100 * top.linear_share:.0f}% in fully connected layers")  # fmt: skip
    pooled = finding.pooled
    if not pooled:
        return text + "."
    names = ", ".join(m.model for m in pooled[:3])
    more = f" and {len(pooled) - 3} more" if len(pooled) > 3 else ""
    fewer = _span([m.times_fewer_than_heaviest for m in pooled], ".1f", "x")
    return (
        f"{text}; {len(pooled)} model{'s' if len(pooled) > 1 else ''} with global average "
        f"pooling instead ({names}{more}) hold{'s' if len(pooled) == 1 else ''} {fewer} fewer."
    )
