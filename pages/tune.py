"""Tune page: per-node settings, Rerun (quantize + evaluate, no recalibration), metrics and per-layer SQNR."""

import pandas as pd
import streamlit as st

from app import charts, state

# a page opened by its own URL can run before the entry script in a new session
state.ensure_state()
from mrt_core.errors import MRTError
from mrt_core.qconfig import GRANULARITIES, OPTIMIZOR_ATTRS, QUANT_TYPES

OPTIMIZORS = list(OPTIMIZOR_ATTRS)
INT_ATTRS = {"bucket_bits", "quant_bits"}

st.title("Tune")

lo = state.loaded()
g = lo.session.original
ops = state.op_nodes()
ver = st.session_state.mrt_editor_version


def settings_frame(cfg) -> pd.DataFrame:
    rows = []
    for name in ops:
        c = cfg.get_node(name)
        w = state.weight_of(name)
        rows.append({"node": name, "op": g.nodes[name].op, "granularity": c.granularity, "step": c.step,
                     "quant_type": c.quant_type, "weight": w or "",
                     "weight_quant_type": cfg.get_node(w).quant_type if w else None, "restore": c.restore})
    return pd.DataFrame(rows)


def config_from_frame(cfg, df: pd.DataFrame):
    new = cfg
    for row in df.to_dict("records"):
        name = row["node"]
        new = new.with_node(name, granularity=row["granularity"], step=int(row["step"]),
                            quant_type=row["quant_type"], restore=bool(row["restore"]))
        if row["weight"] and row.get("weight_quant_type"):
            new = new.with_node(row["weight"], quant_type=row["weight_quant_type"])
    return new


# ---------------------------------------------------------------- one node at a time
st.subheader("Edit a node")
node = st.selectbox("Node", ops, key="tune_node")
cur = state.config().get_node(node)
w = state.weight_of(node)
c1, c2, c3, c4, c5 = st.columns([2, 1, 2, 2, 1])
gran = c1.selectbox("Granularity", GRANULARITIES, index=GRANULARITIES.index(cur.granularity),
                    key=f"t_gran_{node}_{ver}")
step = c2.number_input("Step", 1, 4096, cur.step, key=f"t_step_{node}_{ver}")
qt = c3.selectbox("Output quant type", QUANT_TYPES, index=QUANT_TYPES.index(cur.quant_type),
                  key=f"t_qt_{node}_{ver}")
wqt = None
if w:
    wcur = state.config().get_node(w).quant_type
    wqt = c4.selectbox(f"Weight quant type ({w})", QUANT_TYPES, index=QUANT_TYPES.index(wcur),
                       key=f"t_wqt_{node}_{ver}")
else:
    c4.caption("no weight")
restore = c5.checkbox("Restore (float)", value=cur.restore, key=f"t_restore_{node}_{ver}")
o1, o2 = st.columns([2, 5])
cur_opt = dict(cur.optimizor)
opt_name = o1.selectbox("Optimizor (calibrated range)", OPTIMIZORS,
                        index=OPTIMIZORS.index(cur_opt.get("name", "HistoricalValue")), key=f"t_opt_{node}_{ver}")
opt = {"name": opt_name}
attrs = sorted(OPTIMIZOR_ATTRS[opt_name])
for col, attr in zip(o2.columns(max(len(attrs), 1)), attrs):
    now = cur_opt.get(attr) if cur_opt.get("name") == opt_name else None
    if attr in INT_ATTRS:
        v = col.number_input(attr, min_value=1, max_value=32, value=None if now is None else int(now), step=1,
                             placeholder="engine default", key=f"t_opt_{attr}_{node}_{ver}")
    else:
        v = col.number_input(attr, value=None if now is None else float(now), format="%.6g",
                             placeholder="engine default", key=f"t_opt_{attr}_{node}_{ver}")
    if v is not None:
        opt[attr] = int(v) if attr in INT_ATTRS else float(v)
if st.button("Apply to node", key="apply_node"):
    try:
        new = state.config().with_node(node, granularity=gran, step=int(step), quant_type=qt, restore=restore,
                                       optimizor=opt)
        if w:
            new = new.with_node(w, quant_type=wqt)
        if state.set_config(new):
            st.rerun()
        else:
            st.info("No change.")
    except MRTError as exc:
        state.show_error(exc)

# ---------------------------------------------------------------- all nodes
with st.expander("All nodes (table)", expanded=False):
    base = settings_frame(state.config())
    edited = st.data_editor(
        base, key=f"editor_{ver}", hide_index=True, width="stretch",
        disabled=["node", "op", "weight"],
        column_config={
            "granularity": st.column_config.SelectboxColumn("granularity", options=list(GRANULARITIES),
                                                            required=True),
            "step": st.column_config.NumberColumn("step", min_value=1, step=1, required=True),
            "quant_type": st.column_config.SelectboxColumn("quant_type", options=list(QUANT_TYPES),
                                                           required=True),
            "weight_quant_type": st.column_config.SelectboxColumn("weight quant_type", options=list(QUANT_TYPES)),
            "restore": st.column_config.CheckboxColumn("restore"),
        })
    try:
        new = config_from_frame(state.config(), edited)
        if state.set_config(new):
            st.rerun()
    except MRTError as exc:
        state.show_error(exc)

