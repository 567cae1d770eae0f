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
