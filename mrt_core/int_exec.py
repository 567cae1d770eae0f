"""Exact, deterministic execution of the integer graph, and the checker of the integer contract.

Integers are held in float arrays and every op is exact: a node runs in float32 only when all its
values and partial sums stay below 2^24 (a Convolution/FullyConnected of precision p has partial sums
below 2^(p-2)), otherwise in float64 (exact below 2^53; all values here are below 2^32).
MXNet's own ops do the heavy lifting; no custom operator, so the threaded engine cannot reorder state.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from . import quant_math as qm
from .errors import CheckError, ModelError
from .float_exec import mx_call
from .graph import Node
from .int_kernels import ADD, CHANNEL_RIGHT_SHIFT, CLIP, LEFT_SHIFT, MUL, RELU, RIGHT_SHIFT, Chain, keeps_zero, pool

FLOAT32_EXACT_BITS = 24


def _bound(node: Node) -> int:
    return qm.int_range(int(node.attr("precision")))


def _right_shift(node: Node, x, shifts=None):
    """Rounding right shift on int32: ((x >> (s-1)) + 1) >> 1 is floor((floor(x / 2^(s-1)) + 1) / 2).
    shifts: a constant of one shift (>= 1) per channel, instead of the node's shift_bit.
    One new array, then in place: allocating is what costs most on large tensors."""
    s = shifts.astype(x.dtype) if shifts is not None else int(node.attr("shift_bit"))
    if np.all(s > 0):
        y = np.right_shift(x, s - 1)
        if np.any(s == 1) and y.dtype == np.int32:
            y = y.astype(np.int64)  # the + 1 would wrap 2^31 - 1
        y += 1
        np.right_shift(y, 1, out=y)
    else:
        y = x.copy()
    return np.clip(y, -_bound(node), _bound(node), out=y).astype(x.dtype, copy=False)


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


def has_numpy_kernel(op: str) -> bool:
    return op in UNARY or op in NARY or op in ("add_n", "Concat", "concat")


def _numpy_kernel(node: Node, args: list):
    """numpy runs elementwise integer ops several times faster than mx.nd; None when it has no kernel.
    int32 is exact: every integer node's precision is at most 32 bits, products and sums included."""
    if node.op in UNARY:
        return UNARY[node.op](node, *args)  # a per-channel shift has its shifts as a second input
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


def _per_node(model, node: Node, decide):
    """decide(node, model), worked out once per model and node (the executor asks on every run)."""
    key = (decide.__name__, node.name)
    if key not in model.exec_cache:
        model.exec_cache[key] = decide(node, model)
    return model.exec_cache[key]


def _mx_dtype(node: Node, model) -> str:
    """float32 when every value and partial sum stays below 2^24, else float64 (both then exact)."""
    return _per_node(model, node, _exact_dtype)


def _exact_dtype(node: Node, model) -> str:
    if node.name in model.float_nodes:
        return "float32"
    in_prec = [model.precision.get(i, 32) for i in node.inputs]
    if max(in_prec, default=0) > FLOAT32_EXACT_BITS:
        return "float64"
    params = model.graph.params
    if node.op in ("Convolution", "FullyConnected"):
        bound = 2.0 ** (model.precision[node.name] - 2)  # the precision's bound on every partial sum
        if len(node.inputs) > 1 and node.inputs[1] in params:
            # sharper, from the weights themselves: any partial sum of one output, in any order, is at most
            # max|x| * sum|w| over that output's weights (a 1152-input conv of 8-bit values: 2^22, not 2^25)
            w = np.abs(np.asarray(params[node.inputs[1]], dtype=np.float64))
            bound = min(bound, qm.int_range(in_prec[0]) * float(w.reshape(len(w), -1).sum(axis=1).max())
                        + sum(float(np.abs(params[b]).max()) for b in node.inputs[2:] if b in params))
        return "float32" if bound < 2 ** FLOAT32_EXACT_BITS else "float64"
    return "float32" if model.precision[node.name] <= FLOAT32_EXACT_BITS else "float64"


