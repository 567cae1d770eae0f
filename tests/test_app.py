"""The Streamlit app driven headlessly with AppTest: it must show what the engine computes."""

from __future__ import annotations

import io
import math
import os

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from mrt_core.qconfig import QuantConfig  # noqa: E402
from mrt_core.session import Session  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "streamlit_app.py")
LENET = os.path.join(ROOT, "sample_models", "lenet", "lenet.ini")


@pytest.fixture(autouse=True)
def studio_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MRT_STUDIO_HOME", str(tmp_path / "studio"))
    return tmp_path / "studio"


@pytest.fixture(scope="module")
def engine():
    """The engine called directly, as a reference for what the app shows."""
    session, run = Session.from_ini(LENET)
    session.features()
    return session, run


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def edit_node(at: AppTest, node: str, granularity=None, step=None, quant_type=None, weight_quant_type=None,
              restore=None, optimizor=None) -> None:
    at.selectbox(key="tune_node").set_value(node).run()
    ver = at.session_state["mrt_editor_version"]
    if optimizor is not None:
        at.selectbox(key=f"t_opt_{node}_{ver}").set_value(optimizor["name"]).run()
        for attr, value in optimizor.items():
            if attr != "name":
                at.number_input(key=f"t_opt_{attr}_{node}_{ver}").set_value(value)
    if granularity is not None:
        at.selectbox(key=f"t_gran_{node}_{ver}").set_value(granularity)
    if step is not None:
        at.number_input(key=f"t_step_{node}_{ver}").set_value(step)
    if quant_type is not None:
        at.selectbox(key=f"t_qt_{node}_{ver}").set_value(quant_type)
    if weight_quant_type is not None:
        at.selectbox(key=f"t_wqt_{node}_{ver}").set_value(weight_quant_type)
    if restore is not None:
        at.checkbox(key=f"t_restore_{node}_{ver}").set_value(restore)
    at.button(key="apply_node").click().run()
    assert not at.exception, [e.value for e in at.exception]


def rerun(at: AppTest) -> None:
    at.button(key="rerun").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def check_matches_engine(at: AppTest, engine, config: QuantConfig):
    session, _ = engine
    ev = session.evaluate(session.quantize(config))
    m = metrics(at)
    assert m["Float top-1"] == f"{ev.float_top1:.2f}%"
    assert m["Quant top-1"] == f"{ev.quant_top1:.2f}%"
    assert m["Quant top-5"] == f"{ev.quant_top5:.2f}%"
    assert m["Max precision"] == f"{ev.max_precision} bits"
    table = at.dataframe[-1].value
    assert list(table["layer"]) == [l.name for l in ev.layers]
    for row, layer in zip(table.to_dict("records"), ev.layers):
        assert row["precision"] == layer.precision
        assert bool(row["restored"]) == layer.restored
        if math.isfinite(layer.sqnr_db):
            assert row["sqnr_db"] == pytest.approx(layer.sqnr_db, abs=1e-3), layer.name
        else:
            assert row["sqnr_db"] == layer.sqnr_db
    return ev


def test_default_sample_loads():
    at = new_app()
    assert any("lenet" in s.value for s in at.subheader)
    m = metrics(at)
    assert m["Op nodes"] == "13"
    assert at.session_state["mrt_config"] == QuantConfig()
    for page in ("graph", "ranges", "tune", "runs"):
        goto(at, page)
        assert not at.error, (page, [e.value for e in at.error])


def test_tune_toggles_match_engine(engine):
    at = goto(new_app(), "tune")
    start = metrics(at)
    assert start["Previous top-1"] == "—"

    # 1. restore a layer (computed in float)
    edit_node(at, "dense0_fwd", restore=True)
    expected = QuantConfig().with_node("dense0_fwd", restore=True)
    assert at.session_state["mrt_config"] == expected
    rerun(at)
    ev1 = check_matches_engine(at, engine, expected)
    assert {l.name: l.restored for l in ev1.layers}["dense0_fwd"]
    assert metrics(at)["Previous top-1"] == start["Quant top-1"]

    # 2. channel-wise (MRT input-channel split) on a convolution
    edit_node(at, "conv1_fwd", granularity="channel-wise", step=2)
    expected = expected.with_node("conv1_fwd", granularity="channel-wise", step=2)
    assert at.session_state["mrt_config"] == expected
    rerun(at)
    ev2 = check_matches_engine(at, engine, expected)
    assert metrics(at)["Previous top-1"] == f"{ev1.quant_top1:.2f}%"

    # 3. affine output of an activation and an affine weight
    edit_node(at, "conv0_fwd", quant_type="UniformAffine", weight_quant_type="UniformAffine")
    expected = (expected.with_node("conv0_fwd", quant_type="UniformAffine")
                .with_node("conv0_weight", quant_type="UniformAffine"))
    assert at.session_state["mrt_config"] == expected
    rerun(at)
    ev3 = check_matches_engine(at, engine, expected)
    assert [l.sqnr_db for l in ev3.layers] != [l.sqnr_db for l in ev2.layers]

    # Undo drops the last change; the shown numbers say they are stale until the next Rerun
    at.button(key="undo").click().run()
    assert at.session_state["mrt_config"] == QuantConfig().with_node("dense0_fwd", restore=True).with_node(
        "conv1_fwd", granularity="channel-wise", step=2)
    assert any("press Rerun" in w.value for w in at.warning)
    rerun(at)
    check_matches_engine(at, engine, at.session_state["mrt_config"])


