"""MRT V2: affine zero points, channel-wise / output-channel-wise / group-wise granularity, per-node config,
restoration, candidates and cost — each checked against a float reference or a hand-computed case."""
import os

import mxnet as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mrt_core import ops  # noqa: F401
from mrt_core import quant_math as qm
from mrt_core.calibrate import Features, calibrate, optimized_range
from mrt_core.errors import ConfigError
from mrt_core.graph import Graph, Node
from mrt_core.int_exec import check_integers, run_int
from mrt_core.mxnet_io import load_mxnet
from mrt_core.qconfig import NodeConfig, QuantConfig
from mrt_core.quantize import quantize
from mrt_core.session import Session
from conftest import ROOT, sample_ini


def _linear_graph(op, x_shape, w, groups=1, shift=0.0):
    """data -> broadcast_add(shift) -> op(W): the op's input is an intermediate, so its requantization
    (symmetric or affine) is the one under test, and the shift makes its range asymmetric."""
    attrs = {"num_hidden": w.shape[0], "no_bias": True} if op == "FullyConnected" else \
        {"kernel": w.shape[2:], "num_filter": w.shape[0], "num_group": groups, "no_bias": True}
    nodes = [Node("data", "null"), Node("shift", "null"), Node("w", "null"),
             Node("x", "broadcast_add", ["data", "shift"]),
             Node("y", op, ["x", "w"], attrs)]
    g = Graph(nodes, {"w": w.astype(np.float32), "shift": np.full((1,) * len(x_shape), shift, np.float32)}, ["y"])
    g.input_shapes = {"data": (-1,) + tuple(x_shape[1:])}
    return g


def _float_op(g, x):
    node = g.nodes["y"]
    xs = mx.nd.array(x + g.params["shift"])
    return getattr(mx.nd, node.op)(xs, mx.nd.array(g.params["w"]), **node.op_attrs()).asnumpy()


