"""ONNX import: small graphs built with onnx.helper, run through run_float, checked against numpy."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed (requirements.txt)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mrt_core.errors import ModelError  # noqa: E402
from mrt_core.float_exec import run_float  # noqa: E402
from mrt_core.onnx_io import graph_from_onnx, load_onnx  # noqa: E402
from mrt_core.prepare import prepare  # noqa: E402

RNG = np.random.RandomState(0)


def rand(*shape):
    return RNG.randn(*shape).astype(np.float32)


def make_model(nodes, inputs, outputs, inits=None, opset=13, out_shapes=None):
    """inputs: name -> shape (a str dim is symbolic); outputs: names; inits: name -> array;
    out_shapes: output shapes where ONNX's shape inference cannot find them."""
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, (out_shapes or {}).get(n)) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model)  # the checker wants the outputs' shapes filled in
    onnx.checker.check_model(model)
    return model


def run(model, x, name="x"):
    g = graph_from_onnx(model)
    out = run_float(g, {name: x})
    return g, out[g.outputs[0]].asnumpy()


def single(op, x, inits=None, extra_inputs=(), opset=13, **attrs):
    """A one-node model y = op(x, *extra_inputs)."""
    node = helper.make_node(op, ["x", *extra_inputs], ["y"], name=f"the_{op.lower()}", **attrs)
    return make_model([node], {"x": x.shape}, ["y"], inits, opset)


# ---- numpy references