def test_run_saved_is_listed_in_a_fresh_session(studio_home):
    at = goto(new_app(), "tune")
    edit_node(at, "relu2_fwd", restore=True)
    rerun(at)
    run_id = at.session_state["mrt_last_run_id"]
    assert (studio_home / "runs.sqlite").exists()

    fresh = goto(new_app(), "runs")
    table = fresh.dataframe[0].value
    assert run_id in list(table["id"])
    row = table[table["id"] == run_id].iloc[0]
    assert row["model"] == "lenet"
    assert "relu2_fwd" in row["changed nodes"]
    assert any("relu2_fwd" in c.value for c in fresh.code)


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _upload(at: AppTest, symbol: bytes, params: bytes, npz: bytes) -> None:
    at.file_uploader(key="up_symbol").set_value(("m-symbol.json", symbol, "application/json"))
    at.file_uploader(key="up_params").set_value(("m.params", params, "application/octet-stream"))
    at.file_uploader(key="up_npz").set_value(("d.npz", npz, "application/octet-stream"))
    at.button(key="load_upload").click().run()
    assert not at.exception, [e.value for e in at.exception]


def test_malformed_upload_shows_error_and_keeps_model():
    at = new_app()
    before = at.session_state["mrt_loaded"]
    good_params = open(os.path.join(ROOT, "sample_models", "lenet", "lenet-0000.params"), "rb").read()
    npz = _npz_bytes(x_calib=np.zeros((4, 1, 28, 28), np.float32), x_test=np.zeros((4, 1, 28, 28), np.float32),
                     y_test=np.zeros(4, np.int64))
    _upload(at, b'{"nodes": [', good_params, npz)          # truncated JSON
    assert any("rejected" in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state["mrt_loaded"] is before
    assert any("lenet" in s.value for s in at.subheader)

    sym = open(os.path.join(ROOT, "sample_models", "lenet", "lenet-symbol.json"), "rb").read()
    _upload(at, sym, b"not a params file", npz)              # garbage params
    assert any("rejected" in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state["mrt_loaded"] is before


def test_valid_upload_replaces_model(tmp_path):
    from mrt_core.datasets import load_dataset
    ds = load_dataset("digits")
    at = new_app()
    root = os.path.join(ROOT, "sample_models", "digits_mlp")
    sym = open(os.path.join(root, "digits_mlp-symbol.json"), "rb").read()
    params = open(os.path.join(root, "digits_mlp-0000.params"), "rb").read()
    npz = _npz_bytes(x_calib=ds.x_calib[:64], x_test=ds.x_test[:200], y_test=ds.y_test[:200])
    at.text_input(key="up_name").set_value("my_mlp")
    _upload(at, sym, params, npz)
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["mrt_loaded"].label == "my_mlp"
    assert any("my_mlp" in s.value for s in at.subheader)
    goto(at, "tune")
    rerun(at)
    assert metrics(at)["Quant top-1"].endswith("%")


def test_engine_error_is_a_message_not_a_traceback(monkeypatch):
    from mrt_core.errors import QuantizeError
    from mrt_core.session import Session as S

    at = goto(new_app(), "tune")
    before = metrics(at)["Quant top-1"]

    def broken(self, model, *a, **k):
        raise QuantizeError("node 'dense1_fwd': precision bound broken (test)")

    monkeypatch.setattr(S, "evaluate", broken)
    edit_node(at, "dense1_fwd", quant_type="UniformAffine")
    at.button(key="rerun").click().run()
    assert not at.exception
    assert any("precision bound broken" in e.value for e in at.error)
    assert metrics(at)["Quant top-1"] == before
    assert at.session_state["mrt_last_run_id"] is None


def test_runs_compare_and_export(engine):
    at = goto(new_app(), "tune")
    edit_node(at, "relu1_fwd", restore=True)
    rerun(at)
    first = at.session_state["mrt_last_run_id"]
    edit_node(at, "conv1_fwd", granularity="channel-wise", step=4)
    rerun(at)
    second = at.session_state["mrt_last_run_id"]
    goto(at, "runs")
    table = at.dataframe[0].value
    row = table[table["id"] == second].iloc[0]
    assert row["diff vs previous run"] == "+conv1_fwd"
    at.selectbox(key="run_a").set_value(first)
    at.selectbox(key="run_b").set_value(second)
    at.selectbox(key="run_dl").set_value(second).run()
    codes = [c.value for c in at.code]
    assert any("+  \"conv1_fwd\"" in c for c in codes), codes
    cfg = at.session_state["mrt_config"]
    groups, restore = cfg.to_mrt()
    assert any(f"Cfg_groups={groups}" in c and f"Restore_name={restore}" in c for c in codes)
    assert QuantConfig.from_mrt(groups, restore) == cfg


# ---------------------------------------------------------------- candidates, diagnosis, IOPs, optimizor

def test_apply_candidate_changes_config(engine):
    session, run = engine
    ev = session.evaluate(session.quantize(run.quant_config))
    expected = session.candidates(ev)
    at = goto(new_app(), "ranges")
    table = at.dataframe[0].value
    assert [(r["kind"], r["node"]) for r in table.to_dict("records")] == [(c.kind, c.name) for c in expected]
    picks = [next(i for i, c in enumerate(expected) if c.kind == kind) for kind in ("zero-point", "restore")]
    at.multiselect(key="cand_pick").set_value(picks).run()
    at.button(key="cand_apply").click().run()
    assert not at.exception, [e.value for e in at.exception]
    want = run.quant_config
    for i in picks:
        want = want.with_node(expected[i].name, **expected[i].suggestion)
    assert at.session_state["mrt_config"] == want
    for i in picks:
        got = at.session_state["mrt_config"].get_node(expected[i].name)
        assert all(getattr(got, k) == v for k, v in expected[i].suggestion.items())
    assert any("Rerun" in m.value for m in at.success)
    at.button(key="ranges_undo").click().run()
    assert at.session_state["mrt_config"] == run.quant_config


def test_diagnose_shows_engine_local_sqnr(engine):
    session, run = engine
    diag = session.diagnose(session.quantize(run.quant_config))
    at = goto(new_app(), "tune")
    assert not any("local_sqnr_db" in d.value.columns for d in at.dataframe)   # on demand only
    at.button(key="diagnose").click().run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "local_sqnr_db" in d.value.columns)
    assert list(table["layer"]) == list(diag)
    for row in table.to_dict("records"):
        d = diag[row["layer"]]
        if math.isfinite(d.local_sqnr_db):
            assert row["local_sqnr_db"] == pytest.approx(d.local_sqnr_db, abs=1e-3), row["layer"]
        assert row["iops"] == d.iops
        assert row["saturation_%"] == pytest.approx(d.saturation * 100, abs=1e-5)
    ev = session.evaluate(session.quantize(run.quant_config))
    prop = {l.name: l.sqnr_db for l in ev.layers}
    for row in table.to_dict("records"):
        if math.isfinite(prop[row["layer"]]):
            assert row["propagated_sqnr_db"] == pytest.approx(prop[row["layer"]], abs=1e-3)


def _structure(at):
    return next(d.value for d in at.dataframe if "integer nodes" in d.value.columns).set_index("node")


def test_iops_rise_with_channel_wise_and_are_stored(engine):
    session, run = engine
    at = goto(new_app(), "tune")
    base = metrics(at)["IOPs / sample (model's config)"]
    assert base == f"{session.iops(session.quantize(run.quant_config)):,}"
    layer_nodes = _structure(at).loc["conv1_fwd", "integer nodes"]

    edit_node(at, "conv1_fwd", granularity="channel-wise", step=2)
    cfg = run.quant_config.with_node("conv1_fwd", granularity="channel-wise", step=2)
    now = metrics(at)["IOPs / sample (current config)"]
    assert now == f"{session.iops(session.quantize(cfg)):,}"
    assert int(now.replace(",", "")) > int(base.replace(",", ""))
    split = _structure(at).loc["conv1_fwd"]
    assert split["integer nodes"] > layer_nodes and split["weight scale"].startswith("per input slice")
    rerun(at)
    run_id = at.session_state["mrt_last_run_id"]

    edit_node(at, "conv1_fwd", granularity="output-channel-wise")
    per_out = _structure(at).loc["conv1_fwd"]
    assert per_out["weight scale"].startswith("per output channel")
    assert per_out["integer nodes"] < split["integer nodes"]

    goto(at, "runs")
    table = at.dataframe[0].value
    assert table[table["id"] == run_id].iloc[0]["IOPs / sample"] == int(now.replace(",", ""))


def test_optimizor_editing_reaches_config():
    at = goto(new_app(), "tune")
    edit_node(at, "relu0_fwd", optimizor={"name": "KLDivergence", "bucket_bits": 10, "quant_bits": 8})
    want = QuantConfig().with_node("relu0_fwd", optimizor={"name": "KLDivergence", "bucket_bits": 10,
                                                           "quant_bits": 8})
    assert at.session_state["mrt_config"] == want
    edit_node(at, "dense0_fwd", optimizor={"name": "OutlierRemoval", "percentile": 0.999})
    want = want.with_node("dense0_fwd", optimizor={"name": "OutlierRemoval", "percentile": 0.999})
    assert at.session_state["mrt_config"] == want
    rerun(at)


def test_data_editor_table_edit_reaches_config():
    """AppTest has no data_editor element; its widget state is set the way the frontend sends it."""
    at = goto(new_app(), "tune")
    ver = at.session_state["mrt_editor_version"]
    row = at.session_state["mrt_loaded"].session.original.op_nodes()
    idx = [n.name for n in row].index("conv1_fwd")
    at.session_state[f"editor_{ver}"] = {"edited_rows": {idx: {"granularity": "channel-wise", "step": 4}},
                                          "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["mrt_config"] == QuantConfig().with_node("conv1_fwd", granularity="channel-wise",
                                                                     step=4)


def test_old_runs_db_is_migrated(studio_home):
    import sqlite3
    from app import store
    studio_home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(studio_home / "runs.sqlite")
    conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, model TEXT NOT NULL, "
                 "config_json TEXT NOT NULL, float_top1 REAL, float_top5 REAL, quant_top1 REAL, quant_top5 REAL, "
                 "max_precision INTEGER, num_samples INTEGER, seconds REAL, layers_json TEXT NOT NULL)")
    conn.execute("INSERT INTO runs (created, model, config_json, float_top1, float_top5, quant_top1, quant_top5, "
                 "max_precision, num_samples, seconds, layers_json) VALUES (1, 'lenet', '{}', 1, 2, 3, 4, 8, 10, 0.5, "
                 "'[]')")
    conn.commit()
    conn.close()
    assert store.list_runs()[0]["iops"] is None
    at = goto(new_app(), "tune")
    rerun(at)
    goto(at, "runs")
    table = at.dataframe[0].value
    assert table.iloc[0]["IOPs / sample"] > 0 and math.isnan(table.iloc[-1]["IOPs / sample"])


