"""Ranges page: calibrated activation ranges, one layer's histogram with a clipping slider, weight channels."""

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, state

st.title("Ranges")

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
