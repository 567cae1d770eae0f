"""Prepare passes: each is one rewrite Graph -> Graph that keeps the float outputs identical.

`prepare` runs them in the order MRT's GEN module does before calibration.
"""

from __future__ import annotations

import numpy as np

from .errors import ModelError
from .float_exec import infer_shapes
from .graph import Graph, GraphBuilder, Node, rewrite

_SOFTMAX_OPS = {"softmax", "SoftmaxOutput", "SoftmaxActivation", "log_softmax"}


def drop_dropout(graph: Graph) -> Graph:
    return rewrite(graph, lambda node, b: node.inputs[0] if node.op == "Dropout" else None)


def strip_output_softmax(graph: Graph) -> Graph:
    """A softmax on a graph output does not change top-k; integer inference stops at the logits."""
    outputs = set(graph.outputs)

    def rule(node: Node, b: GraphBuilder):
        if node.op in _SOFTMAX_OPS and node.name in outputs:
            b.lost.add(node.name)
            return node.inputs[0]
        return None
    return rewrite(graph, rule)


def fold_constants(graph: Graph) -> Graph:
    """Evaluate every op node whose inputs are all params and store the result as a param."""
    import mxnet as mx
    from .float_exec import mx_call

    def rule(node: Node, b: GraphBuilder):
        if node.op == "null" or not node.inputs or not all(i in b.params for i in node.inputs):
            return None
        value = mx_call(node, [mx.nd.array(b.params[i]) for i in node.inputs]).asnumpy()
        b.params[node.name] = value
        return b.add(Node(node.name, "null"))
    return rewrite(graph, rule)


def _channel_shape(ndim: int, channels: int) -> tuple:
    return (1, channels) + (1,) * (ndim - 2)


def fold_batchnorm(graph: Graph) -> Graph:
    """BatchNorm after a Convolution/FullyConnected used only by it is folded into its weight and bias;
    any other BatchNorm becomes a per-channel broadcast_mul and broadcast_add."""
    users = graph.consumers()
    shapes = infer_shapes(graph)

    def rule(node: Node, b: GraphBuilder):
        if node.op != "BatchNorm":
            return None
        if node.attr("axis", 1) != 1:
            raise ModelError(f"{node.describe()}: only axis=1 (channels first) is supported")
        x, gamma, beta, mean, var = node.inputs
        p = b.params
        if not all(k in p for k in (gamma, beta, mean, var)):
            raise ModelError(f"{node.describe()}: its gamma/beta/mean/var must be params")
        channels = shapes[x][1]
        for role, name in (("gamma", gamma), ("beta", beta), ("moving mean", mean), ("moving var", var)):
            if p[name].size != channels:
                raise ModelError(f"{node.describe()}: its {role} '{name}' has shape {p[name].shape}, the input "
                                 f"has {channels} channels")
        g = np.ones_like(p[gamma]) if node.attr("fix_gamma", True) else p[gamma]
        a = (g / np.sqrt(p[var].astype(np.float64) + node.attr("eps", 1e-3))).astype(np.float64)
        shift = p[beta] - p[mean] * a
        prev = b.get(x)
        if (prev.op in ("Convolution", "FullyConnected") and len(users[x]) == 1 and x not in graph.outputs
                and prev.inputs[1] in p):
            w = p[prev.inputs[1]].astype(np.float64)
            w = w * a.reshape((-1,) + (1,) * (w.ndim - 1))
            bias = shift if prev.attr("no_bias", False) else p[prev.inputs[2]] * a + shift
            wname = b.param(f"{prev.name}_weight_bnfold", w, origin=prev.inputs[1])
            bname = b.param(f"{prev.name}_bias_bnfold", bias, origin=None if prev.attr("no_bias", False) else prev.inputs[2])
            b.replace_node(prev.replace(inputs=[prev.inputs[0], wname, bname], attrs={**prev.attrs, "no_bias": "False"}))
            b.lost.add(x)  # the conv's own output now exists only with the BN applied
            return prev.name
        ndim = len(shapes[node.name])
        cshape = _channel_shape(ndim, a.size)
        scale = b.param(f"{node.name}_scale", a.reshape(cshape))
        offset = b.param(f"{node.name}_shift", shift.reshape(cshape))
        mul = b.op(f"{node.name}_mul", "broadcast_mul", [x, scale])
        return b.add(Node(node.name, "broadcast_add", [mul, offset]))
    return rewrite(graph, rule)


