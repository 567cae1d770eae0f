"""Model page: pick a sample model or upload one (symbol JSON + params + .npz dataset)."""

import pandas as pd
import streamlit as st

from app import state

# a page opened by its own URL can run before the entry script in a new session
state.ensure_state()
from mrt_core.errors import MRTError

st.title("Model")

lo = state.loaded()
names = list(state.SAMPLES)

left, right = st.columns([1, 1])
with left:
    st.subheader("Sample models")
    current = lo.label if lo.source.get("kind") == "sample" else None
    choice = st.selectbox("Sample model", names, index=names.index(current) if current in names else 0,
                          key="sample_choice")
    if st.button("Load sample", key="load_sample", type="primary"):
        try:
            with st.spinner(f"Loading and calibrating {choice}…"):
                state.use_sample(choice)
            st.success(f"Loaded {choice}")
        except MRTError as exc:
            state.show_error(exc)

with right:
    st.subheader("Upload a model")
    sym = st.file_uploader("Symbol JSON (…-symbol.json)", type=["json"], key="up_symbol")
    par = st.file_uploader("Params (….params)", type=["params"], key="up_params")
    npz = st.file_uploader("Dataset (.npz with x_calib, x_test, y_test)", type=["npz"], key="up_npz")
    name = st.text_input("Name", value="uploaded", key="up_name")
    c1, c2, c3 = st.columns(3)
    calib_batch = c1.number_input("Calibration batch", 1, 10000, 16, key="up_cb")
    calib_num = c2.number_input("Calibration batches", 1, 1000, 1, key="up_cn")
    eval_batch = c3.number_input("Evaluation batch", 1, 10000, 500, key="up_eb")
    submitted = st.button("Load upload", key="load_upload")
    if submitted:
        if not (sym and par and npz):
            st.error("Upload all three files: symbol JSON, params and the .npz dataset.")
        else:
            try:
                with st.spinner("Loading and calibrating the uploaded model…"):
                    state.use_upload(sym.getvalue(), par.getvalue(), npz.getvalue(), int(calib_batch),
                                     int(calib_num), int(eval_batch), name.strip())
                st.success("Uploaded model loaded")
            except MRTError as exc:
                st.error(f"Upload rejected: {exc}. The previous model stays loaded.")
            except Exception as exc:  # a file MXNet or numpy chokes on: still a message, not a traceback
                st.error(f"Upload rejected ({exc.__class__.__name__}): {str(exc).splitlines()[0] if str(exc) else ''}"
                         f". The previous model stays loaded.")

lo = state.loaded()
g = lo.session.original
st.divider()
st.subheader(f"Loaded: {lo.label}")
for name, reason in lo.source.get("restored_unsupported", {}).items():
    st.info(f"`{name}`: {reason}, so it starts restored (computed in float). The rest is integer; "
            f"an exported model needs it replaced.")
m1, m2, m3, m4 = st.columns(4)
m1.metric("Op nodes", len(g.op_nodes()))
m2.metric("All nodes", len(g.nodes))
m3.metric("Parameters", f"{g.param_count():,}")
m4.metric("Float top-1", f"{lo.baseline.float_top1:.2f}%")
st.markdown("**Inputs:** " + ", ".join(f"`{n}` {tuple(g.input_shapes.get(n, ()))}" for n in g.input_names))
st.markdown("**Outputs:** " + ", ".join(f"`{n}`" for n in g.outputs))
ds = lo.session.dataset
st.markdown(f"**Dataset:** {ds.name} — calibration {len(ds.x_calib)}, test {len(ds.x_test)} samples; "
            f"calibration {lo.session.calib_num} × {lo.session.calib_batch}")
ops = pd.Series([n.op for n in g.op_nodes()]).value_counts().rename_axis("op").reset_index(name="count")
st.dataframe(ops, hide_index=True)
