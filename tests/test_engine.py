"""Quantization and integer execution: a tiny graph by hand, precision inference, the samples end to end."""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from mrt_core import ops  # noqa: F401
from mrt_core import quant_math as qm
from mrt_core.calibrate import calibrate
from mrt_core.errors import CheckError, ConfigError, QuantizeError
from mrt_core.graph import Graph, Node
from mrt_core.int_exec import check_integers, run_int
from mrt_core.prepare import prepare
from mrt_core.qconfig import QuantConfig
from mrt_core.quantize import quantize
from mrt_core.session import Session
from conftest import ROOT, sample_ini


def _fc_graph(w):
    nodes = [Node("data", "null"), Node("w", "null"),
             Node("fc", "FullyConnected", ["data", "w"], {"num_hidden": w.shape[0], "no_bias": True})]
    g = Graph(nodes, {"w": w}, ["fc"])
    g.input_shapes = {"data": (-1, w.shape[1])}
    return g


def test_tiny_fc_integers_by_hand():
    # x absmax 2 -> input scale 127/2 = 63.5; w absmax 1 -> weight scale 127
    x = np.array([[2.0, -1.0, 0.5]], np.float32)
    w = np.array([[1.0, 0.5, -0.25], [-1.0, 0.0, 0.75]], np.float32)
    g = _fc_graph(w)
    model = quantize(g, calibrate(g, x, 1, 1))
    assert model.input_scales["data"] == pytest.approx(63.5)
    # xq = round([127, -63.5, 31.75]) = [127, -64, 32]; wq = [[127, 64, -32], [-127, 0, 95]] (95.25 -> 95)
    # y = [127*127 - 64*64 - 32*32, -127*127 + 0 + 32*95] = [11009, -13089]
    y = run_int(model, {"data": x})[model.graph.outputs[0]]
    assert y.tolist() == [[11009.0, -13089.0]]
    out = model.values["fc"]
    assert out.scale == pytest.approx(63.5 * 127)
    assert out.precision == qm.bit_length(3) + 8 + 8 == 18
    np.testing.assert_allclose(y / out.scale, x @ w.T, atol=0.02)


def test_requantize_chain_by_hand():
    # fc (18 bits) -> relu -> a second fc requantizes its input down to 8 bits
    x = np.array([[2.0, -1.0, 0.5]], np.float32)
    w = np.array([[1.0, 0.5, -0.25], [-1.0, 0.0, 0.75]], np.float32)
    nodes = [Node("data", "null"), Node("w", "null"), Node("w2", "null"),
             Node("fc", "FullyConnected", ["data", "w"], {"num_hidden": 2, "no_bias": True}),
             Node("r", "relu", ["fc"]),
             Node("fc2", "FullyConnected", ["r", "w2"], {"num_hidden": 1, "no_bias": True})]
    g = Graph(nodes, {"w": w, "w2": np.array([[1.0, 1.0]], np.float32)}, ["fc2"])
    g.input_shapes = {"data": (-1, 3)}
    model = quantize(g, calibrate(g, x, 1, 1))
    vals = run_int(model, {"data": x})
    # relu output = [11009, 0] at scale 63.5 * 127 = 8064.5 (18 bits); the float max is 2 - 0.5 - 0.125 = 1.375
    # -> wanted scale 127/1.375; 18 - 8 = 10 > 5 shift bits: pre-shift by 5
    rq = model.values["fc2"]
    names = model.reports["fc2"].int_nodes
    pre = [n for n in names if n.endswith(".pre")][0]
    assert model.graph.nodes[pre].attr("shift_bit") == 2
    assert vals[pre].tolist() == [[2752, 0]]
    assert model.precision[pre] == 8 + 5
    frac_name = [n for n in names if n.endswith(".frac")][0]
    frac = model.graph.params[frac_name].item()
    shift = [n for n in names if n.endswith(".shift")][0]
    s = model.graph.nodes[shift].attr("shift_bit")
    want = qm.right_shift_round(2752 * frac, s, 8)
    assert vals[shift][0, 0] == want
    # 2752 at scale 8064.5/4 times the wanted/used ratio rounds to 126 (the integer max is 1.3651, not 1.375)
    assert want == round(2752 * (127 / 1.375) / (8064.5 / 4)) == 126
    assert rq.precision == qm.bit_length(2) + 8 + 8


