"""Plotly figures and the graphviz DOT picture. Pure functions of engine results (no math of their own
beyond arranging numbers for display)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go


def finite(x):
    """inf SQNR (exact value) cannot be plotted: show it as a gap."""
    return None if x is None or (isinstance(x, float) and (math.isinf(x) or math.isnan(x))) else x


def layer_table(evaluation, previous=None) -> pd.DataFrame:
    prev = {l.name: l for l in previous.layers} if previous is not None else {}
    rows = []
    for l in evaluation.layers:
        p = prev.get(l.name)
        rows.append({"layer": l.name, "op": l.op, "precision": l.precision,
                     "sqnr_db": round(l.sqnr_db, 3) if math.isfinite(l.sqnr_db) else l.sqnr_db,
                     "prev_sqnr_db": (round(p.sqnr_db, 3) if math.isfinite(p.sqnr_db) else p.sqnr_db)
                     if p else None,
                     "cosine": round(l.cosine, 6), "max_abs": l.max_abs, "restored": l.restored})
    return pd.DataFrame(rows)


def sqnr_compare(after, before=None, after_name="this run", before_name="previous run") -> go.Figure:
    fig = go.Figure()
    names = [l.name for l in after]
    if before is not None:
        b = {l.name: l.sqnr_db for l in before}
        fig.add_bar(x=names, y=[finite(b.get(n)) for n in names], name=before_name, marker_color="#9aa5b1")
    fig.add_bar(x=names, y=[finite(l.sqnr_db) for l in after], name=after_name, marker_color="#2563eb")
    fig.update_layout(barmode="group", yaxis_title="SQNR (dB)", height=380, margin=dict(t=30, b=10),
                      legend=dict(orientation="h", y=1.1))
    return fig


def sqnr_difference(layers_a: list[dict], layers_b: list[dict], name_a: str, name_b: str) -> go.Figure:
    a = {l["name"]: l["sqnr_db"] for l in layers_a}
    b = {l["name"]: l["sqnr_db"] for l in layers_b}
    names = [l["name"] for l in layers_b if l["name"] in a]
    diffs = []
    for n in names:
        va, vb = finite(a[n]), finite(b[n])
        diffs.append(None if va is None or vb is None else vb - va)
    fig = go.Figure(go.Bar(x=names, y=diffs,
                           marker_color=["#16a34a" if (d or 0) >= 0 else "#dc2626" for d in diffs]))
    fig.update_layout(title=f"SQNR {name_b} − {name_a} (dB)", yaxis_title="Δ SQNR (dB)", height=360,
                      margin=dict(t=40, b=10))
    return fig


def ranges(df: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(x=df["layer"], y=df["max"], mode="lines+markers", name="max")
    fig.add_scatter(x=df["layer"], y=df["min"], mode="lines+markers", name="min")
    fig.add_bar(x=df["layer"], y=df["absmax"], name="absmax", opacity=0.35)
    fig.update_layout(height=380, yaxis_title="activation value", margin=dict(t=30, b=10),
                      legend=dict(orientation="h", y=1.1))
    return fig


def histogram(sample: np.ndarray, clip: float | None, name: str) -> go.Figure:
    fig = go.Figure(go.Histogram(x=sample, nbinsx=80, marker_color="#2563eb"))
    if clip is not None:
        for x in (-clip, clip):
            fig.add_vline(x=x, line_dash="dash", line_color="#dc2626")
    fig.update_layout(title=f"calibration sample of {name} ({len(sample)} values)", height=340,
                      yaxis_title="count", margin=dict(t=40, b=10))
    return fig


def weight_channels(w: np.ndarray, name: str) -> go.Figure:
    flat = w.reshape(w.shape[0], -1)
    ch = list(range(flat.shape[0]))
    fig = go.Figure()
    fig.add_bar(x=ch, y=flat.max(axis=1), name="max", marker_color="#16a34a")
    fig.add_bar(x=ch, y=flat.min(axis=1), name="min", marker_color="#dc2626")
    fig.update_layout(barmode="relative", title=f"{name}: per output channel min / max", height=340,
                      xaxis_title="output channel", margin=dict(t=40, b=10))
    return fig


def candidate_table(cands) -> pd.DataFrame:
    """The engine's candidates, one row each (the suggestion shown as the NodeConfig fields it sets)."""
    return pd.DataFrame([{"#": i, "kind": c.kind, "node": c.name,
                          "score": round(c.score, 4) if math.isfinite(c.score) else c.score,
                          "reason": c.reason, "suggested setting": json.dumps(c.suggestion, sort_keys=True)}
                         for i, c in enumerate(cands)],
                        columns=["#", "kind", "node", "score", "reason", "suggested setting"])


def _r(x, nd=3):
    return round(x, nd) if isinstance(x, float) and math.isfinite(x) else x


def diagnosis_table(diagnosis: dict, evaluation=None) -> pd.DataFrame:
    """Local (engine: fed with float inputs) next to propagated SQNR (engine: evaluation) per layer."""
    prop = {l.name: l for l in evaluation.layers} if evaluation is not None else {}
    rows = []
    for name, d in diagnosis.items():
        p = prop.get(name)
        rows.append({"layer": name, "local_sqnr_db": _r(d.local_sqnr_db),
                     "propagated_sqnr_db": _r(p.sqnr_db) if p is not None else None,
                     "saturation_%": _r(d.saturation * 100, 5), "scale_error": d.scale_error, "iops": d.iops,
                     "restored": bool(p.restored) if p is not None else None})
    return pd.DataFrame(rows)