def _mx_kernel(node: Node, model, args: list, strict: bool):
    import mxnet as mx
    dt = _mx_dtype(node, model)
    out = mx_call(node, [mx.nd.array(a, dtype=dt) for a in args]).asnumpy()
    if node.name in model.float_nodes:
        return out
    ints = out.astype(np.int32)
    if strict and not np.array_equal(ints, out):
        raise CheckError(f"integer node '{node.name}' ({node.op}) computed non-integer or out-of-int32 values")
    return ints


def _override_value(model, name: str, value) -> np.ndarray:
    """A value given for node `name`: float32 for a float node, else int32 holding the same integers."""
    value = np.asarray(value)
    if name in model.float_nodes:
        return value.astype(np.float32, copy=False)
    if value.dtype.kind == "f" and not (np.all(np.isfinite(value)) and np.array_equal(value, np.round(value))):
        raise ModelError(f"the value given for integer node '{name}' holds non-integer values")
    return value.astype(np.int32, copy=False)


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


def checkpoints(model) -> set[str]:
    """The integer values a rerun restarts from: every (non-constant) input of a Convolution or
    FullyConnected, and every value of a user's node that fits 8 bits (one byte each; most are
    requantized to the output precision). At most one layer apart."""
    graph = model.graph
    inputs = {i for n in graph.op_nodes() if n.op in ("Convolution", "FullyConnected")
              and n.name not in model.float_nodes for i in n.inputs if i not in graph.params}
    narrow = {qt.name for qt in model.values.values() if not qt.is_float and model.precision.get(qt.name, 32) <= 8}
    return {n for n in inputs | narrow if n not in model.float_nodes and graph.nodes[n].op != "null"}


def compact(value: np.ndarray, precision: int) -> np.ndarray:
    """An integer value in the fewest bytes its precision allows (run_int widens it back)."""
    dtype = np.int8 if precision <= 8 else np.int16 if precision <= 16 else np.int32
    return value.astype(dtype, copy=False)


def run_int(model, feeds: dict[str, np.ndarray], keep="all", cache: dict | None = None,
            cache_tag: object = None, fingerprints_: dict | None = None, strict: bool = False,
            overrides: dict[str, np.ndarray] | None = None, compact_kept: bool = False) -> dict[str, np.ndarray]:
    """Run the integer graph on float `feeds` (quantized here with the model's input scales).

    Integer values are int32 numpy arrays, restored (float) ones float32. keep: "outputs", "all" or names.
    strict: run the checker on every value as it is computed (and verify MXNet's results are exact integers);
    each node then runs on its own, the reference the fused fast path is tested against.
    overrides: node -> value to use instead of computing it (local error feeds float-model inputs this way).
    cache: (cache_tag, fingerprint) -> value from earlier runs on the same data; a node found there is
    not recomputed, and neither is anything only it needed.
    compact_kept: kept integer values come back in the fewest bytes their precision allows (compact())."""
    graph = model.graph
    overrides = overrides or {}
    qfeeds = quantize_inputs(model, feeds) if feeds else {}
    keep_set = set(graph.nodes) if keep == "all" else set(graph.outputs) if keep == "outputs" else set(keep)
    fps = (fingerprints_ or fingerprints(model)) if cache is not None else {}
    key = (lambda n: (cache_tag, fps[n])) if cache is not None else (lambda n: None)
    needed = set(keep_set)
    sources = set()
    for node in reversed(graph.nodes.values()):  # demand: what the kept nodes need and the cache lacks
        if node.name not in needed:
            continue
        if node.name in overrides or (cache is not None and key(node.name) in cache):
            sources.add(node.name)
        else:
            needed.update(node.inputs)
    overrides = {n: _override_value(model, n, v) for n, v in overrides.items() if n in needed}
    run = _NodeByNode(model, needed, keep_set) if strict else _Fused(model, needed, keep_set, int8=not overrides)
    result = {}
    for node in graph.nodes.values():
        if node.name not in needed:
            continue
        if node.name in overrides:
            run.put(node.name, overrides[node.name])
        elif node.name in sources:
            value = cache[key(node.name)]
            run.put(node.name, value.astype(np.int32) if value.dtype.kind == "i" and value.itemsize < 4 else value)
        elif node.op == "null":
            src = graph.params[node.name] if node.name in graph.params else qfeeds[node.name]
            run.put(node.name, np.asarray(src, dtype=np.float32 if node.name in model.float_nodes else np.int32))
        else:
            run.compute(node)
        if node.name in keep_set:
            value = run.get(node.name)
            if compact_kept and node.name not in model.float_nodes and node.name in model.precision:
                value = compact(value, model.precision[node.name])
            result[node.name] = value
    return result