def ref_conv(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), group=1):
    x = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])]).astype(np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh = (h - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd - dil[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, o, oh, ow))
    og = o // group
    for g in range(group):
        xs = x[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dil[0]:i * dil[0] + stride[0] * (oh - 1) + 1:stride[0],
                           j * dil[1]:j * dil[1] + stride[1] * (ow - 1) + 1:stride[1]]
                y[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, w[g * og:(g + 1) * og, :, i, j])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def ref_pool(x, k, s, pads, kind, include_pad=False):
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])],
                constant_values=fill)
    ones = np.pad(np.ones(x.shape[2:]), [(pads[0], pads[2]), (pads[1], pads[3])])
    if include_pad:
        ones = np.ones_like(ones)
    oh = (xp.shape[2] - k[0]) // s[0] + 1
    ow = (xp.shape[3] - k[1]) // s[1] + 1
    y = np.zeros(x.shape[:2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
            if kind == "max":
                y[:, :, i, j] = win.max(axis=(2, 3))
            else:
                y[:, :, i, j] = win.sum(axis=(2, 3)) / ones[i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]].sum()
    return y


def ref_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def close(got, want, tol=1e-4):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def ops_of(g):
    return [n.op for n in g.op_nodes()]


# ---- Conv

def test_conv_symmetric_pads_bias_stride():
    x, w, b = rand(2, 3, 9, 9), rand(4, 3, 3, 3), rand(4)
    m = single("Conv", x, {"w": w, "b": b}, ["w", "b"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    g, y = run(m, x)
    assert ops_of(g) == ["Convolution"]
    conv = g.op_nodes()[0]
    assert conv.attr("pad") == (1, 1) and conv.attr("no_bias") is False and conv.attr("num_filter") == 4
    close(y, ref_conv(x, w, b, (2, 2), (1, 1, 1, 1)))


def test_conv_asymmetric_pads_depthwise_become_explicit_pad():
    x, w = rand(1, 6, 8, 8), rand(6, 1, 3, 3)
    m = single("Conv", x, {"w": w}, ["w"], group=6, strides=[2, 2], pads=[0, 0, 1, 1])
    g, y = run(m, x)
    assert ops_of(g) == ["pad", "Convolution"]
    pad, conv = g.op_nodes()
    assert pad.attr("pad_width") == (0, 0, 0, 0, 0, 1, 0, 1)
    assert conv.attr("pad") == (0, 0) and conv.attr("num_group") == 6 and conv.attr("no_bias") is True
    close(y, ref_conv(x, w, None, (2, 2), (0, 0, 1, 1), group=6))


def test_conv_auto_pad_same_upper_and_dilation():
    x, w = rand(1, 2, 7, 7), rand(3, 2, 3, 3)
    m = single("Conv", x, {"w": w}, ["w"], auto_pad="SAME_UPPER", strides=[2, 2])
    _, y = run(m, x)
    close(y, ref_conv(x, w, None, (2, 2), (1, 1, 1, 1)))  # 7 -> 4 needs 2 pads in total: 1 each side
    m = single("Conv", x, {"w": w}, ["w"], dilations=[2, 2], pads=[2, 2, 2, 2])
    _, y = run(m, x)
    close(y, ref_conv(x, w, None, (1, 1), (2, 2, 2, 2), (2, 2)))


# ---- Gemm / MatMul

@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_trans_alpha_beta(trans_b):
    x, w, c = rand(3, 5), rand(5, 4), rand(4)
    b = w.T.copy() if trans_b else w
    m = single("Gemm", x, {"B": b, "C": c}, ["B", "C"], transB=trans_b, alpha=0.5, beta=2.0)
    g, y = run(m, x)
    assert ops_of(g) == ["FullyConnected"]
    close(y, 0.5 * x @ w + 2.0 * c)


def test_gemm_without_bias():
    x, w = rand(2, 6), rand(3, 6)
    _, y = run(single("Gemm", x, {"B": w}, ["B"], transB=1), x)
    close(y, x @ w.T)


def test_matmul_constant_right_operand_2d_and_3d():
    w = rand(6, 4)
    x2 = rand(3, 6)
    g, y = run(single("MatMul", x2, {"W": w}, ["W"]), x2)
    assert ops_of(g) == ["FullyConnected"] and g.op_nodes()[0].attr("no_bias") is True
    close(y, x2 @ w)
    x3 = rand(2, 5, 6)
    g, y = run(single("MatMul", x3, {"W": w}, ["W"]), x3)
    assert g.op_nodes()[0].attr("flatten") is False
    close(y, x3 @ w)


# ---- activations

def test_relu():
    x = rand(2, 3, 4, 4)
    g, y = run(single("Relu", x), x)
    assert ops_of(g) == ["relu"]
    close(y, np.maximum(x, 0))


def test_clip_from_attributes_and_from_constant_inputs():
    x = rand(2, 8) * 5
    g, y = run(single("Clip", x, opset=6, min=-1.0, max=2.0), x)
    assert ops_of(g) == ["clip"]
    close(y, np.clip(x, -1, 2))
    m = single("Clip", x, {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}, ["lo", "hi"])
    g, y = run(m, x)
    assert g.op_nodes()[0].attr("a_min") == 0.0 and g.op_nodes()[0].attr("a_max") == 6.0
    close(y, np.clip(x, 0, 6))


def test_softmax_axis():
    x = rand(3, 7)
    g, y = run(single("Softmax", x, axis=1), x)
    assert ops_of(g) == ["softmax"]
    close(y, ref_softmax(x, 1))


# ---- elementwise with constants

@pytest.mark.parametrize("op,fn,mx_op", [("Add", np.add, "broadcast_add"), ("Sub", np.subtract, "broadcast_sub"),
                                         ("Mul", np.multiply, "broadcast_mul")])
def test_binary_with_channel_constant_scalar_and_activation(op, fn, mx_op):
    x = rand(2, 3, 4, 5)
    c = rand(3, 1, 1)
    g, y = run(single(op, x, {"c": c}, ["c"]), x)
    assert ops_of(g) == [mx_op] and g.params["c"].shape == (1, 3, 1, 1)
    close(y, fn(x, c))
    s = np.array(1.5, np.float32)
    _, y = run(single(op, x, {"s": s}, ["s"]), x)
    close(y, fn(x, s))
    v = rand(5)  # ONNX broadcasts a 1-D constant along the last axis
    _, y = run(single(op, x, {"v": v}, ["v"]), x)
    close(y, fn(x, v))
    m = make_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node(op, ["r", "x"], ["y"])],
                   {"x": x.shape}, ["y"])
    _, y = run(m, x)
    close(y, fn(np.maximum(x, 0), x))


def test_constant_on_the_left_of_sub():
    x, c = rand(2, 3), rand(3)
    _, y = run(make_model([helper.make_node("Sub", ["c", "x"], ["y"])], {"x": x.shape}, ["y"], {"c": c}), x)
    close(y, c - x)


# ---- Pad, BatchNorm, pooling

def test_pad_constant_inputs():
    x = rand(1, 2, 3, 4)
    pads = np.array([0, 0, 1, 2, 0, 0, 3, 0], np.int64)
    g, y = run(single("Pad", x, {"p": pads}, ["p"]), x)
    assert ops_of(g) == ["pad"] and g.op_nodes()[0].attr("pad_width") == (0, 0, 0, 0, 1, 3, 2, 0)
    close(y, np.pad(x, [(0, 0), (0, 0), (1, 3), (2, 0)]))


def test_batchnorm():
    x = rand(2, 4, 3, 3)
    scale, bias, mean, var = rand(4), rand(4), rand(4), np.abs(rand(4)) + 0.5
    inits = {"s": scale, "b": bias, "m": mean, "v": var}
    g, y = run(single("BatchNormalization", x, inits, ["s", "b", "m", "v"], epsilon=1e-3), x)
    bn = g.op_nodes()[0]
    assert bn.op == "BatchNorm" and bn.attr("fix_gamma") is False and bn.attr("eps") == 1e-3
    assert {"m", "v"} <= g.aux_names
    r = lambda a: a.reshape(1, -1, 1, 1)  # noqa: E731
    close(y, (x - r(mean)) / np.sqrt(r(var) + 1e-3) * r(scale) + r(bias))


def test_max_pool_symmetric_and_asymmetric():
    x = rand(2, 3, 7, 7)
    g, y = run(single("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), x)
    assert ops_of(g) == ["Pooling"]
    close(y, ref_pool(x, (3, 3), (2, 2), (1, 1, 1, 1), "max"))
    g, y = run(single("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]), x)
    assert ops_of(g) == ["pad", "Pooling"]
    close(y, ref_pool(x, (2, 2), (2, 2), (0, 0, 1, 1), "max"))


def test_average_pool_count_include_pad():
    x = rand(1, 2, 6, 6)
    g, y = run(single("AveragePool", x, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), x)
    assert g.op_nodes()[0].attr("count_include_pad") is False
    close(y, ref_pool(x, (3, 3), (1, 1), (1, 1, 1, 1), "avg", include_pad=False))
    _, y = run(single("AveragePool", x, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                      count_include_pad=1), x)
    close(y, ref_pool(x, (3, 3), (1, 1), (1, 1, 1, 1), "avg", include_pad=True))
    g, y = run(single("AveragePool", x, kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1],
                      count_include_pad=1), x)
    assert ops_of(g) == ["pad", "Pooling"]
    close(y, ref_pool(x, (2, 2), (2, 2), (0, 0, 1, 1), "avg", include_pad=True))
    with pytest.raises(ModelError, match="count_include_pad"):
        graph_from_onnx(single("AveragePool", x, kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]))


def test_global_average_pool_and_flatten():
    x = rand(2, 5, 3, 4)
    m = make_model([helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])],
                   {"x": x.shape}, ["y"])
    g, y = run(m, x)
    assert ops_of(g) == ["Pooling", "Flatten"]
    pool = g.op_nodes()[0]
    assert pool.attr("global_pool") is True and pool.attr("pool_type") == "avg" and pool.attr("kernel") == (1, 1)
    close(y, x.mean(axis=(2, 3)))


# ---- shapes: Reshape, Concat, constant folding

def test_reshape_and_concat():
    x = rand(2, 3, 2, 2)
    m = make_model([helper.make_node("Reshape", ["x", "s"], ["r"]),
                    helper.make_node("Concat", ["r", "r"], ["y"], axis=-1)],
                   {"x": x.shape}, ["y"], {"s": np.array([0, 3, 4], np.int64)})
    g, y = run(m, x)
    assert ops_of(g) == ["Reshape", "Concat"] and g.op_nodes()[1].attr("dim") == 2
    r = x.reshape(2, 3, 4)
    close(y, np.concatenate([r, r], axis=-1))


def test_traced_reshape_keeps_batch_free():
    """torch.onnx traced at batch 1 writes Reshape(x, [1, -1]); the import must not freeze batch 1."""
    m = make_model([helper.make_node("Reshape", ["x", "s"], ["y"])], {"x": (1, 3, 2, 2)}, ["y"],
                   {"s": np.array([1, -1], np.int64)})
    g = graph_from_onnx(m)
    assert g.op_nodes()[0].attr("shape") == (0, -1) and g.input_shapes == {"x": (-1, 3, 2, 2)}
    for batch in (1, 4):
        x = rand(batch, 3, 2, 2)
        close(run_float(g, {"x": x})[g.outputs[0]].asnumpy(), x.reshape(batch, -1))


def test_shape_gather_chain_is_folded():
    """x.view(x.size(0), -1) exports as Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Shape", ["r"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("Constant", [], ["minus1"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Cast", ["target"], ["target64"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["r", "target64"], ["y"]),
    ]
    m = make_model(nodes, {"x": ("N", 3, 2, 2)}, ["y"],
                   {"zero": np.array(0, np.int64), "ax0": np.array([0], np.int64)}, out_shapes={"y": ("N", 12)})
    g = graph_from_onnx(m)
    assert ops_of(g) == ["relu", "Reshape"] and g.op_nodes()[1].attr("shape") == (0, -1)
    for batch in (1, 3):
        x = rand(batch, 3, 2, 2)
        close(run_float(g, {"x": x})[g.outputs[0]].asnumpy(), np.maximum(x, 0).reshape(batch, -1))


def test_constant_node_and_arithmetic_on_initializers_fold_into_params():
    x = rand(2, 3)
    nodes = [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.array([2.0], np.float32))),
             helper.make_node("Mul", ["w", "k"], ["w2"]),
             helper.make_node("MatMul", ["x", "w2"], ["y"])]
    w = rand(3, 4)
    g, y = run(make_model(nodes, {"x": x.shape}, ["y"], {"w": w}), x)
    assert ops_of(g) == ["FullyConnected"]
    close(y, x @ (2 * w))


# ---- errors, files, engine

def test_unknown_op_names_node_and_op():
    x = rand(2, 3)
    with pytest.raises(ModelError, match=r"'the_hardmax'.*'Hardmax'"):
        graph_from_onnx(single("Hardmax", x))


def test_load_onnx_file_and_prepare(tmp_path):
    """A conv-bn-relu-pool-gemm net from a file goes through the engine's prepare passes unchanged."""
    x = rand(2, 3, 8, 8)
    inits = {"w": rand(4, 3, 3, 3), "s": rand(4), "b": rand(4), "m": rand(4), "v": np.abs(rand(4)) + 0.5,
             "fw": rand(10, 4), "fb": rand(10)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["y"], axis=1)]
    path = tmp_path / "net.onnx"
    onnx.save(make_model(nodes, {"x": ("N", 3, 8, 8)}, ["y"], inits), str(path))
    g = load_onnx(str(path))
    want = run_float(g, {"x": x})[g.outputs[0]].asnumpy()
    bn = (ref_conv(x, inits["w"], None, pads=(1, 1, 1, 1)) - inits["m"].reshape(1, -1, 1, 1)) \
        / np.sqrt(inits["v"].reshape(1, -1, 1, 1) + 1e-5) * inits["s"].reshape(1, -1, 1, 1) + inits["b"].reshape(1, -1, 1, 1)
    logits = np.maximum(bn, 0).mean(axis=(2, 3)) @ inits["fw"].T + inits["fb"]
    close(want, ref_softmax(logits, 1))
    p = prepare(g)
    assert "BatchNorm" not in ops_of(p)
    close(run_float(p, {"x": x})[p.outputs[0]].asnumpy(), logits)  # prepare strips the output softmax


def test_bad_file_is_a_model_error(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00not a protobuf" * 10)
    with pytest.raises(ModelError):
        load_onnx(str(path))
