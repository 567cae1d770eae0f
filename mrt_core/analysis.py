"""Diagnosis on top of a Session: local vs propagated error, saturation, IOPs cost, candidate discovery."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import quant_math as qm
from .float_exec import run_float
from .int_exec import run_int
from .ops import iops
from .quantize import QuantizedModel

REQUANT_OPS = ("cvm_right_shift", "cvm_left_shift", "cvm_clip")


@dataclass
class LayerDiagnosis:
    name: str                 # the user's node
    local_sqnr_db: float      # this node quantized, fed with the float model's inputs
    saturation: float         # share of values clipped at a precision bound in this node's requantizations
    scale_error: float        # worst relative error of its frac * 2^exp approximations
    iops: int


def _members(session) -> dict[str, list[str]]:
    """Original op node -> the prepared nodes made from it."""
    out: dict[str, list[str]] = {}
    for name, node in session.prepared.nodes.items():
        if node.op != "null":
            out.setdefault(session.prepared.origin.get(name, name), []).append(name)
    return out


def _as_int(value: np.ndarray, qt) -> np.ndarray:
    if qt.is_float:
        return value.astype(np.float32)
    bound = qm.int_range(qt.precision)
    return np.clip(qm.round_half_away(value.astype(np.float64) * qt.scale), -bound, bound).astype(np.int32)


def diagnose(session, model: QuantizedModel, max_samples: int = 256) -> dict[str, LayerDiagnosis]:
    """Per original node: local error, saturation, scale error and IOPs, on the first evaluation samples."""
    from .session import ErrorStats
    prep = session.prepared
    x = session.dataset.x_test[:max_samples]
    fvals = {n: v.asnumpy() for n, v in run_float(prep, {session.input_name: x}, keep="all").items()}
    cvm = [n for n, node in model.graph.nodes.items() if node.op in REQUANT_OPS]
    ivals = run_int(model, {session.input_name: x}, keep=cvm)
    shapes = {n: v.shape for n, v in run_int(model, {session.input_name: x[:1]}, keep="all").items()}
    groups = _members(session)
    out = {}
    for orig, value_node in prep.value_of.items():
        if prep.nodes[value_node].op == "null":
            continue
        members = groups[prep.origin.get(value_node, value_node)]  # the user's node whose rewrite holds it
        member_set = set(members)
        inputs = {i for m in members for i in prep.nodes[m].inputs if i not in member_set and i not in prep.params}
        overrides = {model.values[i].name: _as_int(fvals[i], model.values[i]) for i in inputs}
        for n in (n for m in members for n in model.reports[m].int_nodes):
            node = model.graph.nodes[n]
            if node.op == "mrt_dequantize":  # a restored node sees the float inputs themselves
                source = next((i for i in inputs if model.values[i].name == node.inputs[0]), None)
                if source is not None:
                    overrides[n] = fvals[source].astype(np.float32)
        target = model.values[value_node]
        got = run_int(model, {}, keep=[target.name], overrides=overrides)[target.name]
        deq = got if target.is_float else got / target.scale + target.offset
        local = ErrorStats().add(fvals[value_node], deq).sqnr_db
        int_nodes = [n for m in members for n in model.reports[m].int_nodes]
        clipped = 0.0
        for n in int_nodes:
            if n in ivals:
                bound = qm.int_range(int(model.graph.nodes[n].attr("precision")))
                clipped = max(clipped, float(np.mean(np.abs(ivals[n]) >= bound)))
        cost = 0
        for n in int_nodes:
            node = model.graph.nodes[n]
            if node.op != "null":
                cost += iops(node, shapes[n], [shapes[i] for i in node.inputs], model.graph.params)
        out[orig] = LayerDiagnosis(orig, local, clipped, max(model.reports[m].scale_error for m in members), cost)
    return out


def total_iops(session, model: QuantizedModel) -> int:
    x = session.dataset.x_test[:1]
    shapes = {n: v.shape for n, v in run_int(model, {session.input_name: x}, keep="all").items()}
    return int(sum(iops(node, shapes[n], [shapes[i] for i in node.inputs], model.graph.params)
                   for n, node in model.graph.nodes.items() if node.op != "null"))


@dataclass
class Candidate:
    kind: str                 # "zero-point" | "channel-wise" | "restore"
    name: str                 # the node (or weight) to configure, as the user's model names it
    score: float              # what the rank is by (higher = more worth trying)
    reason: str
    suggestion: dict = field(default_factory=dict)


def _spread(values: np.ndarray | None) -> float:
    """max / median of per-channel absmax: 1 for balanced channels, large when a few channels set the range."""
    if values is None or values.size < 2:
        return 1.0
    med = float(np.median(values))
    top = float(values.max())
    return top / med if med > 0 else (float("inf") if top > 0 else 1.0)


def candidates(session, evaluation=None, diagnosis: dict | None = None, top: int = 10) -> list[Candidate]:
    """The design document's Step 1, automated: nodes worth a zero point, a channel split, or a restore."""
    prep, feats = session.prepared, session.features()
    inverse: dict[str, str] = {}
    for o, p in prep.value_of.items():  # the user's node holding a value (a dropped Dropout shares its input's)
        if p not in inverse or o == p:
            inverse[p] = o
    out: list[Candidate] = []
    for node in prep.op_nodes():
        if node.op not in ("Convolution", "FullyConnected"):
            continue
        x, w_name = node.inputs[0], node.inputs[1]
        orig_conv = prep.origin.get(node.name, node.name)
        f = feats[x]
        if f.absmax > 0:
            unused = 1 - (f.max - f.min) / (2 * f.absmax)
            owner = inverse.get(x)
            # graph inputs are quantized at Input_precision as given; a zero point there adds nothing
            if owner is not None and unused > 0.2 and x not in prep.input_names:
                out.append(Candidate("zero-point", owner, unused,
                                     f"input of {orig_conv} spans [{f.min:.3g}, {f.max:.3g}]: {unused:.0%} of the "
                                     f"symmetric range is never used", {"quant_type": "UniformAffine"}))
        w = prep.params[w_name]
        w_orig = prep.origin.get(w_name, w_name)
        wmin, wmax = float(w.min()), float(w.max())
        wabs = max(abs(wmin), abs(wmax))
        if wabs > 0:
            unused = 1 - (wmax - wmin) / (2 * wabs)
            if unused > 0.2:
                out.append(Candidate("zero-point", w_orig, unused,
                                     f"weight spans [{wmin:.3g}, {wmax:.3g}]: {unused:.0%} of the symmetric range "
                                     f"is unused", {"quant_type": "UniformAffine"}))
        w_spread = _spread(np.abs(w.reshape(w.shape[0], -1)).max(axis=1))
        x_spread = _spread(f.channel_absmax)
        groups = int(node.attr("num_group", 1)) if node.op == "Convolution" else 1
        if w_spread >= x_spread and w_spread > 2:
            gran = "group-wise" if groups > 1 else "output-channel-wise"
            out.append(Candidate("channel-wise", orig_conv, w_spread,
                                 f"output channels' weight absmax differ up to {w_spread:.1f}x the median: one scale "
                                 f"rounds the small channels away; {gran} weight scales keep them "
                                 f"(no extra IOPs but a per-channel multiply)", {"granularity": gran}))
        elif x_spread > 2:
            out.append(Candidate("channel-wise", orig_conv, x_spread,
                                 f"input channels' absmax differ up to {x_spread:.1f}x the median: MRT's input-channel "
                                 f"split gives each slice its own scale (raises IOPs)",
                                 {"granularity": "channel-wise", "step": max(1, (f.channel_absmax.size or 1) // 4)}))
    if evaluation is not None:
        local = {k: d.local_sqnr_db for k, d in (diagnosis or {}).items()}
        rows = [(l.name, local.get(l.name, l.sqnr_db), l.sqnr_db) for l in evaluation.layers if not l.restored]
        rows.sort(key=lambda r: r[1])
        for name, loc, prop in rows[:3]:
            if np.isfinite(loc):
                out.append(Candidate("restore", name, -loc,
                                     f"local SQNR {loc:.1f} dB (propagated {prop:.1f} dB): restoring it shows how much "
                                     f"of the model's loss it causes", {"restore": True}))
    out.sort(key=lambda c: (c.kind, -c.score))
    by_kind: dict[str, list[Candidate]] = {}
    for c in out:
        by_kind.setdefault(c.kind, []).append(c)
    return [c for cs in by_kind.values() for c in cs[:top]]
