"""Exact, deterministic execution of the integer graph, and the checker of the integer contract.

Integers are held in float arrays and every op is exact: a node runs in float32 only when all its
values and partial sums stay below 2^24 (a Convolution/FullyConnected of precision p has partial sums
below 2^(p-2)), otherwise in float64 (exact below 2^53; all values here are below 2^32).
MXNet's own ops do the heavy lifting; no custom operator, so the threaded engine cannot reorder state.
"""

from __future__ import annotations

import hashlib

import numpy as np

from . import quant_math as qm
from .errors import CheckError, ModelError
from .float_exec import mx_call
from .graph import Node

FLOAT32_EXACT_BITS = 24


def _bound(node: Node) -> int:
    return qm.int_range(int(node.attr("precision")))


def _right_shift(node: Node, x):
    """Rounding right shift on int32: ((x >> (s-1)) + 1) >> 1 is floor((floor(x / 2^(s-1)) + 1) / 2).
    One new array, then in place: allocating is what costs most on large tensors."""
    s = int(node.attr("shift_bit"))
    if s > 0:
        y = np.right_shift(x, s - 1)
        y += 1
        np.right_shift(y, 1, out=y)
    else:
        y = x.copy()
    return np.clip(y, -_bound(node), _bound(node), out=y)


def _left_shift(node, x):
    # int64: the shifted value may pass 2^31 before the clip brings it back to the precision
    y = np.left_shift(x.astype(np.int64), int(node.attr("shift_bit")))
    return np.clip(y, -_bound(node), _bound(node), out=y).astype(np.int32)


def _clip_to_precision(node, x):
    return np.clip(x, -_bound(node), _bound(node))


def _quantize(node, x):
    """A restored node's float output -> integers (round half away from zero, then clip)."""
    y = qm.round_half_away((x.astype(np.float64) - float(node.attr("zero"))) * float(node.attr("scale")))
    if "a_min" in node.attrs:
        y = np.clip(y, float(node.attr("a_min")), float(node.attr("a_max")))
    else:
        y = np.clip(y, -_bound(node), _bound(node))
    return y.astype(np.int32)


def _dequantize(node, x):
    return (x / float(node.attr("scale")) + float(node.attr("offset"))).astype(np.float32)


def _pad(node, x):
    w = node.tuple_attr("pad_width")
    mode = node.attr("mode", "constant")
    pairs = [(w[i], w[i + 1]) for i in range(0, len(w), 2)]
    if mode == "constant":
        return np.pad(x, pairs, constant_values=node.attr("constant_value", 0))
    return np.pad(x, pairs, mode={"edge": "edge", "reflect": "reflect"}[mode])


def _slice_axis(node, x):
    axis, begin, end = node.attr("axis"), node.attr("begin"), node.attr("end")
    index = [slice(None)] * x.ndim
    index[axis] = slice(begin, end)
    return x[tuple(index)]


def _clip(node, x):
    lo, hi = node.attr("a_min"), node.attr("a_max")
    if x.dtype == np.int32:
        lo, hi = int(lo), int(hi)
    return np.clip(x, lo, hi)


UNARY = {
    "cvm_right_shift": _right_shift,
    "cvm_left_shift": _left_shift,
    "cvm_clip": _clip_to_precision,
    "mrt_quantize": _quantize,
    "mrt_dequantize": _dequantize,
    "relu": lambda node, x: np.maximum(x, 0),
    "pad": _pad,
    "Flatten": lambda node, x: x.reshape(x.shape[0], -1),
    "flatten": lambda node, x: x.reshape(x.shape[0], -1),
    "slice_axis": _slice_axis,
    "clip": _clip,
}
NARY = {
    "broadcast_add": np.add, "elemwise_add": np.add, "broadcast_sub": np.subtract,
    "elemwise_sub": np.subtract, "broadcast_mul": np.multiply, "elemwise_mul": np.multiply,
}


WIDENED = tuple(NARY) + ("add_n",)  # the ops whose int32 result could wrap if a bound were wrong


def _numpy_kernel(node: Node, args: list):
    """numpy runs elementwise integer ops several times faster than mx.nd; None when it has no kernel.
    int32 is exact: every integer node's precision is at most 32 bits, products and sums included."""
    if node.op in UNARY:
        return UNARY[node.op](node, args[0])
    if node.op in NARY:
        return NARY[node.op](args[0], args[1])
    if node.op == "add_n":
        out = np.add(args[0], args[1])
        for a in args[2:]:
            out += a
        return out
    if node.op in ("Concat", "concat"):
        return np.concatenate(args, axis=int(node.attr("dim", 1)))
    return None


def _mx_dtype(node: Node, model, input_precisions: list[int]) -> str:
    """float32 when every value and partial sum stays below 2^24, else float64 (both then exact)."""
    if node.name in model.float_nodes:
        return "float32"
    prec = model.precision[node.name]
    if max(input_precisions, default=0) > FLOAT32_EXACT_BITS:
        return "float64"
    if node.op in ("Convolution", "FullyConnected"):  # partial sums stay below 2^(p-2)
        return "float32" if prec - 2 <= FLOAT32_EXACT_BITS else "float64"
    return "float32" if prec <= FLOAT32_EXACT_BITS else "float64"