@settings(max_examples=int(os.environ.get("MRT_PROPERTY_EXAMPLES", 60)), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(op=st.sampled_from(["Convolution", "FullyConnected"]),
       channels=st.integers(1, 7), out=st.integers(1, 4), size=st.integers(3, 6),
       x_type=st.sampled_from(["UniformSymmetric", "UniformAffine"]),
       w_type=st.sampled_from(["UniformSymmetric", "UniformAffine"]),
       gran=st.sampled_from(["layer-wise", "channel-wise", "output-channel-wise"]),
       step=st.integers(1, 4), shift=st.floats(-2, 3), seed=st.integers(0, 10_000))
def test_property_dequantized_output_within_bound(op, channels, out, size, x_type, w_type, gran, step, shift, seed):
    rng = np.random.RandomState(seed)
    x_shape = (4, channels, size, size) if op == "Convolution" else (4, channels * size)
    c_in = x_shape[1]
    w = rng.randn(out, c_in, 3, 3) if op == "Convolution" else rng.randn(out, c_in)
    w = w + rng.uniform(-1, 1)  # asymmetric weights too
    x = rng.uniform(-1, 2, x_shape).astype(np.float32)
    g = _linear_graph(op, x_shape, w, shift=shift)
    cfg = QuantConfig().with_node("x", quant_type=x_type).with_node("w", quant_type=w_type) \
        .with_node("y", granularity=gran, step=step)
    model = quantize(g, calibrate(g, x, 4, 1), cfg)
    vals = run_int(model, {"data": x}, keep="all", strict=True)
    check_integers(model, vals)
    fast = run_int(model, {"data": x}, keep="all")  # the fused executor gives the reference's integers
    assert all(fast[n].dtype == v.dtype and np.array_equal(fast[n], v) for n, v in vals.items())
    qt = model.values["y"]
    got = vals[qt.name] / qt.scale
    ref = _float_op(g, x)
    # error bound from the precisions: one LSB on each input value (input quantization + requantization),
    # half an LSB on each weight, summed over the K products, plus rounding of the per-channel merge
    xr = x + np.float32(shift)
    x_abs, w_abs = float(np.abs(xr).max()), float(np.abs(w).max())
    k = int(np.prod(w.shape[1:]))
    ex = 2 * max(float(np.abs(x).max()), 1e-12) / 127 + x_abs / 127
    ew = 0.5 * w_abs / 127
    merge = (c_in + 1) * float(np.abs(ref).max() + 1e-12) / (2 ** 15 - 1)
    bound = k * (ex * w_abs + x_abs * ew + ex * ew) + merge
    assert np.abs(got - ref).max() <= bound
    assert model.max_precision <= 32


@pytest.mark.parametrize("step", [1, 3, 4])
def test_channel_split_of_constant_channels_gives_same_integers(step):
    c = 8
    x = np.ones((2, c, 3, 3), np.float32) * np.arange(1, c + 1, dtype=np.float32).reshape(1, c, 1, 1)
    w = np.ones((2, c, 1, 1), np.float32)
    nodes = [Node("data", "null"), Node("w", "null"),
             Node("y", "Convolution", ["data", "w"], {"kernel": (1, 1), "num_filter": 2, "no_bias": True})]
    g = Graph(nodes, {"w": w}, ["y"])
    g.input_shapes = {"data": (-1, c, 3, 3)}
    feats = calibrate(g, x, 2, 1)
    whole = quantize(g, feats)
    split = quantize(g, feats, QuantConfig().with_node("y", granularity="channel-wise", step=step))
    a = run_int(whole, {"data": x})[whole.graph.outputs[0]]
    b = run_int(split, {"data": x})[split.graph.outputs[0]]
    assert np.array_equal(a, b)
    n_slices = -(-c // step)
    assert sum(1 for n in split.graph.nodes.values() if n.op == "Convolution") == n_slices
    # the integers are the exact sum: xq_k = round((k+1) * 127/8), w = 127
    xq = np.round(np.arange(1, c + 1) * 127 / 8 + 1e-9)
    assert a[0, 0, 0, 0] == xq.sum() * 127


def _lenet_with_spread_channels(factors):
    """LeNet with BN0's output channel c scaled by factors[c] and conv1's matching input weights by
    1/factors[c]: the function is unchanged (relu and max pooling commute with positive scaling)."""
    g = load_mxnet(f"{ROOT}/sample_models/lenet", "lenet")
    p = g.params
    gamma = [n for n in p if n.endswith("batchnorm0_gamma")][0]
    beta = [n for n in p if n.endswith("batchnorm0_beta")][0]
    w1 = [n for n in p if n.endswith("conv1_weight")][0]
    p[gamma] = p[gamma] * factors
    p[beta] = p[beta] * factors
    p[w1] = p[w1] / factors.reshape(1, -1, 1, 1)
    g.input_shapes = {"data": (-1, 1, 28, 28)}
    return g


def test_channel_wise_recovers_what_layer_wise_loses():
    from mrt_core.datasets import load_dataset
    ds = load_dataset("mnist5k")
    rng = np.random.RandomState(0)
    factors = np.where(np.arange(16) % 2 == 0, 1.0, 1 / 200.0).astype(np.float32)
    factors = factors[rng.permutation(16)]
    g = _lenet_with_spread_channels(factors)
    session = Session(g, ds, calib_batch=100, calib_num=5)
    base = session.evaluate(session.quantize())
    assert base.float_top1 >= 97.0  # the function survived the rescaling
    cw = QuantConfig().with_node("conv1_fwd", granularity="channel-wise", step=1) \
        .with_node("conv0_fwd", granularity="output-channel-wise")
    tuned = session.evaluate(session.quantize(cw), check=True)
    assert base.quant_top1 < base.float_top1 - 2.0, "layer-wise should lose accuracy on spread channels"
    assert tuned.quant_top1 >= base.float_top1 - 0.5
    assert session.iops(session.quantize(cw)) > session.iops(session.quantize())


def test_affine_on_positive_input_uses_full_range():
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, (16, 6)).astype(np.float32)
    nodes = [Node("data", "null"), Node("w0", "null"), Node("w1", "null"),
             Node("fc0", "FullyConnected", ["data", "w0"], {"num_hidden": 5, "no_bias": True}),
             Node("r", "relu", ["fc0"]),
             Node("fc1", "FullyConnected", ["r", "w1"], {"num_hidden": 3, "no_bias": True})]
    g = Graph(nodes, {"w0": rng.randn(5, 6).astype(np.float32), "w1": rng.randn(3, 5).astype(np.float32)}, ["fc1"])
    g.input_shapes = {"data": (-1, 6)}
    feats = calibrate(g, x, 16, 1)
    for qtype, top, prec in [("UniformSymmetric", 127, 8), ("UniformAffine", 255, 9)]:
        model = quantize(g, feats, QuantConfig().with_node("r", quant_type=qtype))
        vals = run_int(model, {"data": x}, keep="all")
        xq = [n for n in model.reports["fc1"].int_nodes if model.graph.nodes[n].op in ("clip", "cvm_right_shift")][-1]
        assert vals[xq].max() == top and vals[xq].min() == 0
        assert model.precision[xq] == prec  # an affine 8-bit value needs 9 signed bits
        ref = np.maximum(x @ g.params["w0"].T, 0) @ g.params["w1"].T
        qt = model.values["fc1"]
        err = np.abs(vals[qt.name] / qt.scale - ref).max()
        assert err < 0.05 * np.abs(ref).max()


def test_restore_brings_layer_error_to_float_level_and_cli_marks_it(tmp_path):
    session, run = Session.from_ini(sample_ini("lenet"))
    base = session.quantize()
    diag = session.diagnose(base)
    target = "batchnorm1_fwd"
    assert np.isfinite(diag[target].local_sqnr_db) and diag[target].local_sqnr_db < 60
    restored = session.quantize(QuantConfig().with_node("conv1_fwd", restore=True))
    rdiag = session.diagnose(restored)
    assert rdiag[target].local_sqnr_db > 100  # float on float inputs: no error of its own
    ev = session.evaluate(restored, check=True)
    row = {l.name: l for l in ev.layers}[target]
    assert row.restored
    assert all(restored.precision[n] <= 32 for n in restored.precision if n not in restored.float_nodes)


def test_design_document_cfg_groups_round_trip():
    text = '''
  ["mrt_sym_separate_bias_alexnet0_conv0_fwd_0"]: gn_info: {"gn_type"; "channel-wise". "ichannel"; 1. "step"; 1},
  ["alexnet0_conv0_weight"]: quant_type: UniformAffine,
 	["mrt_sym_separate_bias_alexnet0_dense1_bias_0"]: quant_type: UniformAffine'''
    cfg = QuantConfig.from_mrt(text, "alexnet0_dense0_fwd")
    assert cfg["mrt_sym_separate_bias_alexnet0_conv0_fwd_0"] == NodeConfig(granularity="channel-wise", step=1)
    assert cfg["alexnet0_conv0_weight"].quant_type == "UniformAffine"
    assert cfg["alexnet0_dense0_fwd"].restore
    groups, restore = cfg.to_mrt()
    assert QuantConfig.from_mrt(groups, restore) == cfg
    assert QuantConfig.from_json(cfg.to_json()) == cfg
    # lambda 2.5 cannot be written in MRT's syntax ('.' is its separator) but JSON holds it
    lam = QuantConfig().with_node("x", optimizor={"name": "HistoricalValue", "lambda": 2.5})
    assert QuantConfig.from_json(lam.to_json()) == lam
    with pytest.raises(ConfigError, match="JSON"):
        lam.to_mrt()


@pytest.mark.parametrize("bad, match", [
    ('["n"]: gn_info: {"gn_type"; "diagonal". "step"; 1}', "diagonal"),
    ('["n"]: quant_type: UniformWeird', "UniformWeird"),
    ('["n"]: colour: red', "colour"),
    ('["n"]: gn_info: {"gn_type"; "channel-wise". "stride"; 2}', "stride"),
    ('["n"]: opt_info: {"opt_type"; "Magic"}', "Magic"),
])
def test_bad_config_values_are_named(bad, match):
    with pytest.raises(ConfigError, match=match):
        QuantConfig.from_mrt(bad)


def test_config_uses_the_users_names_through_prepare():
    session, _ = Session.from_ini(sample_ini("lenet"))
    # conv0_fwd was split into conv + bias add, and its BatchNorm folded in: the user's name still works
    model = session.quantize(QuantConfig().with_node("conv0_fwd", granularity="output-channel-wise"))
    assert np.ndim(model.reports["conv0_fwd"].weight_scale) == 1
    assert session.prepared.origin["conv0_fwd_bias_add"] == "conv0_fwd"
    with pytest.raises(ConfigError, match="conv9"):
        session.quantize(QuantConfig().with_node("conv9_fwd", restore=True))


def test_group_wise_depthwise_weight_scales():
    session, _ = Session.from_ini(sample_ini("resnet"))
    dw = [n.name for n in session.original.op_nodes() if n.op == "Convolution" and n.attr("num_group", 1) > 1][0]
    model = session.quantize(QuantConfig().with_node(dw, granularity="group-wise"))
    scales = model.reports[dw].weight_scale
    w = session.prepared.params[session.prepared.nodes[dw].inputs[1]]
    np.testing.assert_allclose(scales, 127 / np.abs(w.reshape(w.shape[0], -1)).max(axis=1), rtol=1e-6)
    ev = session.evaluate(model, check=True)
    assert ev.quant_top1 >= ev.float_top1 - 0.5


def _features(values_per_batch):
    f = Features()
    rng = np.random.RandomState(0)
    for v in values_per_batch:
        f.update(np.asarray(v, np.float32).reshape(1, -1), rng)
    return f


def test_historical_value_keeps_max_over_batches_and_lambda():
    f = _features([[1, -2, 0.5], [3, 0, -1], [0.1, 0.2, 0.3]])
    assert f.absmax == 3 and f.min == -2 and f.max == 3  # not only the last batch
    assert optimized_range(f, {"name": "HistoricalValue"}) == (-2.0, 3.0)
    values = np.r_[np.zeros(999), 100.0]
    g = _features([values])
    bound = abs(g.mean) + 3 * g.std  # 0.1 + 3 * 3.16 = 9.59 < 0.95 * 100: clipped
    lo, hi = optimized_range(g, {"name": "HistoricalValue", "lambda": 3})
    assert hi == pytest.approx(bound, rel=1e-5) and lo == 0.0


def test_moving_average_outlier_removal_and_kl():
    f = _features([[-1, 1], [-3, 3]])
    assert optimized_range(f, {"name": "MovingAverage", "c": 0.5}) == (-2.0, 2.0)
    g = _features([np.r_[np.linspace(-1, 1, 1000), 50.0]])
    lo, hi = optimized_range(g, {"name": "OutlierRemoval", "percentile": 1})
    assert hi < 2 and lo > -2
    lo, hi = optimized_range(g, {"name": "KLDivergence"})
    assert 0 < hi <= 50
    z = _features([np.zeros(100)])  # all zeros: no NaN, empty range
    assert optimized_range(z, {"name": "KLDivergence"}) == (0.0, 0.0)
    one = _features([np.r_[np.zeros(10000), 7.0]])  # mass far outside any window
    lo, hi = optimized_range(one, {"name": "KLDivergence"})
    assert np.isfinite(hi) and 0 <= hi <= 7


def test_candidates_name_nodes_with_reasons():
    session, _ = Session.from_ini(sample_ini("lenet"))
    model = session.quantize()
    ev = session.evaluate(model)
    cands = session.candidates(ev, session.diagnose(model))
    kinds = {c.kind for c in cands}
    assert "zero-point" in kinds and "restore" in kinds
    relu_inputs = [c for c in cands if c.kind == "zero-point" and c.name.startswith("pool")]
    assert relu_inputs and relu_inputs[0].score == pytest.approx(0.5, abs=0.01)  # [0, max]: half unused
    for c in cands:
        session.quantize(QuantConfig().with_node(c.name, **c.suggestion))  # every suggestion is valid


def test_export_integer_model_round_trips_and_refuses_restored(tmp_path):
    from mrt_core.errors import QuantizeError
    from mrt_core.export import export_quantized
    from mrt_core.int_exec import run_int
    from mrt_core.mxnet_io import load_mxnet
    session, _ = Session.from_ini(sample_ini("digits_mlp"))
    model = session.quantize()
    export_quantized(model, str(tmp_path), "m_int")
    g = load_mxnet(str(tmp_path), "m_int")
    assert [n.op for n in g.op_nodes()] == [n.op for n in model.graph.op_nodes()]
    for name, value in g.params.items():
        assert np.array_equal(value, model.graph.params[name]) and np.all(value == np.round(value))
    x = session.dataset.x_test[:16]
    reloaded = type(model)(g, model.precision, model.values, model.input_scales, model.reports, set(), model.settings)
    assert np.array_equal(run_int(reloaded, {"data": x})[g.outputs[0]], run_int(model, {"data": x})[g.outputs[0]])
    last = session.original.op_nodes()[-1].name
    with pytest.raises(QuantizeError, match=last):
        export_quantized(session.quantize(QuantConfig().with_node(last, restore=True)), str(tmp_path), "r")


def test_config_on_folded_or_dropped_nodes_applies_and_no_op_settings_warn():
    session, _ = Session.from_ini(sample_ini("lenet"))
    # batchnorm1_fwd was folded into conv1_fwd: restoring it restores the folded conv + BN
    model = session.quantize(QuantConfig().with_node("batchnorm1_fwd", restore=True))
    assert model.reports["conv1_fwd"].restored and not model.warnings
    model = session.quantize(QuantConfig().with_node("relu0_fwd", granularity="output-channel-wise")
                             .with_node("conv0_weight", restore=True))
    assert any("relu0_fwd" in w and "granularity" in w for w in model.warnings)
    assert any("conv0_weight" in w and "restore" in w for w in model.warnings)
    # an optimizor on conv1_fwd reaches the requantization of what relu/pool pass on from it
    a = session.quantize()
    b = session.quantize(QuantConfig().with_node("conv1_fwd", optimizor={"name": "OutlierRemoval", "percentile": 5}))
    assert not b.warnings
    assert b.values["dense0_fwd"].scale != a.values["dense0_fwd"].scale


@pytest.mark.parametrize("opt, match", [
    ({"name": "OutlierRemoval", "percentile": 150}, "percentile"),
    ({"name": "KLDivergence", "bucket_bits": 30}, "bucket_bits"),
    ({"name": "KLDivergence", "bucket_bits": "x"}, "bucket_bits"),
    ({"name": "HistoricalValue", "lambda": -1}, "lambda"),
    ({"name": "MovingAverage", "c": 5}, "c=5"),
])
def test_optimizor_attribute_ranges_are_checked(opt, match):
    with pytest.raises(ConfigError, match=match):
        QuantConfig().with_node("n", optimizor=opt)


def test_per_channel_weight_scales_spread_far_get_one_shift_per_channel():
    # a depthwise conv whose channels' weights differ by 2^16: with one shift for all, the smallest
    # channel's multiplier would keep 19 - 16 = 3 bits (a 6% scale error); one shift each keeps all 19
    rng = np.random.RandomState(3)
    c = 4
    w = rng.uniform(-1, 1, (c, 1, 3, 3)) * (2.0 ** -np.array([0, 5, 11, 16])).reshape(c, 1, 1, 1)
    g = _linear_graph("Convolution", (8, c, 6, 6), w, groups=c, shift=0.5)
    x = rng.uniform(-1, 1, (8, c, 6, 6)).astype(np.float32)
    model = quantize(g, calibrate(g, x, 8, 1), QuantConfig().with_node("y", granularity="group-wise"))
    assert model.reports["y"].scale_error < 1e-4  # one shift for all: over 6%
    shift = [n for n in model.reports["y"].int_nodes if model.graph.nodes[n].op == "cvm_right_shift"
             and len(model.graph.nodes[n].inputs) == 2]
    assert shift, "the merge should use a per-channel shift"
    node = model.graph.nodes[shift[-1]]
    shifts = model.graph.params[node.inputs[1]].reshape(-1)
    assert len(set(shifts.tolist())) > 1
    vals = run_int(model, {"data": x}, keep="all", strict=True)
    # by hand, per channel: the rounding right shift of the multiplied value, clipped to the precision
    src = vals[node.inputs[0]].astype(np.int64)
    want = np.stack([qm.right_shift_round(src[:, i], int(s), model.precision[node.name])
                     for i, s in enumerate(shifts)], axis=1)
    assert np.array_equal(vals[node.name], want)
    fast = run_int(model, {"data": x}, keep="all")
    assert all(np.array_equal(fast[n], v) for n, v in vals.items())
    qt = model.values["y"]
    ref = _float_op(g, x)
    assert np.abs(vals[qt.name] / qt.scale - ref).max() < 0.05 * np.abs(ref).max()