class _NodeByNode:
    """Every node on its own, checked as it is made: the reference, and the checker's executor."""

    def __init__(self, model, needed: set[str], keep: set[str]):
        self.model, self.keep = model, keep
        users = model.graph.consumers()
        self.users = {n: [u for u in users[n] if u in needed] for n in model.graph.nodes}  # needed readers
        self.remaining = {n: len(u) for n, u in self.users.items()}
        self.values: dict[str, np.ndarray] = {}
        self.pending: dict[str, Chain] = {}

    def put(self, name: str, value) -> None:
        self.values[name] = value

    def get(self, name: str) -> np.ndarray:
        return self.values[name]

    def release(self, node: Node) -> None:
        for i in node.inputs:  # free what no later node needs
            self.remaining[i] -= 1
            if self.remaining[i] == 0 and i not in self.keep:
                self.values.pop(i, None)
                self.pending.pop(i, None)

    def compute(self, node: Node) -> None:
        model = self.model
        args = [self.values[i] for i in node.inputs]
        in_float = node.name in model.float_nodes and not node.op.startswith("mrt_")
        if not in_float and node.op in WIDENED:
            # int64 here, so a wrong precision bound shows as an out-of-range value, not a silent wrap
            value = _numpy_kernel(node, [a.astype(np.int64) if a.dtype.kind == "i" else a for a in args])
            check_integers(model, {node.name: value})
            value = value.astype(np.int32)
        else:
            value = None if in_float else _numpy_kernel(node, args)
        if value is None:
            value = _mx_kernel(node, model, args, strict=True)
        self.release(node)
        check_integers(model, {node.name: value})  # as it is made, so nothing needs keeping for the check
        self.values[node.name] = value


