"""Ranges page: the engine's candidates (apply with undo), calibrated activation ranges, one layer's
histogram with a clipping slider and the channels that drive its range, weight channels."""

import json

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, state

# a page opened by its own URL can run before the entry script in a new session
state.ensure_state()
from mrt_core.errors import MRTError

st.title("Ranges")

msg = state.flash()
if msg:
    st.success(msg)

# ---------------------------------------------------------------- candidates (engine)
st.subheader("Candidates")
st.caption("Ranked by the engine from the calibration ranges and the last evaluation"
           + (" with local SQNR (diagnosed)." if state.diagnosis(st.session_state.mrt_last_eval_config) is not None
              else "; restore candidates use local SQNR once *Diagnose* ran on the Tune page."))
try:
    cands = state.candidates()
except MRTError as exc:
    state.show_error(exc)
    cands = []
cand_df = charts.candidate_table(cands)
st.dataframe(cand_df, hide_index=True, width="stretch")
labels = {i: f"#{i} {c.kind}: {c.name} → {json.dumps(c.suggestion, sort_keys=True)}"
          for i, c in enumerate(cands)}
picked = st.multiselect("Candidates to apply", list(labels), format_func=labels.get, key="cand_pick")
a1, a2, _ = st.columns([1, 1, 4])
if a1.button("Apply", key="cand_apply", type="primary", disabled=not picked):
    try:
        new = state.config()
        for i in picked:
            new = new.with_node(cands[i].name, **cands[i].suggestion)
        if state.set_config(new):
            state.flash(f"Applied {len(picked)} suggestion(s): "
                        + ", ".join(f"`{cands[i].name}`" for i in picked)
                        + ". Press **Rerun** on the Tune page to see the effect (Undo reverts).")
        else:
            state.flash("The config already has these settings.")
        st.session_state.pop("cand_pick", None)
        st.rerun()
    except MRTError as exc:
        state.show_error(exc)
if a2.button("Undo", key="ranges_undo", disabled=not st.session_state.mrt_undo):
    state.undo()
    state.flash("Undone: the previous config is back.")
    st.rerun()

sess = state.session()
g, prep = sess.original, sess.prepared
feats = sess.features()

rows = []
for node in g.op_nodes():
    p = prep.value_of.get(node.name)
    if p in feats:
        f = feats[p]
        rows.append({"layer": node.name, "op": node.op, "min": f.min, "max": f.max, "absmax": f.absmax,
                     "mean": f.mean, "std": f.std})
df = pd.DataFrame(rows)
st.subheader("Activation ranges (calibration)")
st.plotly_chart(charts.ranges(df), width="stretch")
with st.expander("Table"):
    st.dataframe(df, hide_index=True, width="stretch")

st.subheader("Distribution of one layer")
layer = st.selectbox("Layer", list(df["layer"]), key="range_layer")
f = feats[prep.value_of[layer]]
sample = np.asarray(f.sample, dtype=np.float64)
top = float(max(f.absmax, 1e-12))
clip = st.slider("Clip at ± (share of absmax)", 0.05, 1.0, 1.0, 0.01, key="clip_share")
threshold = clip * top
clipped = float(np.mean(np.abs(sample) > threshold)) if sample.size else 0.0
c1, c2, c3 = st.columns(3)
c1.metric("Clip threshold", f"{threshold:.4g}")
c2.metric("Clipped share of the sample", f"{clipped * 100:.3f}%")
c3.metric("Sample size", f"{sample.size}")
st.plotly_chart(charts.histogram(sample, threshold if clip < 1.0 else None, layer), width="stretch")

st.markdown("**Outlier view: the channels that drive this layer's range**")
if f.channel_absmax is not None and np.asarray(f.channel_absmax).size > 1:
    k = st.slider("Top channels", 1, int(min(32, np.asarray(f.channel_absmax).size)),
                  int(min(8, np.asarray(f.channel_absmax).size)), key="outlier_k")
    topc = charts.top_channels(f.channel_absmax, k)
    o1, o2 = st.columns([1, 2])
    o1.dataframe(topc, hide_index=True, width="stretch")
    o2.plotly_chart(charts.channel_absmax_bar(f.channel_absmax, layer, list(topc["channel"])), width="stretch")
else:
    st.caption("This layer's output has no channel axis (calibration kept no per-channel absmax).")

st.subheader("Weights per output channel")
weighted = [n for n in state.op_nodes() if state.weight_of(n)]
if weighted:
    wnode = st.selectbox("Convolution / FullyConnected", weighted, key="range_weight_node")
    wname = state.weight_of(wnode)
    w = np.asarray(g.params[wname])
    st.caption(f"`{wname}` shape {tuple(w.shape)}")
    st.plotly_chart(charts.weight_channels(w, wname), width="stretch")
else:
    st.caption("This model has no Convolution / FullyConnected weights.")