# ---------------------------------------------------------------- actions
b1, b2, b3, b4, _ = st.columns([1, 1, 1, 2, 1])
do_rerun = b1.button("Rerun", key="rerun", type="primary")
if b4.button("Apply recommended preset", key="preset",
             help="The candidate discovery's weight-scale suggestions: per-output-channel weights where channels' "
                  "ranges spread, group-wise for depthwise convs (then press Rerun; Undo takes it back)"):
    try:
        preset = state.session().recommended_config()
        state.set_config(type(preset)({**preset, **state.config()}))  # the user's own settings win
        st.rerun()
    except MRTError as exc:
        state.show_error(exc)
if b2.button("Undo", key="undo", disabled=not st.session_state.mrt_undo):
    state.undo()
    st.rerun()
if b3.button("Reset", key="reset", disabled=state.config() == lo.base_config):
    state.set_config(lo.base_config)
    st.rerun()

if do_rerun:
    try:
        with st.status("Quantizing and evaluating…", expanded=False) as status:
            ev = state.rerun()
            status.update(label=f"Done in {st.session_state.mrt_last_seconds:.2f} s (run #{st.session_state.mrt_last_run_id})",
                          state="complete")
    except MRTError as exc:
        state.show_error(exc)

changed = sorted(state.config())
st.caption("Changed from the defaults: " + (", ".join(f"`{n}`" for n in changed) if changed else "none"))
try:  # settings the engine could not apply where they were put (quantizing is milliseconds)
    for warning in state.current_model().warnings:
        st.warning(warning)
except MRTError:
    pass
if state.eval_is_stale():
    st.warning("The config changed since the numbers below were computed — press Rerun.")

# ---------------------------------------------------------------- results
ev, prev = state.last_eval(), st.session_state.mrt_prev_eval
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Float top-1", f"{ev.float_top1:.2f}%")


def delta(now, before):
    if before is None:
        return None, "normal"
    d = now - before
    return f"{d:+.2f} vs previous", ("off" if abs(d) < 5e-3 else "normal")


d1, c1 = delta(ev.quant_top1, None if prev is None else prev.quant_top1)
d5, c5 = delta(ev.quant_top5, None if prev is None else prev.quant_top5)
m2.metric("Quant top-1", f"{ev.quant_top1:.2f}%", delta=d1, delta_color=c1)
m3.metric("Quant top-5", f"{ev.quant_top5:.2f}%", delta=d5, delta_color=c5)
m4.metric("Previous top-1", "—" if prev is None else f"{prev.quant_top1:.2f}%")
m5.metric("Max precision", f"{ev.max_precision} bits")
st.caption(f"Float top-5 {ev.float_top5:.2f}% · previous top-5 "
           f"{'—' if prev is None else f'{prev.quant_top5:.2f}%'} · {ev.num_samples} test samples")
fid = ev.fidelity
if fid:  # label-free: how closely the integer model follows the float one
    f1, f2, f3 = st.columns(3)
    f1.metric("Top-1 agreement with float", f"{fid['top1_agreement']:.1f}%")
    f2.metric("Top-5 overlap", f"{fid['top5_overlap']:.1f}%")
    f3.metric("Logit cosine", f"{fid['logit_cosine']:.4f}")

st.plotly_chart(charts.sqnr_compare(ev.layers, prev.layers if prev is not None else None),
                width="stretch")
layer_df = charts.layer_table(ev, prev)

# ---------------------------------------------------------------- cost and structure (engine counts)
st.subheader("Cost and structure")
model = state.current_model()
try:
    iops_now, iops_base = state.iops_of(state.config(), model), state.iops_of(lo.base_config)
except MRTError as exc:
    state.show_error(exc)
    iops_now = iops_base = None
if iops_now is not None:
    n_int = sum(1 for n in model.graph.nodes.values() if n.op != "null")
    i1, i2, i3 = st.columns(3)
    i1.metric("IOPs / sample (model's config)", f"{iops_base:,}")
    d = iops_now - iops_base
    i2.metric("IOPs / sample (current config)", f"{iops_now:,}",
              delta=None if d == 0 else f"{d:+,} ({d / max(iops_base, 1):+.2%})", delta_color="inverse")
    i3.metric("Integer-graph op nodes", f"{n_int}")
st.caption("MRT **channel-wise** splits the input channels into slices (partial convolutions + add_n): more "
           "integer nodes and IOPs. **output-channel-wise** / **group-wise** keep one convolution and give each "
           "output channel (group) its own weight scale, paid with a per-channel integer multiply.")
st.dataframe(charts.structure_table(model, state.config(), ops, {n: g.nodes[n].op for n in ops}),
             hide_index=True, width="stretch")

# ---------------------------------------------------------------- diagnose (engine, on demand)
st.subheader("Diagnose: which node causes the error")
st.caption("Local SQNR: the node quantized but fed with the float model's inputs (the error it causes). "
           "Propagated SQNR: the evaluation's (what it inherits plus its own).")
if st.button("Diagnose", key="diagnose"):
    try:
        with st.spinner("Diagnosing…"):
            state.diagnose()
    except MRTError as exc:
        state.show_error(exc)
diag = state.diagnosis()
if diag is None:
    st.info("Press Diagnose to compute local SQNR, saturation and scale error of the current config.")
else:
    same = not state.eval_is_stale()
    if not same:
        st.warning("Propagated SQNR is left out: the last evaluation is of another config — press Rerun.")
    diag_df = charts.diagnosis_table(diag, ev if same else None)
    st.plotly_chart(charts.local_vs_propagated(diag_df), width="stretch")
    st.dataframe(diag_df, hide_index=True, width="stretch")
    st.caption(f"Diagnosed in {st.session_state.mrt_diag['seconds']:.2f} s.")

st.subheader("Per-layer error (last evaluation)")
st.dataframe(layer_df, hide_index=True, width="stretch")
