"""MXNet import/export: both namings, round trips, odd names, shared weights, several inputs/outputs."""
import json
import os

import mxnet as mx
import numpy as np
import pytest

from mrt_core.errors import ModelError
from mrt_core.float_exec import run_float
from mrt_core.mxnet_io import graph_to_json, load_mxnet, save_mxnet
from conftest import ROOT


def _toy_symbol():
    a = mx.sym.var("in:a")
    b = mx.sym.var("in b")
    w = mx.sym.var("shared/weight")
    fa = mx.sym.FullyConnected(a, w, num_hidden=3, no_bias=True, name="fc#1")
    fb = mx.sym.FullyConnected(b, w, num_hidden=3, no_bias=True, name="fc 2")
    return mx.sym.Group([mx.sym.relu(fa, name="out.a"), mx.sym.elemwise_add(fa, fb, name="out+b")])


def test_round_trip_multi_io_shared_weight_odd_names(tmp_path):
    sym = _toy_symbol()
    rng = np.random.RandomState(0)
    w = rng.randn(3, 4).astype(np.float32)
    sym.save(str(tmp_path / "toy-symbol.json"))
    mx.nd.save(str(tmp_path / "toy-0000.params"), {"arg:shared/weight": mx.nd.array(w)})
    g = load_mxnet(str(tmp_path), "toy")
    assert g.input_names == ["in:a", "in b"] and len(g.outputs) == 2
    feeds = {"in:a": rng.randn(2, 4).astype(np.float32), "in b": rng.randn(2, 4).astype(np.float32)}
    ref = sym.eval(ctx=mx.cpu(), **{k: mx.nd.array(v) for k, v in feeds.items()}, **{"shared/weight": mx.nd.array(w)})
    ours = run_float(g, feeds)
    for o, r in zip(g.outputs, ref):
        np.testing.assert_array_equal(ours[o].asnumpy(), r.asnumpy())
    for naming in ("gluon", "mrt"):
        save_mxnet(g, str(tmp_path / naming), "again", naming=naming)
        g2 = load_mxnet(str(tmp_path / naming), "again")
        again = run_float(g2, feeds)
        for o in g.outputs:
            np.testing.assert_array_equal(again[o].asnumpy(), ours[o].asnumpy())
    # MXNet itself reads what we write
    mx.sym.load(str(tmp_path / "mrt" / "again.json"))


@pytest.mark.parametrize("name", ["lenet", "resnet"])
def test_sample_round_trip_identical(tmp_path, name):
    from mrt_core.datasets import load_dataset
    g = load_mxnet(os.path.join(ROOT, "sample_models", name), name)
    assert any(n.endswith("batchnorm0_running_mean") for n in g.aux_names)
    x = load_dataset("mnist5k").x_test[:8]
    save_mxnet(g, str(tmp_path), name, naming="gluon")
    g2 = load_mxnet(str(tmp_path), name)
    assert g2.aux_names == g.aux_names
    np.testing.assert_array_equal(run_float(g, {"data": x})[g.outputs[0]].asnumpy(),
                                  run_float(g2, {"data": x})[g2.outputs[0]].asnumpy())


def test_malformed_files_name_the_problem(tmp_path):
    (tmp_path / "bad-symbol.json").write_text("{not json")
    mx.nd.save(str(tmp_path / "bad-0000.params"), {})
    with pytest.raises(ModelError, match="not an MXNet symbol"):
        load_mxnet(str(tmp_path), "bad")
    with pytest.raises(ModelError, match="not found"):
        load_mxnet(str(tmp_path), "missing")
    (tmp_path / "junk-symbol.json").write_text(graph_to_json.__doc__ or "{}")
    (tmp_path / "junk-0000.params").write_bytes(b"garbage")
    with pytest.raises(ModelError):
        load_mxnet(str(tmp_path), "junk")


def test_param_shape_mismatch_names_the_node(tmp_path):
    data = mx.sym.var("data")
    sym = mx.sym.FullyConnected(data, num_hidden=5, name="dense")
    sym.save(str(tmp_path / "m-symbol.json"))
    mx.nd.save(str(tmp_path / "m-0000.params"), {"arg:dense_weight": mx.nd.zeros((4, 3)),
                                                "arg:dense_bias": mx.nd.zeros(5)})
    with pytest.raises(ModelError, match="dense"):
        load_mxnet(str(tmp_path), "m")


def test_unknown_op_is_named(tmp_path):
    text = json.dumps({"nodes": [{"op": "null", "name": "data", "inputs": []},
                                 {"op": "FancyOp", "name": "weird", "inputs": [[0, 0, 0]]}],
                       "arg_nodes": [0], "heads": [[1, 0, 0]]})
    from mrt_core.mxnet_io import graph_from_json
    g = graph_from_json(text, {})
    with pytest.raises(ModelError, match="weird.*FancyOp"):
        run_float(g, {"data": np.zeros((1, 2), np.float32)})