class _Fused(_NodeByNode):
    """The fast path, with the same values.

    - Runs of elementwise integer ops (bias add, relu, the shifts and multiplies of a requantization,
      clips) wait as a Chain and run in one pass when their value is needed.
    - A zero pad joins the chain, and a Convolution reading it takes it as its own padding.
    - MXNet results stay MXNet arrays until numpy needs them, so MXNet op after MXNet op stays in MXNet's
      own layout; a max pool reading a chain of non-decreasing steps runs before them (max commutes
      with those), on the MXNet result and on 1/k of the data for the chain.
    - A Convolution whose data is non-negative by construction and at most 8 bits runs as MXNet's int8
      convolution (_takes_int8); max and sum pools run in integer kernels; FullyConnected in numpy's BLAS.
    - Weights become MXNet arrays once per model."""

    def __init__(self, model, needed: set[str], keep: set[str], int8: bool = True):
        super().__init__(model, needed, keep)
        self.borrowed: set[str] = set()
        self.int8 = int8  # int8 convolutions rely on how their data was made: not with values given from outside
        _single_thread_blas()

    def put(self, name: str, value) -> None:
        self.pending.pop(name, None)
        self.values[name] = value
        self.borrowed.add(name)  # the caller's array (an input, a cached value): never handed to MXNet as is

    def _alone(self, name: str) -> bool:
        return name not in self.keep and len(self.users[name]) == 1

    def get(self, name: str) -> np.ndarray:
        """Node `name`'s value as numpy, running its chain first if it waits on one."""
        return self.take(name)[0]

    def take(self, name: str, mx_dtype: str | None = None, can_pad: bool = False):
        """(value, pad). mx_dtype: the only reader is an MXNet op in that dtype, which may get an MXNet
        array, or numpy in float32 (exact: the value is below 2^24) or uint8 (an int8 convolution's input).
        can_pad: that reader (a Convolution) may take a chain's zero pad as (rows, columns) instead of the
        padded value."""
        chain = self.pending.pop(name, None)
        if chain is None:
            return self.values[name], None
        alone = mx_dtype is not None and self._alone(name)
        pad = chain.pad if alone and can_pad else None
        if not chain.steps and alone and (pad is not None or chain.pad is None) \
                and _is_mx(chain.source) and chain.source.dtype == np.dtype(mx_dtype):
            return chain.source, pad  # MXNet to MXNet: no copy, no conversion
        dtype = np.dtype(mx_dtype if alone and mx_dtype in ("float32", "uint8") else np.int32)
        if chain.steps:
            value = chain.run(dtype)
        else:
            src = chain.numpy_source()
            value = src if src.dtype == dtype else src.astype(dtype)
        if pad is not None:
            return value, pad  # not stored: this reader is the only one
        if chain.pad is not None:
            value = _zero_pad(value, chain.pad)
        if not alone:
            self.values[name] = value
        return value, None

    def _join(self, data: str, keeps_zero_: bool = True, const=None, pads: bool = False) -> Chain | None:
        """The chain the next step (or pad) on `data` runs in: the one `data` waits on when it may join
        (a step joins after a pad only when it keeps zeros; a pad joins no pad), else a new one on the
        value of `data`; None when the step's constant does not fit a chain."""
        chain = self.pending.get(data)
        if (chain is not None and self._alone(data) and chain.accepts(const)
                and (chain.pad is None or (keeps_zero_ and not pads))):
            del self.pending[data]
            return chain
        chain = Chain(self.get(data))
        return chain if chain.accepts(const) else None

    def compute(self, node: Node) -> None:
        model = self.model
        step = _chain_step(model, node)
        chain = None
        if step is not None:
            data, code, a, b, const = step
            chain = self._join(data, keeps_zero(code, a, b, const), const)
            if chain is not None:
                chain.add(code, a, b, const)
        elif (pad := _zero_pad_widths(model, node)) is not None:
            chain = self._join(node.inputs[0], pads=True)
            chain.pad = pad
        elif _is_max_pool(model, node):
            chain = self._pool_first(node)
        if chain is not None:
            self.pending[node.name] = chain
            self.release(node)
            return
        in_float = node.name in model.float_nodes and not node.op.startswith("mrt_")
        if (window := _pool_window(model, node)) is not None \
                and (args := window((x := self.get(node.inputs[0])).shape)) is not None:
            self.values[node.name] = pool(x, *args)
        elif (weight := _dense_weight(model, node)) is not None:
            # BLAS on integer-valued floats is exact under the same bound as MXNet's: below MXNet's per-call cost
            x = self.get(node.inputs[0])
            self.pending[node.name] = Chain(x.reshape(len(x), -1).astype(weight.dtype, copy=False) @ weight)
        elif not in_float and has_numpy_kernel(node.op):
            self.values[node.name] = _numpy_kernel(node, [self.get(i) for i in node.inputs])
        elif in_float:
            self.values[node.name] = self._mx(node).asnumpy()
        elif self.int8 and _takes_int8(model, node):
            self.pending[node.name] = self._int8(node)
        else:
            self.pending[node.name] = Chain(self._mx(node))  # raw MXNet result: converted when needed
        self.release(node)

    def _pool_first(self, node: Node) -> Chain | None:
        """max_pool(chain(x)) as chain(max_pool(x)) when every step is non-decreasing and x is an MXNet
        float result or the integer pool kernel takes the pool, else None."""
        data = node.inputs[0]
        chain = self.pending.get(data)
        if (chain is None or not chain.steps or chain.pad is not None or not self._alone(data)
                or not chain.non_decreasing()):
            return None
        window = _pool_window(self.model, node)
        if _is_mx(chain.source) and np.dtype(chain.source.dtype).kind == "f":
            chain.source = mx_call(node, [chain.source])
        elif window is not None and (args := window(chain.source.shape)) is not None:
            chain.source = pool(chain.numpy_source(), *args)
        else:
            return None
        del self.pending[data]
        return chain

    def _mx(self, node: Node):
        model = self.model
        dt = _mx_dtype(node, model)
        can_pad = (node.op == "Convolution" and node.name not in model.float_nodes
                   and not any(node.tuple_attr("pad", (0,))))
        args = []
        for k, name in enumerate(node.inputs):
            if name in model.graph.params:
                args.append(_mx_constant(model, name, dt))
                continue
            value, pad = self.take(name, mx_dtype=dt, can_pad=can_pad and k == 0)
            if pad is not None:
                node = node.replace(attrs={**node.attrs, "pad": f"({pad[0]}, {pad[1]})"})
            args.append(self._to_mx(name, value, dt))
        return mx_call(node, args)

    def _to_mx(self, name: str, value, dtype: str):
        import mxnet as mx
        if _is_mx(value):
            return value
        if not (value.dtype == dtype and value.flags.c_contiguous and name not in self.keep
                and name not in self.borrowed):
            value = np.array(value, dtype=dtype, order="C")  # a copy: from_numpy marks it read-only
        return mx.nd.from_numpy(value, zero_copy=True)  # 8x less overhead than mx.nd.array

    def _int8(self, node: Node) -> Chain:
        """The convolution as MXNet's int8 one (uint8 data)."""
        import mxnet as mx
        data = node.inputs[0]
        value, pad = self.take(data, mx_dtype="uint8", can_pad=not any(node.tuple_attr("pad", (0,))))
        if pad is not None:
            node = node.replace(attrs={**node.attrs, "pad": f"({pad[0]}, {pad[1]})"})
        args = [self._to_mx(data, value, "uint8"), _mx_constant(self.model, node.inputs[1], "int8")]
        return Chain(mx.nd.contrib.quantized_conv(*args, *_int8_ranges(), **node.op_attrs())[0])


