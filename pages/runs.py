"""Runs page: saved runs, config diffs, comparison of two runs, downloads (JSON and MRT INI lines)."""

import datetime as dt
import difflib

import pandas as pd
import streamlit as st

from app import charts, state, store

# a page opened by its own URL can run before the entry script in a new session
state.ensure_state()
from mrt_core.errors import MRTError
from mrt_core.qconfig import QuantConfig

st.title("Runs")

only_current = st.checkbox(f"Only runs of the loaded model ({state.loaded().label})", value=False,
                           key="runs_only_current")
runs = store.list_runs(state.loaded().label if only_current else None)
if not runs:
    st.info("No runs saved yet: press Rerun on the Tune page.")
    st.stop()


def when(r) -> str:
    return dt.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M:%S")


def label(r) -> str:
    return f"#{r['id']} {r['model']} {when(r)} top-1 {r['quant_top1']:.2f}%"


def changed_nodes(r) -> str:
    try:
        return ", ".join(sorted(QuantConfig.from_json(r["config_json"]))) or "(defaults)"
    except MRTError:
        return "(unreadable config)"


def diff_vs_previous(r, older) -> str:
    """Nodes whose config differs from the previous run of the same model (+ added, - back to default, ~ changed)."""
    if older is None:
        return "(first run)"
    try:
        a, b = QuantConfig.from_json(older["config_json"]), QuantConfig.from_json(r["config_json"])
    except MRTError:
        return "?"
    parts = [f"+{n}" for n in sorted(set(b) - set(a))] + [f"-{n}" for n in sorted(set(a) - set(b))]
    parts += [f"~{n}" for n in sorted(set(a) & set(b)) if a[n] != b[n]]
    return ", ".join(parts) or "(same)"


previous_of, last_by_model = {}, {}
for r in sorted(runs, key=lambda r: r["id"]):
    previous_of[r["id"]] = last_by_model.get(r["model"])
    last_by_model[r["model"]] = r

table = pd.DataFrame([{"id": r["id"], "time": when(r), "model": r["model"], "changed nodes": changed_nodes(r),
                       "diff vs previous run": diff_vs_previous(r, previous_of[r["id"]]),
                       "float top-1": r["float_top1"], "quant top-1": r["quant_top1"],
                       "quant top-5": r["quant_top5"], "max precision": r["max_precision"],
                       "IOPs / sample": r.get("iops"),  # None for runs saved before IOPs were stored
                       "seconds": round(r["seconds"], 3)} for r in runs])
st.dataframe(table, hide_index=True, width="stretch")

by_id = {r["id"]: r for r in runs}
ids = list(by_id)

st.subheader("Compare two runs")
c1, c2 = st.columns(2)
a_id = c1.selectbox("Run A", ids, index=min(1, len(ids) - 1), format_func=lambda i: label(by_id[i]), key="run_a")
b_id = c2.selectbox("Run B", ids, index=0, format_func=lambda i: label(by_id[i]), key="run_b")
a, b = by_id[a_id], by_id[b_id]
m1, m2, m3, m4 = st.columns(4)


def vs_a(key, fmt="{:+.2f}", good="normal"):
    d = b[key] - a[key]
    return dict(delta=fmt.format(d) + " vs A", delta_color="off" if abs(d) < 5e-3 else good)


m1.metric("Quant top-1 B", f"{b['quant_top1']:.2f}%", **vs_a("quant_top1"))
m2.metric("Quant top-5 B", f"{b['quant_top5']:.2f}%", **vs_a("quant_top5"))
m3.metric("Seconds B", f"{b['seconds']:.2f}", **vs_a("seconds", good="inverse"))
if b.get("iops") is not None:
    m4.metric("IOPs / sample B", f"{b['iops']:,}",
              **(vs_a("iops", fmt="{:+,.0f}", good="inverse") if a.get("iops") is not None else {}))
else:
    m4.metric("IOPs / sample B", "—")
if a["model"] != b["model"]:
    st.warning("The two runs are of different models; only layers with the same name are compared.")
st.plotly_chart(charts.sqnr_difference(a["layers"], b["layers"], f"#{a_id}", f"#{b_id}"),
                width="stretch")
diff = "\n".join(difflib.unified_diff(a["config_json"].splitlines(), b["config_json"].splitlines(),
                                      f"run #{a_id}", f"run #{b_id}", lineterm=""))
st.markdown("**Config diff (A → B)**")
st.code(diff or "(same config)", language="diff")

st.subheader("Download a run's config")
d_id = st.selectbox("Run", ids, format_func=lambda i: label(by_id[i]), key="run_dl")
r = by_id[d_id]
try:
    cfg = QuantConfig.from_json(r["config_json"])
    cfg_groups, restore = cfg.to_mrt()
    ini = f"[QUANTIZATION]\nCfg_groups={cfg_groups}\nRestore_name={restore}\n"
except MRTError as exc:
    state.show_error(exc)
    cfg, ini = None, None
d1, d2, d3 = st.columns(3)
d1.download_button("Config JSON", r["config_json"], file_name=f"run{d_id}_config.json",
                   mime="application/json", key="dl_json")
if ini is not None:
    d2.download_button("MRT INI lines", ini, file_name=f"run{d_id}_quantization.ini", mime="text/plain",
                       key="dl_ini")
    with st.expander("INI lines"):
        st.code(ini, language="ini")
if d3.button("Load this config into Tune", key="load_cfg", disabled=cfg is None or r["model"] != state.loaded().label):
    state.set_config(cfg)
    st.success(f"Run #{d_id}'s config is now the current config; Rerun it on the Tune page.")
if cfg is not None and r["model"] == state.loaded().label:
    try:  # quantizing is milliseconds: build the integer-only model of this run's config for download
        from mrt_core.export import export_zip
        blob = export_zip(state.session().quantize(cfg), state.loaded().label.replace("/", "_"))
        st.download_button("Quantized model (.zip: JSON + params + scales)", blob,
                           file_name=f"run{d_id}_quantized.zip", mime="application/zip", key="dl_model")
    except MRTError as exc:
        st.info(f"No integer-only model for this run: {exc}")
if st.button("Delete this run", key="delete_run"):
    store.delete_run(d_id)
    st.rerun()
