"""Exercise 5 in words: what GoogLeNet and AlexNet ask of an accelerator, per image and per
layer, read from :func:`cnnbench.analysis.computation.computation`'s finding."""

from __future__ import annotations

from ...analysis import computation as analysis
from ...analysis.computation import DATASHEET_PEAKS, Computation, FactsRow, Pair
from ...analysis.frames import Frames
from ..fmt import MISSING, fmt, percent
from .common import Section, _ratio

__all__ = ["DATASHEET_PEAKS", "exercise5"]  # DATASHEET_PEAKS: re-exported for common.py's users

MiB = 2**20
NO_FACTS = "No model in these runs has both params and flops records."


def exercise5(frames: Frames) -> Section:
    """Exercise 5: what GoogLeNet and AlexNet ask of an accelerator, per image and per layer, at
    the chapter's sizes and at equal resolution."""
    return _section(analysis.computation(frames))


def _intro(c: Computation) -> str:
    models = " and ".join(c.batch_models)
    if len(c.batches) > 1:
        which = (f"at batch 1 and at batch {c.batches[-1]} (the largest batch this run measured "
                 f"{models} at, latency or memory records)")  # fmt: skip
    else:
        which = f"at batch 1 (this run measured {models or 'no model'} at no larger batch)"
    return (
        "Per image, forward pass, fp32, at each model's own input and — where the run counted it "
        f"— at equal resolution ({c.equal_resolution}x{c.equal_resolution}). MACs from fvcore (one "
        "fused multiply-add = 1); FLOPs = 2 x MACs. Forward outputs per image: every counted "
        f"layer's output, summed. Bytes moved per image {which}: each layer reads its input and weights and "
        "writes its output (weights read once per batch). Arithmetic intensity = FLOPs / bytes "
        "moved. Working set of a layer = its input + output + weights."
    )


def _table_row(row: FactsRow, batches: tuple[int, ...]) -> dict:
    which = "equal resolution" if row.equal_resolution else "own"
    out = {"model": row.model, "input": f"{row.image_size} ({which})", "GMACs": fmt(row.gmacs, 3),
           "parameter MiB": fmt(row.param_bytes, 1, scale=MiB),
           "forward outputs per image MiB": fmt(row.forward_output_bytes, 2, scale=MiB)}  # fmt: skip
    for b, moved, intensity in zip(batches, row.bytes_moved, row.flop_per_byte, strict=True):
        out[f"MiB moved b{b}"] = fmt(moved, 1, scale=MiB)
        out[f"FLOP/byte b{b}"] = fmt(intensity, 1)
    out["largest working set"] = f"{row.working_set_layer} {fmt(row.working_set_bytes, 1, scale=MiB)} MiB"
    out["% MACs in 1x1 conv"] = percent(row.one_by_one_mac_share, suffix="")
    out["% MACs in conv"] = percent(row.conv_mac_share, suffix="")
    return out


def _layer_rows(c: Computation) -> list[dict]:
    return [{
        "model": lay.model, "input": lay.image_size, "layer": lay.name, "type": lay.layer_type,
        "kernel": lay.kernel or "", "MMACs": fmt(lay.macs, 1, scale=1e6),
        "KiB moved (b1)": fmt(lay.working_set_bytes, 1, scale=1024),
        "FLOP/byte (b1)": MISSING if lay.flop_per_byte is None else fmt(lay.flop_per_byte, 1),
    } for lay in c.costly_layers]  # fmt: skip


def _label(p: Pair) -> str:
    if p.equal_resolution:
        return f"at equal resolution ({p.alexnet.image_size}x{p.alexnet.image_size})"
    return "at the chapter's sizes"


def _sizes(p: Pair) -> str:
    a, g = p.alexnet, p.googlenet
    return f"googlenet at {g.image_size}x{g.image_size}, alexnet at {a.image_size}x{a.image_size}"


