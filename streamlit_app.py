"""MRT Studio: post-training integer quantization of MXNet models, on top of mrt_core."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import streamlit as st  # noqa: E402

from mrt_core.errors import MRTError  # noqa: E402

st.set_page_config(page_title="MRT Studio", layout="wide")

from app import state  # noqa: E402

pages = [
    st.Page("pages/model.py", title="Model", icon=":material/deployed_code:", default=True),
    st.Page("pages/graph.py", title="Graph", icon=":material/account_tree:"),
    st.Page("pages/ranges.py", title="Ranges", icon=":material/bar_chart:"),
    st.Page("pages/tune.py", title="Tune", icon=":material/tune:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
]
nav = st.navigation(pages)

try:
    state.ensure_state()
except MRTError as exc:
    st.error(f"The default model could not be loaded: {exc}")
    st.stop()

summary = st.sidebar.empty()  # filled after the page ran, so it shows what the page just did
nav.run()

with summary.container():
    lo = state.loaded()
    ev = state.last_eval()
    st.caption("MRT Studio")
    st.markdown(f"**Model:** `{lo.label}`")
    st.markdown(f"**Float top-1:** {ev.float_top1:.2f}%  \n**Quant top-1:** {ev.quant_top1:.2f}%")
    st.markdown(f"**Nodes configured:** {len(state.config())}")