def _mx_constant(model, name: str, dtype: str):
    """A weight as an MXNet array, made once per model (MXNet then keeps its own layout of it)."""
    import mxnet as mx
    key = ("mx", name, dtype)
    if key not in model.exec_cache:
        model.exec_cache[key] = mx.nd.array(model.graph.params[name], dtype=dtype)
    return model.exec_cache[key]


INT8_MIN_CHANNELS = 8  # below, oneDNN's int8 convolution is slower than float32 (1 -> 16 channels: 4.2 ms vs 1.6)


def _takes_int8(model, node: Node) -> bool:
    """Whether `node` runs as MXNet's int8 convolution: uint8 data, int8 weights, int32 sums, 1.5-3x faster
    than float32 on oneDNN. The sums pass through float32 on the way out, so they must stay below 2^24.
    The data must lie in [0, 127] (at most 8 bits and non-negative by construction): oneDNN's kernels
    without VNNI add pairs of uint8 x int8 products in saturating int16, exact only while a pair stays
    below 2^15 (2 * 127 * 127 does; at 255 they were seen to saturate)."""
    return _per_node(model, node, _int8_convolution)


def _int8_convolution(node: Node, model) -> bool:
    params = model.graph.params
    if (node.op != "Convolution" or node.name in model.float_nodes or len(node.inputs) != 2
            or node.inputs[1] not in params or int(node.attr("num_group", 1)) != 1
            or len(node.tuple_attr("kernel")) != 2 or node.attr("layout", "NCHW") not in (None, "NCHW")):
        return False
    data, weight = node.inputs[0], np.asarray(params[node.inputs[1]])
    if weight.ndim != 4 or weight.shape[1] < INT8_MIN_CHANNELS or np.abs(weight).max() > 127:
        return False
    # oneDNN passes its int32 sums through float32 on the way out: the float32 path's bound must hold
    return (_mx_dtype(node, model) == "float32" and model.precision.get(data, 32) <= 8
            and data in _non_negative(model) and _int8_convolution_is_exact())