def test_upload_with_unsupported_op_loads_with_it_restored(tmp_path, monkeypatch):
    """A sigmoid has no integer rule: the upload loads, with that node restored and said so."""
    import json as _json
    monkeypatch.setenv("MRT_STUDIO_HOME", str(tmp_path))
    from mrt_core.datasets import load_dataset
    from app import state as app_state
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = os.path.join(root, "sample_models", "digits_mlp")
    sym = _json.load(open(os.path.join(folder, "digits_mlp-symbol.json")))
    act = [n for n in sym["nodes"] if n["op"] == "Activation"][0]
    act["attrs"]["act_type"] = "sigmoid"
    ds = load_dataset("digits")
    buf = io.BytesIO()
    np.savez(buf, x_calib=ds.x_calib, x_test=ds.x_test, y_test=ds.y_test)
    params = open(os.path.join(folder, "digits_mlp-0000.params"), "rb").read()
    loaded = app_state.load_upload.__wrapped__(_json.dumps(sym).encode(), params, buf.getvalue(), 50, 4, 500, "sig")
    assert act["name"] in loaded.source["restored_unsupported"]
    assert loaded.base_config[act["name"]].restore


def test_recommended_preset_is_one_click(tmp_path, monkeypatch):
    monkeypatch.setenv("MRT_STUDIO_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.selectbox(key="sample_choice").set_value("resnet").run()  # a model with a depthwise conv
    at.button(key="load_sample").click().run()
    at.switch_page("pages/tune.py").run()
    at.button(key="preset").click().run()
    assert not at.exception
    session, _ = Session.from_ini(os.path.join(ROOT, "sample_models", "resnet", "resnet.ini"))
    want = session.recommended_config()
    assert any(c.granularity == "group-wise" for c in want.values())
    got = at.session_state["mrt_config"]
    assert {k: got.get_node(k) for k in want} == dict(want)
    labels = [m.label for m in at.metric]
    assert "Top-1 agreement with float" in labels and "Logit cosine" in labels