def _mx_kernel(node: Node, model, args: list, strict: bool):
    import mxnet as mx
    dt = _mx_dtype(node, model, [model.precision.get(i, 32) for i in node.inputs])
    out = mx_call(node, [mx.nd.array(a, dtype=dt) for a in args]).asnumpy()
    if node.name in model.float_nodes:
        return out
    ints = out.astype(np.int32)
    if strict and not np.array_equal(ints, out):
        raise CheckError(f"integer node '{node.name}' ({node.op}) computed non-integer or out-of-int32 values")
    return ints


def quantize_inputs(model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, scale in model.input_scales.items():
        if name not in feeds:
            raise ModelError(f"no data given for graph input '{name}'")
        x = np.asarray(feeds[name], dtype=np.float64)
        if not np.isfinite(x).all():
            raise ModelError(f"input '{name}' contains NaN or inf")
        out[name] = qm.quantize_symmetric(x, scale, model.settings.input_precision).astype(np.int32)
    return out


def fingerprints(model) -> dict[str, str]:
    """Content address of every integer-graph node: equal fingerprints compute equal values."""
    fps: dict[str, str] = {}
    for node in model.graph.nodes.values():
        h = hashlib.blake2b(digest_size=12)
        if node.op == "null":
            if node.name in model.graph.params:
                arr = np.ascontiguousarray(model.graph.params[node.name])
                h.update(arr.tobytes())
                h.update(str(arr.shape).encode())
            else:
                h.update(b"input:" + node.name.encode())
        else:
            h.update(node.op.encode())
            h.update(repr(sorted(node.op_attrs().items())).encode())
            h.update(b"float" if node.name in model.float_nodes else b"int")
            for i in node.inputs:
                h.update(fps[i].encode())
        fps[node.name] = h.hexdigest()
    return fps


def run_int(model, feeds: dict[str, np.ndarray], keep="all", cache: dict | None = None,
            cache_tag: object = None, fingerprints_: dict | None = None, strict: bool = False,
            overrides: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Run the integer graph on float `feeds` (quantized here with the model's input scales).

    Integer values are int32 numpy arrays, restored (float) ones float32. keep: "outputs", "all" or names.
    strict: run the checker on every value as it is computed (and verify MXNet's results are exact integers).
    overrides: node -> value to use instead of computing it (local error feeds float-model inputs this way).
    cache: (cache_tag, fingerprint) -> value from earlier runs on the same data; a node found there is
    not recomputed, and neither is anything only it needed."""
    graph = model.graph
    overrides = overrides or {}
    qfeeds = quantize_inputs(model, feeds) if feeds else {}
    keep_set = set(graph.nodes) if keep == "all" else set(graph.outputs) if keep == "outputs" else set(keep)
    fps = (fingerprints_ or fingerprints(model)) if cache is not None else {}
    key = (lambda n: (cache_tag, fps[n])) if cache is not None else (lambda n: None)
    needed = set(keep_set)
    for node in reversed(graph.nodes.values()):  # demand: what the kept nodes need and the cache lacks
        if node.name in needed and node.name not in overrides and (cache is None or key(node.name) not in cache):
            needed.update(node.inputs)
    users = graph.consumers()
    remaining = {n: sum(1 for u in users[n] if u in needed) for n in graph.nodes}
    values, result = {}, {}
    for node in graph.nodes.values():
        if node.name not in needed:
            continue
        k = key(node.name)
        if node.name in overrides:
            value = overrides[node.name]
        elif k is not None and k in cache:
            value = cache[k]
        elif node.op == "null":
            src = graph.params[node.name] if node.name in graph.params else qfeeds[node.name]
            value = np.asarray(src, dtype=np.float32 if node.name in model.float_nodes else np.int32)
        else:
            args = [values[i] for i in node.inputs]
            in_float = node.name in model.float_nodes and not node.op.startswith("mrt_")
            if strict and not in_float and node.op in WIDENED:
                # int64 here, so a wrong precision bound shows as an out-of-range value, not a silent wrap
                value = _numpy_kernel(node, [a.astype(np.int64) if a.dtype.kind == "i" else a for a in args])
                check_integers(model, {node.name: value})
                value = value.astype(np.int32)
            else:
                value = None if in_float else _numpy_kernel(node, args)
            if value is None:
                value = _mx_kernel(node, model, args, strict)
            for i in node.inputs:  # free what no later node needs
                remaining[i] -= 1
                if remaining[i] == 0 and i not in keep_set:
                    values.pop(i, None)
        if strict and node.op != "null":
            check_integers(model, {node.name: value})  # as it is made, so nothing needs keeping for the check
        values[node.name] = value
        if node.name in keep_set:
            result[node.name] = value
    return result


def check_integers(model, values: dict) -> None:
    """Every integer intermediate must be an integer within +-(2^(p-1)-1) of its recorded precision p."""
    for name, value in values.items():
        if name in model.float_nodes or name not in model.precision:
            continue
        v = np.asarray(value)
        p = model.precision[name]
        op = model.graph.nodes[name].op
        if v.dtype.kind != "i":  # int arrays are integers by type; anything else is checked value by value
            if not np.all(np.isfinite(v)):
                raise CheckError(f"integer node '{name}' ({op}) holds NaN or inf")
            if np.any(v != np.round(v)):
                raise CheckError(f"integer node '{name}' ({op}) holds non-integer values")
        worst = max(abs(int(v.min())), abs(int(v.max()))) if v.size else 0
        if worst > qm.int_range(p):
            raise CheckError(f"integer node '{name}' ({op}) holds {worst:.0f}, outside the +-{qm.int_range(p)} "
                             f"of its recorded precision {p}")