def local_vs_propagated(df: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    fig.add_bar(x=df["layer"], y=[finite(v) for v in df["local_sqnr_db"]], name="local (this node's own error)",
                marker_color="#f59e0b")
    if df["propagated_sqnr_db"].notna().any():
        fig.add_bar(x=df["layer"], y=[finite(v) for v in df["propagated_sqnr_db"]],
                    name="propagated (what reaches it)", marker_color="#2563eb")
    fig.update_layout(barmode="group", yaxis_title="SQNR (dB)", height=380, margin=dict(t=30, b=10),
                      legend=dict(orientation="h", y=1.1))
    return fig


def weight_scale_kind(weight_scale, granularity: str) -> str:
    """Name what the engine's report holds: one scale, per output channel scales, or per input slice scales."""
    if weight_scale is None:
        return ""
    arr = np.asarray(weight_scale)
    if arr.ndim == 0 or arr.size == 1:
        return "one (layer-wise)"
    if granularity == "channel-wise":
        return f"per input slice ({arr.shape[0]} slices)"
    return f"per output channel ({arr.shape[0]})"


def structure_table(model, config, op_nodes: list[str], op_of: dict[str, str]) -> pd.DataFrame:
    """Per user node: granularity, how many integer-graph nodes its rewrite made, its kind of weight scale."""
    by_origin: dict[str, list] = {}
    for rep in model.reports.values():
        by_origin.setdefault(rep.origin, []).append(rep)
    rows = []
    for name in op_nodes:
        reps = by_origin.get(name, [])
        gran = config.get_node(name).granularity
        ws = next((r.weight_scale for r in reps if r.weight_scale is not None), None)
        rows.append({"node": name, "op": op_of[name], "granularity": gran,
                     "integer nodes": sum(len(r.int_nodes) for r in reps),
                     "weight scale": weight_scale_kind(ws, gran)})
    return pd.DataFrame(rows)


def top_channels(channel_absmax, k: int = 10) -> pd.DataFrame:
    """The k channels with the largest calibrated absmax (these set the layer's range)."""
    a = np.asarray(channel_absmax, dtype=np.float64)
    top = float(a.max()) if a.size else 0.0
    order = np.argsort(-a)[:k]
    return pd.DataFrame({"channel": order.astype(int), "absmax": a[order],
                         "share of layer absmax": (a[order] / top) if top > 0 else a[order] * 0})


def channel_absmax_bar(channel_absmax, name: str, highlight: list[int]) -> go.Figure:
    a = np.asarray(channel_absmax, dtype=np.float64)
    hl = set(highlight)
    fig = go.Figure(go.Bar(x=list(range(a.size)), y=a,
                           marker_color=["#dc2626" if i in hl else "#9aa5b1" for i in range(a.size)]))
    fig.update_layout(title=f"{name}: calibrated absmax per channel (red: top channels)", height=320,
                      xaxis_title="channel", yaxis_title="absmax", margin=dict(t=40, b=10))
    return fig


# ---------------------------------------------------------------- graphviz

_PALETTE = [(215, 48, 39), (252, 141, 89), (254, 224, 139), (145, 207, 96), (26, 152, 80)]  # bad -> good


def _color(t: float) -> str:
    t = min(max(t, 0.0), 1.0) * (len(_PALETTE) - 1)
    i = min(int(t), len(_PALETTE) - 2)
    f = t - i
    c = [round(a + (b - a) * f) for a, b in zip(_PALETTE[i], _PALETTE[i + 1])]
    return "#%02x%02x%02x" % tuple(c)


def _q(s: str) -> str:
    return json.dumps(s)


def graph_dot(graph, values: dict[str, float], metric: str, higher_is_better: bool = True,
              selected: str | None = None) -> str:
    """DOT of the original graph's op nodes (and its data inputs), filled by `values` (node -> number)."""
    finite_vals = [v for v in values.values() if v is not None and math.isfinite(v)]
    lo, hi = (min(finite_vals), max(finite_vals)) if finite_vals else (0.0, 1.0)
    lines = ["digraph G {", "rankdir=TB;", 'bgcolor="transparent";',
             'node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, fillcolor="#e5e7eb"];',
             'edge [color="#6b7280"];']
    keep = [n for n in graph.nodes.values() if n.op != "null" or n.name not in graph.params]
    names = {n.name for n in keep}
    for node in keep:
        if node.op == "null":
            lines.append(f'{_q(node.name)} [label={_q(node.name)}, shape=ellipse, fillcolor="#dbeafe"];')
            continue
        v = values.get(node.name)
        label = node.name.replace('"', '\\"') + "\\n" + node.op
        attrs = ""
        if v is not None:
            if math.isfinite(v):
                t = 0.5 if hi == lo else (v - lo) / (hi - lo)
                if not higher_is_better:
                    t = 1 - t
                attrs = f', fillcolor="{_color(t)}"'
                label += f"\\n{metric}={v:.4g}"
            else:
                attrs = f', fillcolor="{_color(1.0 if (v > 0) == higher_is_better else 0.0)}"'
                label += f"\\n{metric}={v}"
        if node.name == selected:
            attrs += ', penwidth=3, color="#111827"'
        lines.append(f'{_q(node.name)} [label="{label}"{attrs}];')
        for src in node.inputs:
            if src in names:
                lines.append(f"{_q(src)} -> {_q(node.name)};")
    lines.append("}")
    return "\n".join(lines)