def _computation(pairs: tuple[Pair, ...]) -> str:
    parts = []
    for p in pairs:
        a, g = p.alexnet.gmacs, p.googlenet.gmacs
        where = _label(p) + ("" if p.equal_resolution else f" ({_sizes(p)})")
        theirs = f"'s ({a:.3f})" if g >= a else f" ({a:.3f})"
        parts.append(f"{where} googlenet needs {g:.3f} GMACs per image, {_ratio(g, a)} alexnet{theirs}")
    return f"Computation: {'; '.join(parts)}: the amount of computation an accelerator must supply per image."  # fmt: skip


def _memory(pairs: tuple[Pair, ...]) -> str:
    outputs = "; ".join(
        f"{_label(p)} {p.alexnet.forward_output_bytes / MiB:.2f} MiB for alexnet and "
        f"{p.googlenet.forward_output_bytes / MiB:.2f} MiB for googlenet ({p.output_ratio:.1f}x), "
        f"outweighing the weights from batch {p.alexnet.crossover_batch} and {p.googlenet.crossover_batch}"
        for p in pairs
    )  # fmt: skip
    a0, g0 = pairs[0].alexnet, pairs[0].googlenet
    return (f"Memory size: alexnet's weights take {a0.param_bytes / MiB:.0f} MiB against googlenet's "
            f"{g0.param_bytes / MiB:.0f} MiB, while their forward outputs per image are: {outputs}: "
            "googlenet's memory need is set by batch size and resolution rather than by its weights.")  # fmt: skip


def _per_batch(values: tuple[float, ...], batches: tuple[int, ...]) -> str:
    """'9.7 FLOPs per byte moved at batch 1 and 253.7 at batch 128' (one batch: the first half)."""
    head = f"{values[0]:.1f} FLOPs per byte moved at batch {batches[0]}"
    return head + "".join(f" and {v:.1f} at batch {b}" for v, b in zip(values[1:], batches[1:], strict=True))  # fmt: skip


def _bandwidth(c: Computation) -> str:
    parts = "; ".join(
        f"{_label(p)} alexnet does {_per_batch(p.alexnet.flop_per_byte, c.batches)}, googlenet "
        + " and ".join(f"{v:.1f}" for v in p.googlenet.flop_per_byte)
        for p in c.pairs
    )
    s = c.sheet
    return (f"Memory bandwidth: {parts}. The {s.part} data sheet gives {s.fp32_tflops:.0f} TFLOP/s fp32 "
            f"and {s.tb_per_s} TB/s, a ridge point of {s.ridge_fp32:.0f} FLOP/byte (bf16 tensor cores: "
            f"{s.ridge_bf16:.0f}); below it a layer waits on memory.")  # fmt: skip


def _cache(pairs: tuple[Pair, ...]) -> str:
    parts = "; ".join(
        f"{_label(p)} {p.alexnet.working_set_layer} in alexnet ({p.alexnet.working_set_bytes / MiB:.1f} MiB) "
        f"and {p.googlenet.working_set_layer} in googlenet ({p.googlenet.working_set_bytes / MiB:.1f} MiB)"
        for p in pairs
    )  # fmt: skip
    return (f"Cache size: the largest single-layer working set is, {parts}: an on-chip buffer of "
            "that size keeps a whole layer resident.")  # fmt: skip


def _special(c: Computation) -> str:
    a0, g0 = c.pairs[0].alexnet, c.pairs[0].googlenet
    text = (f"Specialized operations: {100 * g0.conv_mac_share:.0f}% of googlenet's MACs are "
            f"convolutions and {100 * g0.one_by_one_mac_share:.0f}% are 1x1 convolutions, which are "
            f"plain matrix multiplications (alexnet: {100 * a0.conv_mac_share:.0f}% convolutions, "
            f"{100 * a0.one_by_one_mac_share:.0f}% 1x1) — matrix units serve both; googlenet's many "
            "small branches, concatenations and 3x3/1 max-pools add memory traffic with no MACs.")  # fmt: skip
    if c.outside:
        g, a = c.outside
        text += (f" Measured (roofline profile): {100 * g.share:.0f}% of googlenet's forward time at "
                 f"batch {g.batch} is spent outside convolution and linear layers, against "
                 f"{100 * a.share:.0f}% for alexnet at batch {a.batch}.")  # fmt: skip
    return text