def test_precision_inference_per_op():
    rng = np.random.RandomState(0)
    d = mx.sym.var("data")
    c = mx.sym.Convolution(d, kernel=(3, 3), num_filter=4, no_bias=True, name="conv")   # K = 2*3*3 = 18
    r = mx.sym.relu(c, name="r")
    p = mx.sym.Pooling(r, kernel=(2, 2), pool_type="max", name="pool")
    a = mx.sym.elemwise_add(p, p, name="add")
    n = mx.sym.add_n(p, p, p, name="addn")
    cat = mx.sym.Concat(a, n, dim=1, name="cat")
    f = mx.sym.FullyConnected(cat, num_hidden=3, name="fc")
    from mrt_core.mxnet_io import graph_from_json
    shapes = dict(zip(f.list_arguments(), f.infer_shape(data=(1, 2, 8, 8))[0]))
    params = {k: rng.randn(*v).astype(np.float32) for k, v in shapes.items() if k != "data"}
    g = graph_from_json(f.tojson(), params)
    g.input_shapes = {"data": (-1, 2, 8, 8)}
    g = prepare(g)
    model = quantize(g, calibrate(g, rng.randn(4, 2, 8, 8).astype(np.float32), 4, 1))
    prec = {k: r.precision for k, r in model.reports.items()}
    assert prec["conv"] == qm.bit_length(18) + 8 + 8 == 21
    assert prec["r"] == prec["pool"] == 21
    assert prec["add"] == 8 + 1          # both inputs requantized to 8 bits, sum of two
    assert prec["addn"] == 8 + qm.bit_length(3)
    assert prec["cat"] == 8               # inputs brought to one scale at 8 bits; Concat keeps the max
    assert prec["fc"] == qm.bit_length(8 * 5 * 5) + 8 + 8  # Concat of 2x4 channels, 5x5 after the 2x2 pool
    assert prec["fc_bias_add"] == prec["fc"] + 1


def test_unknown_op_names_node_and_op():
    nodes = [Node("data", "null"), Node("s", "sigmoid", ["data"])]
    g = Graph(nodes, {}, ["s"])
    g.input_shapes = {"data": (-1, 3)}
    x = np.ones((1, 3), np.float32)
    with pytest.raises(QuantizeError, match="'s'.*sigmoid"):
        quantize(g, calibrate(g, x, 1, 1))
    # restoring it keeps it in float, which is allowed for diagnosis
    model = quantize(g, calibrate(g, x, 1, 1), QuantConfig().with_node("s", restore=True))
    y = run_int(model, {"data": x})[model.graph.outputs[0]]
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-np.round(127.0) / 127)), rtol=1e-6)


def test_zero_range_input_gives_zeros_not_nan():
    w = np.ones((2, 3), np.float32)
    g = _fc_graph(w)
    x = np.zeros((2, 3), np.float32)
    model = quantize(g, calibrate(g, x, 2, 1))
    assert model.input_scales["data"] == 1.0
    y = run_int(model, {"data": x})[model.graph.outputs[0]]
    assert np.all(y == 0)


def test_checker_fails_loudly_naming_the_node():
    w = np.ones((2, 3), np.float32)
    g = _fc_graph(w)
    model = quantize(g, calibrate(g, np.ones((1, 3), np.float32), 1, 1))
    vals = run_int(model, {"data": np.ones((1, 3), np.float32)})
    model.precision["fc"] = 3  # pretend a smaller precision was recorded
    with pytest.raises(CheckError, match="'fc'"):
        check_integers(model, vals)


def test_unknown_config_node_is_named():
    g = _fc_graph(np.ones((2, 3), np.float32))
    feats = calibrate(g, np.ones((1, 3), np.float32), 1, 1)
    with pytest.raises(ConfigError, match="nosuch"):
        quantize(g, feats, QuantConfig().with_node("fc", restore=True) | {"nosuch": None})


@pytest.fixture(scope="module", params=["lenet", "resnet", "digits_mlp"])
def sample(request):
    session, run = Session.from_ini(sample_ini(request.param))
    model = session.quantize(run.quant_config)
    return request.param, session, model