def _non_negative(model) -> set[str]:
    """The integer nodes whose every value is >= 0 by construction: relu and clips from 0, and what only
    moves, pools, shifts, concatenates or adds and multiplies with non-negative constants such values."""
    if "non_negative" in model.exec_cache:
        return model.exec_cache["non_negative"]
    params, found = model.graph.params, set()
    keeps_sign = ("cvm_right_shift", "cvm_left_shift", "cvm_clip", "Pooling", "Flatten", "flatten",
                  "Reshape", "reshape", "Concat", "concat", "slice_axis", "slice", "transpose", "expand_dims",
                  "squeeze", "broadcast_add", "elemwise_add", "add_n", "broadcast_mul", "elemwise_mul")
    for node in model.graph.nodes.values():
        if node.op == "null" or node.name in model.float_nodes:
            continue
        data = [i for i in node.inputs if i not in params]
        consts = [i for i in node.inputs if i in params]
        if node.op == "relu":
            found.add(node.name)
        elif node.op == "clip":  # from 0, or from below 0 to at least 0 on a non-negative value
            lo, hi = float(node.attr("a_min")), float(node.attr("a_max"))
            if lo >= 0 or (hi >= 0 and data and data[0] in found):
                found.add(node.name)
        elif node.op == "pad" and node.attr("mode", "constant") == "constant":
            if float(node.attr("constant_value", 0)) >= 0 and data and data[0] in found:
                found.add(node.name)
        elif (node.op in keeps_sign and data and all(i in found for i in data)
              and all(np.all(np.asarray(params[c]) >= 0) for c in consts)):
            found.add(node.name)
    model.exec_cache["non_negative"] = found
    return found


@functools.cache
def _int8_ranges():
    """The data and weight ranges quantized_conv is given: with int32 output it returns the raw sums."""
    import mxnet as mx
    return tuple(mx.nd.array([v], dtype="float32") for v in (0, 127, -127, 127))


@functools.cache
def _int8_convolution_is_exact() -> bool:
    """Checked once per process on worst cases, for two kernel families oneDNN picks by shape (few channels:
    pairs summed in int16; many: VNNI where the CPU has it): some MXNet builds lack the op or differ."""
    import mxnet as mx
    rng = np.random.default_rng(0)
    for channels, filters in ((8, 4), (32, 32)):
        x = rng.integers(0, 128, (2, channels, 7, 7)).astype(np.uint8)
        x[0] = 127
        w = rng.integers(-127, 128, (filters, channels, 3, 3)).astype(np.int8)
        w[0], w[1] = 127, -127
        attrs = dict(kernel=(3, 3), pad=(1, 1), num_filter=filters, no_bias=True)
        try:
            got = mx.nd.contrib.quantized_conv(mx.nd.array(x, dtype="uint8"), mx.nd.array(w, dtype="int8"),
                                               *_int8_ranges(), **attrs)[0].asnumpy()
        except Exception:  # noqa: BLE001 - any failure means: the float path
            return False
        want = mx.nd.Convolution(mx.nd.array(x, dtype="float64"), mx.nd.array(w, dtype="float64"), **attrs)
        if got.dtype != np.int32 or not np.array_equal(got, want.asnumpy()):
            return False
    return True


