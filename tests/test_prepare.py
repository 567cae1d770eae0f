"""Each prepare pass keeps the float outputs (rtol 1e-5) and does its one rewrite."""
import mxnet as mx
import numpy as np
import pytest

from mrt_core import prepare as P
from mrt_core.datasets import load_dataset
from mrt_core.float_exec import infer_shapes, run_float
from mrt_core.graph import Graph
from mrt_core.mxnet_io import graph_from_json, load_mxnet
from conftest import ROOT


def _graph(sym, shapes, seed=0):
    rng = np.random.RandomState(seed)
    arg_shapes, _, aux_shapes = sym.infer_shape(**shapes)
    params = {}
    for name, shape in zip(sym.list_arguments(), arg_shapes):
        if name not in shapes:
            params[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32) if "var" in name else \
                rng.randn(*shape).astype(np.float32)
    for name, shape in zip(sym.list_auxiliary_states(), aux_shapes):
        params[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32) if "var" in name else \
            rng.randn(*shape).astype(np.float32) * 0.1
    g = graph_from_json(sym.tojson(), params, set(sym.list_auxiliary_states()))
    g.input_shapes = dict(shapes)
    return g


def _same_outputs(a: Graph, b: Graph, x):
    ya, yb = run_float(a, {"data": x}), run_float(b, {"data": x})
    for oa, ob in zip(a.outputs, b.outputs):
        np.testing.assert_allclose(yb[ob].asnumpy(), ya[oa].asnumpy(), rtol=1e-5, atol=1e-5)


def _ops(g):
    return [n.op for n in g.op_nodes()]


X = np.random.RandomState(1).randn(2, 3, 9, 9).astype(np.float32)


def test_fold_batchnorm_into_conv_and_standalone():
    d = mx.sym.var("data")
    c = mx.sym.Convolution(d, kernel=(3, 3), num_filter=4, pad=(1, 1), name="conv")
    bn = mx.sym.BatchNorm(c, fix_gamma=False, name="bn")
    bn2 = mx.sym.BatchNorm(mx.sym.relu(bn), fix_gamma=False, name="bn2")  # nothing to fold into
    g = _graph(bn2, {"data": X.shape})
    out = P.fold_batchnorm(g)
    assert "BatchNorm" not in _ops(out)
    assert _ops(out).count("broadcast_mul") == 1  # the lone BatchNorm became multiply + add
    assert "conv" not in out.value_of and out.value_of["bn"] == "conv"
    _same_outputs(g, out, X)


def test_drop_dropout_and_output_softmax():
    d = mx.sym.var("data")
    f = mx.sym.FullyConnected(mx.sym.Dropout(mx.sym.flatten(d), p=0.5), num_hidden=5, name="fc")
    g = _graph(mx.sym.softmax(f, name="prob"), {"data": X.shape})
    out = P.strip_output_softmax(P.drop_dropout(g))
    assert "Dropout" not in _ops(out) and "softmax" not in _ops(out)
    y = run_float(out, {"data": X})[out.outputs[0]].asnumpy()
    ref = run_float(g, {"data": X})[g.outputs[0]].asnumpy()
    np.testing.assert_array_equal(y.argmax(1), ref.argmax(1))


def test_fold_constants():
    d = mx.sym.var("data")
    w = mx.sym.var("w", shape=(1, 3, 1, 1))
    g = _graph(mx.sym.broadcast_mul(d, mx.sym.exp(w) * 2, name="scaled"), {"data": X.shape})
    out = P.fold_constants(g)
    assert _ops(out) == ["broadcast_mul"]
    _same_outputs(g, out, X)