def test_sample_accuracy_precision_and_checker(sample):
    name, session, model = sample
    ev = session.evaluate(model, check=True)  # raises CheckError if any intermediate breaks its precision
    assert ev.max_precision <= 32
    assert ev.quant_top1 >= ev.float_top1 - 0.5, (name, ev.float_top1, ev.quant_top1)
    if name != "digits_mlp":
        assert ev.num_samples == 1000


def test_sample_is_deterministic_under_threaded_engine(sample):
    name, session, model = sample
    x = session.dataset.x_test[:64]
    first = run_int(model, {session.input_name: x})[model.graph.outputs[0]]
    for _ in range(9):
        again = run_int(model, {session.input_name: x})[model.graph.outputs[0]]
        assert np.array_equal(first, again)


def test_cli_json_and_errors(tmp_path):
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "mrt_core", "run", sample_ini("digits_mlp"), "--json", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    for key in ("float_top1", "float_top5", "quant_top1", "quant_top5", "max_precision", "num_samples"):
        assert key in data
    assert set(data["seconds"]) >= {"prepare", "calibrate", "quantize", "evaluate"}
    assert {"name", "op", "precision", "sqnr_db"} <= set(data["layers"][0])
    bad = tmp_path / "bad.ini"
    bad.write_text(open(sample_ini("digits_mlp")).read().replace("Shift_bits=5", "Shift_bitz=5"))
    res = subprocess.run([sys.executable, "-m", "mrt_core", "run", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "Shift_bitz" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "mrt_core", "run", str(tmp_path / "none.ini")],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "not found" in res.stderr


@pytest.mark.parametrize("old, new, match", [
    ("[EVALUATION]\nBatch=500", "[EVALUATION]\nBatch=0", "Batch=0"),
    ("Calibrate_num=4", "Calibrate_num=0", "Calibrate_num=0"),
    ("Lambda=", "Lambda=-1", "Lambda"),
])
def test_config_numbers_are_checked(tmp_path, old, new, match):
    from mrt_core.config import load_run_config
    text = open(sample_ini("digits_mlp")).read()
    assert old in text
    bad = tmp_path / "bad.ini"
    bad.write_text(text.replace(old, new))
    with pytest.raises(ConfigError, match=match):
        load_run_config(str(bad))


def test_checker_catches_a_wrong_bound_even_where_int32_would_wrap():
    # two 20-bit values multiplied: 40 bits. Record 32 and the int32 product would wrap silently;
    # the strict run computes it in int64 and the checker names the node.
    nodes = [Node("data", "null"), Node("c", "null"), Node("m", "broadcast_mul", ["data", "c"])]
    g = Graph(nodes, {"c": np.array([1.0], np.float32)}, ["m"])
    g.input_shapes = {"data": (-1, 2)}
    model = quantize(g, calibrate(g, np.ones((1, 2), np.float32), 1, 1))
    model.graph.params[[n for n in model.reports["m"].int_nodes if n.endswith(".q")][0]][:] = 2 ** 20
    model.precision[model.graph.outputs[0]] = 32
    big = {"data": np.full((1, 2), 2 ** 20, np.int32)}
    wrapped = run_int(model, {}, keep="outputs", overrides=big)[model.graph.outputs[0]]
    assert np.all(np.abs(wrapped) <= 2 ** 31)  # what a plain int32 run would hide
    with pytest.raises(CheckError, match="'m'"):
        run_int(model, {}, keep="outputs", overrides=big, strict=True)


def test_cli_marks_restored_nodes(tmp_path):
    text = open(sample_ini("digits_mlp")).read()
    ini = tmp_path / "r.ini"
    model_dir = os.path.join(ROOT, "sample_models", "digits_mlp")
    ini.write_text(text.replace("Model_dir=.", f"Model_dir={model_dir}").replace("Restore_name=", "Restore_name=dense1_fwd"))
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "mrt_core", "run", str(ini), "--json", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "(restored: float)" in res.stdout
    rows = {r["name"]: r for r in json.loads(out.read_text())["layers"]}
    assert rows["dense1_fwd"]["restored"] and not rows["dense0_fwd"]["restored"]