@functools.cache
def _single_thread_blas() -> None:
    """numpy's BLAS (the executor's FullyConnected) on one thread, once per process: its idle helper threads
    spin after each call and take the cores from MXNet's OpenMP threads (LeNet's evaluation ran 20-60%
    slower); batch-sized products are as fast on one thread."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1, user_api="blas")


def _is_mx(value) -> bool:
    return not isinstance(value, np.ndarray)


def _is_max_pool(model, node: Node) -> bool:
    return (node.op == "Pooling" and node.attr("pool_type", "max") == "max"
            and node.name not in model.float_nodes)


def _pool_window(model, node: Node):
    """For a 2-d integer max or sum pool: a function of the input's shape giving pool()'s arguments, the
    output sized the way MXNet sizes it (None for an input that is not NCHW); else None."""
    return _per_node(model, node, _make_pool_window)


def _make_pool_window(node: Node, model):
    kind = node.attr("pool_type", "max")
    if node.op != "Pooling" or kind not in ("max", "sum") or node.name in model.float_nodes:
        return None
    take_max = kind == "max"
    if node.attr("global_pool", False):
        return lambda shape: (take_max, shape[2:], (1, 1), (0, 0), (1, 1)) if len(shape) == 4 else None
    kernel, stride, pad = node.window()
    convention = node.attr("pooling_convention", "valid")
    if len(kernel) != 2 or convention not in ("valid", "full") or node.attr("layout", "NCHW") != "NCHW":
        return None
    if take_max and (any(pad) or (convention == "full" and any(s > k for s, k in zip(stride, kernel)))):
        return None  # a max window could lie wholly outside the input: MXNet's padding rules then apply
    round_up = convention == "full"

    def window(shape):
        if len(shape) != 4:
            return None
        out = tuple(1 + (n + 2 * p - k + (s - 1 if round_up else 0)) // s
                    for n, k, s, p in zip(shape[2:], kernel, stride, pad))
        return take_max, kernel, stride, pad, out
    return window


def _dense_weight(model, node: Node):
    """The transposed weight, in the node's exact dtype, of an integer FullyConnected without bias that
    flattens its input; else None."""
    return _per_node(model, node, _make_dense_weight)


def _make_dense_weight(node: Node, model):
    params = model.graph.params
    if (node.op != "FullyConnected" or node.name in model.float_nodes or len(node.inputs) != 2
            or node.inputs[1] not in params or not node.attr("flatten", True)):
        return None
    w = np.asarray(params[node.inputs[1]])
    return np.ascontiguousarray(w.reshape(len(w), -1).T, dtype=_mx_dtype(node, model))


def _zero_pad(x: np.ndarray, pad: tuple[int, int]) -> np.ndarray:
    ph, pw = pad
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(ph, ph), (pw, pw)])


def _zero_pad_widths(model, node: Node):
    """(rows, columns) when `node` pads the last two axes of a 4-d integer value with zeros on both sides
    alike, else None."""
    return _per_node(model, node, _pad_widths)


def _pad_widths(node: Node, model):
    if node.op != "pad" or node.name in model.float_nodes:
        return None
    w = node.tuple_attr("pad_width")
    if (node.attr("mode", "constant") == "constant" and float(node.attr("constant_value", 0)) == 0
            and len(w) == 8 and not any(w[:4]) and w[4] == w[5] and w[6] == w[7]):
        return w[4], w[6]
    return None


def _chain_step(model, node: Node):
    """(data input, opcode, a, b, constant) when `node` can run inside a Chain, else None."""
    return _per_node(model, node, _make_chain_step)


def _make_chain_step(node: Node, model):
    if node.name in model.float_nodes:
        return None
    op, inputs = node.op, node.inputs
    if op in ("relu", "cvm_right_shift", "cvm_left_shift", "cvm_clip", "clip") and len(inputs) == 1:
        if op == "relu":
            return inputs[0], RELU, 0, 0, None
        if op == "clip":
            return inputs[0], CLIP, int(node.attr("a_min")), int(node.attr("a_max")), None
        if op == "cvm_clip":
            return inputs[0], CLIP, -_bound(node), _bound(node), None
        code = RIGHT_SHIFT if op == "cvm_right_shift" else LEFT_SHIFT
        return inputs[0], code, int(node.attr("shift_bit")), _bound(node), None
    if op == "cvm_right_shift" and len(inputs) == 2 and inputs[1] in model.graph.params:
        shifts = np.asarray(model.graph.params[inputs[1]], dtype=np.int64)
        return inputs[0], CHANNEL_RIGHT_SHIFT, 0, _bound(node), shifts
    codes = {"broadcast_add": ADD, "elemwise_add": ADD, "broadcast_mul": MUL, "elemwise_mul": MUL}
    if op in codes and len(inputs) == 2:
        consts = [i for i in inputs if i in model.graph.params]
        if len(consts) == 1:
            data = inputs[1] if inputs[0] == consts[0] else inputs[0]
            return data, codes[op], 0, 0, np.asarray(model.graph.params[consts[0]], dtype=np.int64)
    return None


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