def test_separate_bias_and_pad():
    d = mx.sym.var("data")
    c = mx.sym.Convolution(d, kernel=(3, 3), num_filter=4, pad=(1, 2), stride=(2, 1), name="conv")
    f = mx.sym.FullyConnected(c, num_hidden=6, name="fc")
    g = _graph(f, {"data": X.shape})
    out = P.separate_pad(P.separate_bias(P.explicit_flatten(g)))
    assert _ops(out) == ["pad", "Convolution", "broadcast_add", "Flatten", "FullyConnected", "broadcast_add"]
    conv = out.nodes["conv"]
    assert conv.attr("no_bias") is True and conv.tuple_attr("pad") == (0, 0)
    assert out.value_of["conv"] == "conv_bias_add"
    _same_outputs(g, out, X)


@pytest.mark.parametrize("kw", [dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1)), dict(kernel=(2, 2), stride=(2, 2)),
                                dict(global_pool=True, kernel=(1, 1)),
                                # windows that count fewer elements: MXNet divides by the count, not the window
                                dict(kernel=(2, 2), stride=(2, 2), pooling_convention="full"),
                                dict(kernel=(3, 3), pad=(1, 1), count_include_pad=False),
                                dict(kernel=(3, 2), stride=(2, 3), pad=(1, 0), pooling_convention="full",
                                     count_include_pad=False)])
def test_rewrite_avg_pool(kw):
    g = _graph(mx.sym.Pooling(mx.sym.var("data"), pool_type="avg", name="pool", **kw), {"data": X.shape})
    out = P.rewrite_avg_pool(g)
    assert _ops(out) == ["Pooling", "broadcast_mul"] and out.nodes["pool_sum"].attr("pool_type") == "sum"
    _same_outputs(g, out, X)


def test_infer_shapes():
    g = _graph(mx.sym.Convolution(mx.sym.var("data"), kernel=(3, 3), num_filter=4, stride=(2, 2), name="c"),
               {"data": X.shape})
    assert infer_shapes(g)["c"] == (2, 4, 4, 4)


@pytest.mark.parametrize("name", ["lenet", "resnet"])
def test_prepare_samples_keeps_outputs(name):
    g = load_mxnet(f"{ROOT}/sample_models/{name}", name)
    g.input_shapes = {"data": (-1, 1, 28, 28)}
    out = P.prepare(g)
    ops = set(_ops(out))
    assert not ops & {"BatchNorm", "Dropout"}
    assert all(n.attr("no_bias") for n in out.op_nodes() if n.op in ("Convolution", "FullyConnected"))
    assert not any(n.attr("pool_type") == "avg" for n in out.op_nodes() if n.op == "Pooling")
    x = load_dataset("mnist5k").x_test[:50]
    ya = run_float(g, {"data": x})[g.outputs[0]].asnumpy()
    yb = run_float(out, {"data": x})[out.outputs[0]].asnumpy()
    np.testing.assert_allclose(yb, ya, rtol=1e-5, atol=1e-4 * np.abs(ya).max())


def test_separate_bias_of_a_dense_layer_that_keeps_its_axes():
    """FullyConnected(flatten=False) applies to the last axis, and so does its bias."""
    sym = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=5, flatten=False, name="fc")
    g = _graph(sym, {"data": (2, 3, 7)})
    out = P.separate_bias(g)
    assert _ops(out) == ["FullyConnected", "broadcast_add"]
    _same_outputs(g, out, np.random.RandomState(3).randn(2, 3, 7).astype(np.float32))


def test_channel_granularity_on_a_dense_layer_that_keeps_its_axes_is_a_named_error():
    from mrt_core.calibrate import calibrate
    from mrt_core.errors import QuantizeError
    from mrt_core.qconfig import QuantConfig
    from mrt_core.quantize import quantize
    g = P.prepare(_graph(mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=5, flatten=False, name="fc"),
                         {"data": (2, 3, 7)}))
    x = np.random.RandomState(3).randn(2, 3, 7).astype(np.float32)
    feats = calibrate(g, x, 2, 1)
    assert quantize(g, feats).max_precision <= 32  # layer-wise works
    with pytest.raises(QuantizeError, match="'fc'.*output-channel-wise.*layer-wise"):
        quantize(g, feats, QuantConfig().with_node("fc", granularity="output-channel-wise"))