def _answer(c: Computation) -> str:
    chapter = c.pairs[0]
    equal = next((p for p in c.pairs if p.equal_resolution), None)
    if equal:
        a, g = equal.alexnet, equal.googlenet
        text = (f"At equal resolution ({a.image_size}x{a.image_size}) googlenet needs "
                f"{equal.mac_ratio:.2f}x alexnet's MACs ({g.gmacs:.3f} against {a.gmacs:.3f} GMACs) "
                f"and {equal.output_ratio:.1f}x its forward outputs per image, at "
                f"{g.flop_per_byte[0]:.1f} against {a.flop_per_byte[0]:.1f} FLOP/byte at batch 1; the "
                f"chapter's comparison (googlenet at {chapter.googlenet.image_size}, alexnet at "
                f"{chapter.alexnet.image_size}: {1 / chapter.mac_ratio:.1f}x fewer MACs) owes its "
                "saving to the smaller input.")  # fmt: skip
    else:
        a, g = chapter.alexnet, chapter.googlenet
        text = (f"At the chapter's sizes googlenet ({g.image_size}x{g.image_size}) needs "
                f"{g.gmacs:.3f} GMACs per image against alexnet's {a.gmacs:.3f} "
                f"({a.image_size}x{a.image_size}) and {chapter.output_ratio:.1f}x its forward "
                "outputs per image; these runs counted no equal-resolution pair.")  # fmt: skip
    if c.outside:
        g_out, a_out = c.outside
        text += (f" Measured, {100 * g_out.share:.0f}% of googlenet's forward time goes outside "
                 f"convolution and linear layers against {100 * a_out.share:.0f}% for alexnet (one "
                 "profile each, no interval): time that fused and specialised operations "
                 "(concatenation, pooling, small kernels) could take back.")  # fmt: skip
    return text


def _macs_against(g: FactsRow, a: FactsRow) -> str:
    """googlenet's MACs per image against alexnet's: '1.60x alexnet's MACs' / '3.4x fewer MACs than alexnet'."""
    if g.gmacs < a.gmacs:
        return f"{a.gmacs / g.gmacs:.1f}x fewer MACs per image than alexnet"
    return f"{g.gmacs / a.gmacs:.2f}x alexnet's MACs per image"


def _summary(c: Computation) -> str:
    """The key numbers for the first screen: googlenet's MACs against alexnet's at each pair of
    inputs, and the measured time outside conv/linear layers."""
    parts = []
    for p in c.pairs:
        g, a = p.googlenet, p.alexnet
        where = (f"at equal resolution ({a.image_size}x{a.image_size})" if p.equal_resolution else
                 f"at the chapter's sizes ({g.image_size} against {a.image_size})")  # fmt: skip
        parts.append(f"{_macs_against(g, a)} {where}")
    text = f"googlenet needs {' and '.join(parts)}."
    if c.outside:
        g_out, a_out = c.outside
        text += (f" Measured, {100 * g_out.share:.0f}% of its forward time goes outside "
                 f"convolution and linear layers against {100 * a_out.share:.0f}% for alexnet.")  # fmt: skip
    return text


def _section(c: Computation) -> Section:
    section = Section(
        "Exercise 5 — computation of GoogLeNet vs AlexNet, and what it asks of an accelerator",
        _intro(c),
    )
    if not c.rows:
        section.sentences.append(NO_FACTS)
        return section
    section.add_table("Computation, memory and traffic per image", [_table_row(r, c.batches) for r in c.rows])
    section.add_table("The six costliest layers of each model at its own input, batch 1", _layer_rows(c))
    if not c.pairs:
        section.sentences.append(
            f"The comparison needs both alexnet and googlenet; these runs lack {', '.join(c.missing)}."
        )
        return section
    section.sentences += [_computation(c.pairs), _memory(c.pairs), _bandwidth(c), _cache(c.pairs), _special(c)]
    section.answer, section.summary = _answer(c), _summary(c)
    return section
