"""Graph page: the model coloured by a metric, the lineage of each node, and a node inspector."""

import math

import pandas as pd
import streamlit as st

from app import charts, state

# a page opened by its own URL can run before the entry script in a new session
state.ensure_state()
from mrt_core.errors import MRTError

st.title("Graph")

lo = state.loaded()
sess = lo.session
g, prep = sess.original, sess.prepared
ev = state.last_eval()
try:
    model = state.current_model()
except MRTError as exc:
    state.show_error(exc)
    st.stop()
feats = sess.features()
if state.eval_is_stale():
    st.info("The per-layer errors shown are from the last run; the config changed since (Rerun on Tune).")

layers = {l.name: l for l in ev.layers}
metric = st.radio("Colour by", ["SQNR (dB)", "precision (bits)", "absmax"], horizontal=True, key="graph_metric")
values = {}
for node in g.op_nodes():
    if metric.startswith("SQNR"):
        values[node.name] = layers[node.name].sqnr_db if node.name in layers else None
    elif metric.startswith("precision"):
        p = prep.value_of.get(node.name)
        values[node.name] = model.reports[p].precision if p in model.reports else None
    else:
        p = prep.value_of.get(node.name)
        values[node.name] = feats[p].absmax if p in feats else None

ops = state.op_nodes()
selected = st.session_state.get("inspect_node")
st.graphviz_chart(charts.graph_dot(g, values, metric.split(" ")[0], higher_is_better=metric.startswith("SQNR"),
                                   selected=selected), width="content")
st.caption("Grey: no value for this node (e.g. a Convolution folded into its BatchNorm). "
           "Green is better for SQNR, fewer bits are greener for precision.")

st.subheader("Lineage")
prepared_of: dict[str, list[str]] = {}
for p, orig in prep.origin.items():
    if prep.nodes[p].op != "null" or p in g.input_names:
        prepared_of.setdefault(orig, []).append(p)
rows = []
for node in g.op_nodes():
    preps = prepared_of.get(node.name, [])
    ints = [i for p in preps if p in model.reports for i in model.reports[p].int_nodes]
    rows.append({"original": node.name, "op": node.op, "prepared": ", ".join(preps),
                 "value node": prep.value_of.get(node.name, "(folded)"), "integer nodes": ", ".join(ints)})
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

st.subheader("Node inspector")
name = st.selectbox("Node", ops, key="inspect_node")
node = g.nodes[name]
c1, c2 = st.columns(2)
with c1:
    st.markdown(f"**{name}** — `{node.op}`; inputs: " + ", ".join(f"`{i}`" for i in node.inputs))
    downstream = [n for n in g.descendants(name) if g.nodes[n].op != "null"]
    st.caption(f"A change here re-executes this node and the {len(downstream)} op nodes downstream of it; "
               f"everything upstream comes from the cache.")
    st.markdown("**Attributes**")
    st.json(node.attrs or {})
    st.markdown("**Config**")
    cfg = state.config().get_node(name)
    st.json({"granularity": cfg.granularity, "step": cfg.step, "quant_type": cfg.quant_type,
             "optimizor": cfg.optimizor, "restore": cfg.restore})
    w = state.weight_of(name)
    if w:
        st.markdown(f"weight `{w}` {tuple(g.params[w].shape)}: quant_type "
                    f"`{state.config().get_node(w).quant_type}`")
with c2:
    p = prep.value_of.get(name)
    st.markdown("**Calibration features**")
    if p in feats:
        f = feats[p]
        st.json({"prepared node": p, "min": f.min, "max": f.max, "absmax": f.absmax, "mean": f.mean,
                 "std": f.std, "channels": None if f.channel_absmax is None else int(len(f.channel_absmax)),
                 "sample size": int(len(f.sample))})
    else:
        st.caption("This node's value does not exist in the prepared graph (folded).")
    st.markdown("**Quantization / error**")
    reps = [model.reports[x] for x in prepared_of.get(name, []) if x in model.reports]
    if reps:
        st.dataframe(pd.DataFrame([{"prepared": r.name, "op": r.op, "precision": r.precision, "scale": r.scale,
                                    "scale_error": r.scale_error, "restored": r.restored,
                                    "int nodes": ", ".join(r.int_nodes)} for r in reps]), hide_index=True)
    if name in layers:
        l = layers[name]
        st.json({"precision": l.precision, "sqnr_db": l.sqnr_db if math.isfinite(l.sqnr_db) else str(l.sqnr_db),
                 "cosine": l.cosine, "max_abs": l.max_abs, "restored": l.restored})
