"""The op registry: per MXNet op, its integer expansion rule and its IOPs weight. One entry per op.

A rule takes the QuantContext and a prepared node, emits integer-graph nodes, and returns the QTensor
holding the node's value. Adding an op means adding one entry here.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import quant_math as qm
from .errors import QuantizeError
from .graph import Node
from .quantize import QuantContext, QTensor

RULES: dict[str, Callable[[QuantContext, Node], QTensor]] = {}
ADD_OPS = ("broadcast_add", "elemwise_add", "add_n", "broadcast_sub", "elemwise_sub")
PASS_THROUGH = ("relu", "Flatten", "flatten", "Reshape", "reshape", "transpose", "expand_dims", "squeeze",
                "slice", "slice_axis", "pad", "Pad", "identity", "_copy")


def rule(*ops):
    def register(fn):
        for op in ops:
            RULES[op] = fn
        return fn
    return register


def get_rule(node: Node):
    fn = RULES.get(node.op)
    if fn is None:
        raise QuantizeError(f"{node.describe()}: no quantization rule for op '{node.op}' "
                            f"(supported: {', '.join(sorted(RULES))})")
    return fn


def unsupported(node: Node) -> str | None:
    """Why `node` has no integer rule (None when it has one)."""
    if node.op not in RULES:
        return f"op '{node.op}' has no integer rule"
    if node.op == "Activation" and node.attr("act_type") != "relu":
        return f"Activation(act_type={node.attr('act_type')}) has no integer rule"
    if node.op == "Pooling" and node.attr("pool_type", "max") not in ("max", "sum"):
        return f"pool_type '{node.attr('pool_type')}' has no integer rule"
    return None


def _input(ctx: QuantContext, name: str) -> QTensor:
    """An activation input as an integer tensor (a restored producer's float value gets quantized)."""
    if name in ctx.graph.params:
        raise QuantizeError(f"{ctx.current.describe()}: input '{name}' is a param where an activation is expected")
    x = ctx.values[name]
    return ctx.requantize(x, name) if x.is_float else x


def _symmetric_input(ctx: QuantContext, name: str, precision: int | None = None) -> QTensor:
    return ctx.symmetric(ctx.requantize(ctx.values[name], name, precision))


# ---- scale-preserving ops: same integers' meaning before and after

def _same_scale(ctx, node, op, attrs):
    """Emit a scale-preserving op; with channel-wise granularity as MRT does it: slice the channels by
    `step`, apply the op to each slice and merge them back with Concat (same scale, same integers)."""
    x = _input(ctx, node.inputs[0])
    cfg = ctx.node_config(node.name)
    if cfg.granularity != "channel-wise":
        return QTensor(ctx.emit(node.name, op, [x.name], x.precision, **attrs), x.scale, x.precision)
    ctx.node_config(node.name, "granularity")
    channels = ctx.shapes[node.inputs[0]][1]
    parts = []
    for start in range(0, channels, cfg.step):
        stop = min(start + cfg.step, channels)
        piece = ctx.emit(f"{node.name}.slice.c{start}", "slice_axis", [x.name], x.precision, axis=1,
                         begin=start, end=stop)
        parts.append(ctx.emit(f"{node.name}.c{start}", op, [piece], x.precision, **attrs))
    merged = ctx.emit(node.name, "Concat", parts, x.precision, dim=1, num_args=len(parts))
    return QTensor(merged, x.scale, x.precision)


@rule(*PASS_THROUGH)
def pass_through(ctx, node):
    if node.op in ("pad", "Pad") and node.attr("mode", "constant") == "constant" and node.attr("constant_value", 0) != 0:
        raise QuantizeError(f"{node.describe()}: only a zero constant pad keeps the scale")
    return _same_scale(ctx, node, node.op, node.attrs)


@rule("Activation")
def activation(ctx, node):
    if node.attr("act_type") != "relu":
        raise QuantizeError(f"{node.describe()}: Activation(act_type={node.attr('act_type')}) has no integer "
                            f"rule; only relu does (restore the node to keep it in float)")
    return _same_scale(ctx, node, "relu", {})


@rule("clip")
def clip(ctx, node):
    """clip(a_min, a_max) at the input's scale; its precision comes from the larger bound after scaling."""
    x = _input(ctx, node.inputs[0])
    bound = qm.int_range(x.precision)
    lo = float(qm.round_half_away(np.clip(node.attr("a_min") * x.scale, -2.0 ** 62, 2.0 ** 62)))
    hi = float(qm.round_half_away(np.clip(node.attr("a_max") * x.scale, -2.0 ** 62, 2.0 ** 62)))
    # what the clip can output for x in [-bound, bound]: a bound above the input's range raises values to it
    out_lo, out_hi = min(max(-bound, lo), hi), min(max(bound, lo), hi)
    prec = qm.precision_of(max(abs(out_lo), abs(out_hi)))
    # the same clip of those values with bounds brought within them, so that an int32 holds the bounds too
    lo = max(lo, -bound)
    hi = min(hi, max(bound, lo))
    return QTensor(ctx.emit(node.name, "clip", [x.name], prec, a_min=lo, a_max=hi), x.scale, prec)


@rule("Pooling")
def pooling(ctx, node):
    kind = node.attr("pool_type", "max")
    if kind == "max":
        if _empty_window(node, ctx.shapes[node.inputs[0]][2:], ctx.shapes[node.name][2:]):
            raise QuantizeError(f"{node.describe()}: a max window lies wholly outside the input (pooling_convention "
                                f"'full' with stride > kernel); MXNet fills it with -3.4e38, which no integer holds")
        return _same_scale(ctx, node, "Pooling", node.attrs)
    if kind == "sum":
        x = _symmetric_input(ctx, node.inputs[0])
        if node.attr("global_pool", False):
            window = int(np.prod(ctx.shapes[node.inputs[0]][2:]))
        else:
            window = int(np.prod(node.tuple_attr("kernel")))
        prec = x.precision + qm.bit_length(window)
        return QTensor(ctx.emit(node.name, "Pooling", [x.name], prec, **node.attrs), x.scale, prec)
    raise QuantizeError(f"{node.describe()}: pool_type '{kind}' has no integer rule (avg is rewritten to sum "
                        f"by the prepare passes)")


def _empty_window(node: Node, in_size, out_size) -> bool:
    if node.attr("global_pool", False):
        return False
    kernel, stride, pad = node.window()
    return any((o - 1) * s - p >= n or k <= p for n, k, s, p, o in zip(in_size, kernel, stride, pad, out_size))


# ---- quantize_scale: inputs brought to one scale (adds, Concat)

def _to_scale(ctx: QuantContext, name: str, scale: float, precision: int) -> QTensor:
    x = ctx.values[name]
    if x.is_float:
        out = ctx.emit(f"{x.name}.quantize", "mrt_quantize", [x.name], precision, scale=scale, zero=0.0,
                       precision=precision)
        return QTensor(out, scale, precision)
    if ctx.tensor_config(name).quant_type == "UniformAffine":
        x = ctx.symmetric(ctx.requantize(x, name))
    if x.scale == scale and x.precision <= precision:
        return x
    return ctx.realize(x, scale, precision, ndim=len(ctx.shapes[name]), absmax=ctx.calibrated_absmax(name))


@rule(*ADD_OPS, "Concat", "concat")
def quantize_scale(ctx, node):
    params = ctx.graph.params
    acts = [i for i in node.inputs if i not in params]
    consts = [i for i in node.inputs if i in params]
    if not acts:
        raise QuantizeError(f"{node.describe()}: all inputs are constants (fold_constants should remove it)")
    po = ctx.settings.output_precision
    is_concat = node.op in ("Concat", "concat")
    # one activation plus constants (a separated bias): keep the activation's precise scale
    lone = ctx.values[acts[0]]
    if (len(acts) == 1 and not is_concat and not lone.is_float
            and ctx.tensor_config(acts[0]).quant_type == "UniformSymmetric"):
        terms = [lone]
        scale = lone.scale
    else:
        absmax = [ctx.range_absmax(a) for a in acts]
        nonzero = [m for m in absmax if m > 0]
        scale = qm.symmetric_scale(max(nonzero), po) if nonzero else 1.0
        terms = [_to_scale(ctx, a, scale, po) for a in acts]
    by_name = {a: t for a, t in zip(acts, terms)} if len(terms) == len(acts) else {acts[0]: terms[0]}
    inputs, precs = [], []
    for name in node.inputs:
        if name in params:
            c = qm.round_half_away(params[name].astype(np.float64) * scale)
            inputs.append(ctx.constant(f"{name}.q", c))
            precs.append(ctx.precision[inputs[-1]])
        else:
            inputs.append(by_name[name].name)
            precs.append(by_name[name].precision)
    if is_concat:
        prec = max(precs)
    elif node.op in ("add_n",):
        prec = max(precs) + qm.bit_length(len(inputs))
    else:
        prec = max(precs) + 1
    if prec > qm.MAX_BIT and len(terms) == 1 and consts:
        # keeping the activation's precision overflows: fall back to requantizing it like MRT does
        absmax = ctx.range_absmax(acts[0])
        scale = qm.symmetric_scale(absmax, po)
        x = _to_scale(ctx, acts[0], scale, po)
        inputs = [x.name if i == acts[0] else ctx.constant(f"{i}.q", qm.round_half_away(params[i] * scale))
                  for i in node.inputs]
        prec = max(ctx.precision[i] for i in inputs) + 1
    return QTensor(ctx.emit(node.name, node.op, inputs, prec, **node.attrs), scale, prec)


@rule("broadcast_mul", "elemwise_mul")
def multiply(ctx, node):
    params = ctx.graph.params
    terms = []
    for name in node.inputs:
        if name in params:
            c = params[name].astype(np.float64)
            scale = qm.symmetric_scale(np.abs(c).max(), ctx.settings.output_precision)
            q = qm.quantize_symmetric(c, scale, ctx.settings.output_precision)
            terms.append(QTensor(ctx.constant(f"{name}.q", q), scale, ctx.settings.output_precision))
            ctx.precision[terms[-1].name] = qm.precision_of(np.abs(q).max())
            terms[-1].precision = ctx.precision[terms[-1].name]
        else:
            terms.append(_symmetric_input(ctx, name))
    a, b = terms
    prec = a.precision + b.precision - 1  # |a*b| <= (2^(pa-1)-1)(2^(pb-1)-1) < 2^(pa+pb-2)
    return QTensor(ctx.emit(node.name, node.op, [a.name, b.name], prec), a.scale * b.scale, prec)


# ---- Convolution and FullyConnected: the expansion formalizations 1-4

def _linear_product(ctx: QuantContext, node: Node, x: QTensor, w: np.ndarray, attrs: dict, w_name: str,
                    weight_groups: int | None, tag: str = "") -> QTensor:
    """Ye = op(Xq, Wq) [+ zp_w * op(Xq, 1)] [+ offset_x * sum(W)] at scale sx * sw (sw per channel or not)."""
    po = ctx.settings.output_precision
    w_type = ctx.node_config(w_name).quant_type
    if w_type != "UniformSymmetric":
        ctx.node_config(w_name, "quant_type")
    wq, sw, zw = ctx.quantize_weight(f"{node.name}{tag}.weight", w, po, w_type, weight_groups)
    pw = po + 1 if w_type == "UniformAffine" else po
    ctx.precision[wq] = pw
    k = int(np.prod(w.shape[1:]))
    y = ctx.emit(f"{node.name}{tag}", node.op, [x.name, wq], qm.conv_precision(k, x.precision, pw), **attrs)
    prec = ctx.precision[y]
    zw_arr = np.asarray(zw, dtype=np.float64)
    if np.any(zw_arr != 0):  # formalization 3: zp_w * (sum of Xq over each window)
        kernel = np.broadcast_to(zw_arr.reshape((-1,) + (1,) * (w.ndim - 1)) if zw_arr.ndim else zw_arr, w.shape)
        kname = ctx.constant(f"{node.name}{tag}.weight_zp", np.array(kernel))
        p2 = qm.bit_length(int(np.abs(zw_arr).max()) * k) + x.precision
        y2 = ctx.emit(f"{node.name}{tag}.zp_w", node.op, [x.name, kname], p2, **attrs)
        prec = max(prec, p2) + 1
        y = ctx.emit(f"{node.name}{tag}.sum_zp_w", "elemwise_add", [y, y2], prec)
    out_ch = w.shape[0]
    sw_arr = np.asarray(sw, dtype=np.float64)
    if x.offset != 0:  # formalization 2: offset_x * sum(W) per output channel, a constant
        wsum = (ctx.params[wq].reshape(out_ch, -1) + zw_arr.reshape(-1, 1) if zw_arr.ndim else
                ctx.params[wq].reshape(out_ch, -1) + float(zw_arr)).sum(axis=1)
        c = qm.round_half_away(x.offset * x.scale * wsum)
        ndim = len(ctx.shapes[node.name])
        cname = ctx.constant(f"{node.name}{tag}.zp_x", c.reshape((1, out_ch) + (1,) * (ndim - 2)))
        prec = max(prec, ctx.precision[cname]) + 1
        y = ctx.emit(f"{node.name}{tag}.sum_zp_x", "broadcast_add", [y, cname], prec)
    scale = x.scale * (sw_arr if sw_arr.ndim else float(sw_arr))
    return QTensor(y, scale, prec)


def _merge_scale(ctx: QuantContext, node: Node, bounds: list[float] = ()) -> float:
    """One output scale for per-channel partial results: the node's calibrated output range, widened to
    cover `bounds` (partial sums, which can exceed the output)."""
    return qm.symmetric_scale(max([ctx.range_absmax(node.name), *bounds]), ctx.settings.merge_precision)


@rule("Convolution", "FullyConnected")
def linear(ctx, node):
    x_name, w_name = node.inputs[0], node.inputs[1]
    params = ctx.graph.params
    if w_name not in params:
        raise QuantizeError(f"{node.describe()}: weight '{w_name}' must be a param")
    if len(node.inputs) > 2 and not node.attr("no_bias", False):
        raise QuantizeError(f"{node.describe()}: bias should have been separated by the prepare passes")
    w = params[w_name].astype(np.float64)
    cfg = ctx.node_config(node.name)
    attrs = {**node.attrs, "no_bias": True}
    groups = int(node.attr("num_group", 1)) if node.op == "Convolution" else 1
    ndim = len(ctx.shapes[node.name])
    ctx.extra = {"weight_scale": None}
    if node.op == "FullyConnected" and ndim > 2 and cfg.granularity != "layer-wise":
        ctx.node_config(node.name, "granularity")
        raise QuantizeError(f"{node.describe()}: granularity '{cfg.granularity}' needs the channels on axis 1; "
                            f"a FullyConnected with flatten=False has them last (use layer-wise)")
    if cfg.granularity == "channel-wise":
        ctx.node_config(node.name, "granularity")
        return _channel_split(ctx, node, w, attrs, groups, cfg.step)
    x = ctx.requantize(ctx.values[x_name], x_name)
    if cfg.granularity == "layer-wise" or (cfg.granularity == "group-wise" and groups == 1):
        y = _linear_product(ctx, node, x, w, attrs, w_name, None)
        ctx.extra["weight_scale"] = y.scale / x.scale
        return y
    ctx.node_config(node.name, "granularity")
    block = w.shape[0] // groups if cfg.granularity == "group-wise" else 1
    y = _linear_product(ctx, node, x, w, attrs, w_name, block)
    ctx.extra["weight_scale"] = np.asarray(y.scale) / x.scale
    absmax = ctx.features[node.name].channel_absmax
    return ctx.realize(y, _merge_scale(ctx, node), ctx.settings.merge_precision, tag="merge", ndim=ndim,
                       absmax=absmax if absmax is not None else ctx.calibrated_absmax(node.name))


def _channel_split(ctx, node, w, attrs, groups, step):
    """MRT channel-wise granularity: slice the input channels by `step`, quantize each slice with its own
    scale, run the partial ops, bring them to one scale and merge (add_n; Concat over groups)."""
    x_name, w_name = node.inputs[0], node.inputs[1]
    x = _input(ctx, x_name)
    ndim = len(ctx.shapes[node.name])
    out_ch, per_group_in = w.shape[0], w.shape[1]
    per_group_out = out_ch // groups
    partials, weight_scales, bounds = [], [], []
    for g in range(groups):
        partials.append([])
        for start in range(0, per_group_in, step):
            stop = min(start + step, per_group_in)  # a step that does not divide C leaves a shorter slice
            lo, hi = g * per_group_in + start, g * per_group_in + stop
            tag = f".g{g}" * (groups > 1) + f".c{start}"
            xs = ctx.emit(f"{x.name}.slice{tag}_{node.name}", "slice_axis", [x.name], x.precision,
                          axis=1, begin=lo, end=hi)
            # a slice already at the wanted bits keeps its integers; a wider one gets its own scale
            xq = ctx.requantize(QTensor(xs, x.scale, x.precision), x_name, channels=slice(lo, hi))
            ws = w[g * per_group_out:(g + 1) * per_group_out, start:stop]
            part_attrs = dict(attrs)
            if node.op == "Convolution":
                part_attrs.update(num_group=1, num_filter=per_group_out)
            y = _linear_product(ctx, node, xq, ws, part_attrs, w_name, None, tag=tag)
            weight_scales.append(y.scale / xq.scale)
            partials[g].append(y)
            # partial sums can exceed the final output (they cancel when added): bound each from the
            # calibrated input channel ranges and the weights, max over output channels
            x_abs = ctx.features[x_name].channel_absmax[lo:hi].astype(np.float64)
            w_abs = np.abs(ws).reshape(ws.shape[0], ws.shape[1], -1).sum(axis=2)
            bounds.append(float((w_abs * x_abs).sum(axis=1).max()))
    scales = {float(y.scale) for ys in partials for y in ys}
    if len(scales) > 1:  # quantize_scale: partial sums at different scales meet at one
        mp = ctx.settings.merge_precision
        merge_scale = _merge_scale(ctx, node, bounds)
        flat = iter(bounds)
        partials = [[ctx.realize(y, merge_scale, mp, tag="merge", ndim=ndim, absmax=next(flat)) for y in ys]
                    for ys in partials]
    else:
        merge_scale = scales.pop()
    group_outputs = []
    for g, ys in enumerate(partials):
        if len(ys) == 1:
            group_outputs.append(ys[0])
            continue
        prec = max(y.precision for y in ys) + qm.bit_length(len(ys))
        name = ctx.emit(f"{node.name}.g{g}.sum" if groups > 1 else f"{node.name}.sum", "add_n",
                        [y.name for y in ys], prec, num_args=len(ys))
        group_outputs.append(QTensor(name, merge_scale, prec))
    ctx.extra["weight_scale"] = np.array(weight_scales)
    if groups == 1:
        return group_outputs[0]
    prec = max(t.precision for t in group_outputs)
    name = ctx.emit(f"{node.name}.concat", "Concat", [t.name for t in group_outputs], prec, dim=1,
                    num_args=len(group_outputs))
    return QTensor(name, merge_scale, prec)


# ---- IOPs (DESIGN.md, Cost): op weight x output size

DATA_MOVEMENT = ("Flatten", "flatten", "Reshape", "reshape", "transpose", "expand_dims", "squeeze", "slice",
                 "slice_axis", "pad", "Pad", "identity", "_copy", "Concat", "concat", "mrt_dequantize")


def iops(node: Node, out_shape: tuple, in_shapes: list[tuple], params: dict) -> int:
    """Integer ops of one node for one sample: op weight x output size (DESIGN.md, Cost)."""
    size = int(np.prod(out_shape[1:])) if out_shape else 1
    op = node.op
    if op == "null" or op in DATA_MOVEMENT:
        return 0
    if op in ("Convolution", "FullyConnected"):
        return 3 * int(np.prod(in_shapes[1][1:])) * size
    if op == "Pooling":
        if node.attr("global_pool", False):
            return int(np.prod(in_shapes[0][2:])) * size
        return int(np.prod(node.tuple_attr("kernel"))) * size
    return size