def separate_bias(graph: Graph) -> Graph:
    """Convolution/FullyConnected with a bias -> the op without bias followed by a broadcast_add."""
    shapes = infer_shapes(graph)

    def rule(node: Node, b: GraphBuilder):
        if node.op not in ("Convolution", "FullyConnected") or node.attr("no_bias", False) or len(node.inputs) < 3:
            return None
        bias = node.inputs[2]
        if bias not in b.params:
            raise ModelError(f"{node.describe()}: bias '{bias}' must be a param")
        core = b.add(node.replace(inputs=node.inputs[:2], attrs={**node.attrs, "no_bias": "True"}))
        ndim, size = len(shapes[node.name]), b.params[bias].size
        if node.op == "FullyConnected" and ndim > 2:  # flatten=False: the outputs are the last axis
            bshape = (1,) * (ndim - 1) + (size,)
        else:
            bshape = _channel_shape(ndim, size)
        bname = b.param(f"{node.name}_bias", b.params[bias].reshape(bshape), origin=bias)
        return b.op(f"{node.name}_bias_add", "broadcast_add", [core, bname])
    return rewrite(graph, rule)


def explicit_flatten(graph: Graph) -> Graph:
    """FullyConnected flattens a >2-D input implicitly; make it a Flatten node so channels can be sliced."""
    shapes = infer_shapes(graph)

    def rule(node: Node, b: GraphBuilder):
        if node.op != "FullyConnected" or len(shapes[node.inputs[0]]) <= 2 or node.attr("flatten", True) is False:
            return None
        flat = b.op(f"{node.name}_flatten", "Flatten", [node.inputs[0]])
        return b.add(node.replace(inputs=[flat] + node.inputs[1:]))
    return rewrite(graph, rule)


def separate_pad(graph: Graph) -> Graph:
    """Convolution with padding -> an explicit `pad` (constant 0) followed by the unpadded Convolution."""
    def rule(node: Node, b: GraphBuilder):
        if node.op != "Convolution":
            return None
        pad = node.tuple_attr("pad", (0, 0))
        if not any(pad):
            return None
        if len(pad) != 2:
            raise ModelError(f"{node.describe()}: only 2-D convolution is supported (pad {pad})")
        ph, pw = pad
        padded = b.op(f"{node.name}_pad", "pad", [node.inputs[0]], mode="constant", constant_value=0,
                      pad_width=(0, 0, 0, 0, ph, ph, pw, pw))
        return b.add(node.replace(inputs=[padded] + node.inputs[1:], attrs={**node.attrs, "pad": (0, 0)}))
    return rewrite(graph, rule)


def rewrite_avg_pool(graph: Graph) -> Graph:
    """Average pooling (windowed or global) -> sum pooling times 1/window, or times 1/count per output position
    where windows cut by the edge count fewer elements (MXNet divides by that count)."""
    shapes = infer_shapes(graph)

    def rule(node: Node, b: GraphBuilder):
        if node.op != "Pooling" or node.attr("pool_type", "max") != "avg":
            return None
        if node.attr("global_pool", False):
            inverse = np.array([1.0 / int(np.prod(shapes[node.inputs[0]][2:]))])
        else:
            counts = _avg_pool_counts(node, shapes[node.inputs[0]][2:], shapes[node.name][2:])
            if counts.min() == counts.max():
                inverse = np.array([1.0 / counts.flat[0]])
            elif counts.ndim == 2:  # windows cut by the edge count fewer elements: one 1/count per position
                # (a window wholly outside the input sums nothing: any factor gives MXNet's 0)
                inverse = (1.0 / np.maximum(counts, 1)).reshape((1, 1) + counts.shape)
            else:
                raise ModelError(f"{node.describe()}: {counts.ndim}-d average pooling whose windows count "
                                 f"different numbers of elements has no integer rewrite")
        summed = b.op(f"{node.name}_sum", "Pooling", node.inputs, **{**node.attrs, "pool_type": "sum"})
        inv = b.param(f"{node.name}_inv_window", inverse.astype(np.float32))
        return b.add(Node(node.name, "broadcast_mul", [summed, inv]))
    return rewrite(graph, rule)


def _avg_pool_counts(node: Node, in_size, out_size) -> np.ndarray:
    """How many elements MXNet's average pooling divides each output by: the window cut to the padded
    input (a "full" convention's last window can overhang it), and to the input itself when padding does
    not count (count_include_pad=False)."""
    kernel, stride, pad = node.window()
    include_pad = node.attr("count_include_pad", True) is not False
    per_axis = []
    for n, k, s, p, o in zip(in_size, kernel, stride, pad, out_size):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, n + p)
        if not include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        per_axis.append(end - start)
    counts = per_axis[0]
    for axis in per_axis[1:]:
        counts = np.multiply.outer(counts, axis)
    return np.asarray(counts, dtype=np.float64)


PASSES = [drop_dropout, strip_output_softmax, fold_constants, fold_batchnorm, explicit_flatten, separate_bias,
          separate_pad, rewrite_avg_pool]


def prepare(graph: Graph) -> Graph:
    for step in PASSES:
        graph = step(graph)
    infer_shapes(graph)  # every node must have a shape; fails naming the node otherwise
    return graph
