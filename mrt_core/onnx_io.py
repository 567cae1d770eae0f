"""ONNX model -> Graph, with ONNX ops mapped to the MXNet ops the rest of the engine knows.

Constant subgraphs (Constant, Shape/Gather/Concat/Unsqueeze/Cast chains, arithmetic on initializers) are
evaluated here with numpy, so only real layers reach the IR. Shapes of activations, when a mapping needs
them (Shape, auto_pad, broadcast rank), come from MXNet's symbolic shape inference at the model's traced
batch size (its declared batch dimension, or 1 when that is symbolic).
"""

from __future__ import annotations

import numpy as np

from .errors import ModelError
from .graph import Graph, Node

# ONNX ops whose inputs may all be constants; they are then folded with numpy instead of mapped.
_FOLDABLE = {"Constant", "Identity", "Cast", "Shape", "Gather", "Concat", "Unsqueeze", "Squeeze", "Reshape",
             "Flatten", "Transpose", "Slice", "Add", "Sub", "Mul", "Div", "Neg", "Sqrt", "ConstantOfShape",
             "Range"}
_FLOAT_MAX = float(np.finfo(np.float32).max)


def load_onnx(path: str) -> Graph:
    try:
        import onnx
    except ImportError as exc:
        raise ModelError("reading ONNX models needs the 'onnx' package (it is in requirements.txt)") from exc
    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf DecodeError, missing file, ...
        raise ModelError(f"cannot read ONNX file {path}: {exc}") from None
    return graph_from_onnx(model)


def graph_from_onnx(model_proto) -> Graph:
    return _Importer(model_proto).run()


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _f32(value) -> float:
    """An ONNX float attribute (stored as float32) as the short decimal it was written as: 1e-3, not 0.0010000000474974513."""
    return float(str(np.float32(value)))


def _ints(value) -> tuple:
    return tuple(int(v) for v in value)


class _Importer:
    def __init__(self, model):
        from onnx import numpy_helper
        self.model = model
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.consts: dict[str, np.ndarray] = {}   # ONNX tensor -> constant value
        self.ir_of: dict[str, str] = {}           # ONNX tensor -> IR node name
        self.nodes: list[Node] = []
        self.names: set[str] = set()
        self.params: dict[str, np.ndarray] = {}
        self.aux: set[str] = set()
        self.syms: dict = {}                      # IR node -> mx.sym, for shape inference only
        self.shape_cache: dict[str, tuple] = {}
        for init in self.graph.initializer:
            self.consts[init.name] = numpy_helper.to_array(init)
        self.input_shapes: dict[str, tuple] = {}
        self.batch = 1
        for inp in self.graph.input:
            if inp.name in self.consts:
                continue  # old exporters list initializers as inputs too
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                    for d in inp.type.tensor_type.shape.dim]
            if dims and dims[0] > 0:
                self.batch = dims[0]  # a traced model: its Reshape targets repeat this number
            shape = tuple([-1] + dims[1:]) if dims else ()
            if any(d < 0 for d in shape[1:]):
                raise ModelError(f"ONNX input '{inp.name}' has an unknown non-batch dimension {dims}")
            self.input_shapes[inp.name] = shape
            self._add(Node(inp.name, "null"))
            self.ir_of[inp.name] = inp.name

    # ---- building
    def _unique(self, name: str) -> str:
        base, k = name or "node", 1
        while name in self.names or name in self.consts or not name:
            name, k = f"{base}_{k}", k + 1
        return name

    def _add(self, node: Node) -> str:
        self.names.add(node.name)
        self.nodes.append(node)
        return node.name

    def _op(self, name: str, op: str, inputs: list[str], **attrs) -> str:
        return self._add(Node(self._unique(name), op, inputs, attrs))

    def _param(self, name: str, value: np.ndarray, aux: bool = False) -> str:
        """A constant as an IR param, float32; reused when the same ONNX tensor is wanted again as is."""
        value = np.ascontiguousarray(value, dtype=np.float32)
        if name in self.params and self.params[name].shape == value.shape and np.array_equal(self.params[name], value):
            return name
        if name in self.params or name in self.names:
            name = self._unique(name + "_c")
        self.params[name] = value
        if aux:
            self.aux.add(name)
        return self._add(Node(name, "null"))

    def _act(self, node, name: str) -> str:
        """The IR node holding an activation input of an ONNX node."""
        if name in self.ir_of:
            return self.ir_of[name]
        if name in self.consts:
            raise ModelError(f"ONNX node {self._who(node)}: input '{name}' is a constant where the mapping "
                             f"needs an activation")
        raise ModelError(f"ONNX node {self._who(node)}: input '{name}' is not produced by any earlier node")

    def _const(self, node, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise ModelError(f"ONNX node {self._who(node)} ({node.op_type}): its {what} '{name}' must be a "
                             f"constant (an initializer or computable from them)")
        return self.consts[name]

    @staticmethod
    def _who(node) -> str:
        return f"'{node.name or node.output[0]}'"

    # ---- shapes, through mx.sym
    def _sym(self, name: str):
        import mxnet as mx
        if name in self.syms:
            return self.syms[name]
        node = next(n for n in self.nodes if n.name == name)
        if node.op == "null":
            shape = self.params[name].shape if name in self.params else \
                (self.batch,) + tuple(self.input_shapes[name][1:])
            sym = mx.sym.Variable(name, shape=shape)
        else:
            ins = [self._sym(i) for i in node.inputs]
            sym = getattr(mx.sym, node.op)(*ins, name=name, **node.op_attrs())
        self.syms[name] = sym
        return sym

    def shape(self, ir_name: str) -> tuple:
        if ir_name in self.params:
            return tuple(self.params[ir_name].shape)
        if ir_name not in self.shape_cache:
            try:
                _, out, _ = self._sym(ir_name).infer_shape()
            except Exception as exc:
                msg = str(exc).split("Stack trace")[0].strip().splitlines()
                raise ModelError(f"shape inference failed at '{ir_name}': {msg[-1] if msg else exc}") from None
            self.shape_cache[ir_name] = tuple(out[0])
        return self.shape_cache[ir_name]

    # ---- the walk
    def run(self) -> Graph:
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                raise ModelError(f"ONNX node {self._who(node)} uses op '{node.domain}.{node.op_type}', "
                                 f"which is not supported (only the default ONNX domain is)")
            present = [i for i in node.input if i]
            if node.op_type in _FOLDABLE and all(i in self.consts for i in present):
                self.consts[node.output[0]] = self._fold(node)
                continue
            fn = getattr(self, f"_map_{node.op_type}", None)
            if fn is None:
                raise ModelError(f"ONNX node {self._who(node)} uses op '{node.op_type}', which has no MXNet "
                                 f"mapping (supported: {', '.join(sorted(_SUPPORTED))})")
            out = fn(node, _attrs(node))
            if out is not None:  # None: the node turned out to be a constant (Shape)
                self.ir_of[node.output[0]] = out
        outputs = []
        for out in self.graph.output:
            if out.name not in self.ir_of:
                raise ModelError(f"ONNX graph output '{out.name}' is a constant or not computed")
            outputs.append(self.ir_of[out.name])
        self._check_unused_outputs()
        return Graph(self.nodes, self.params, outputs, self.aux, input_shapes=self.input_shapes)

    def _check_unused_outputs(self):
        """Only the first output of a node is mapped; a second one (BN's saved mean, MaxPool's indices,
        Dropout's mask) must not be read by anything."""
        extra = {o: n for n in self.graph.node for o in list(n.output)[1:] if o}
        used = [i for n in self.graph.node for i in n.input if i in extra] + \
               [o.name for o in self.graph.output if o.name in extra]
        if used:
            n = extra[used[0]]
            raise ModelError(f"ONNX node {self._who(n)} ({n.op_type}): its extra output '{used[0]}' is used; "
                             f"only single-output use is supported")

    # ---- constant folding, numpy
    def _fold(self, node) -> np.ndarray:
        a = _attrs(node)
        c = [self.consts[i] if i else None for i in node.input]
        op = node.op_type
        if op == "Constant":
            from onnx import numpy_helper
            if "value" in a:
                return numpy_helper.to_array(a["value"])
            for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                               ("value_int", np.int64), ("value_ints", np.int64)):
                if key in a:
                    return np.array(a[key], dtype=dtype)
            raise ModelError(f"ONNX Constant {self._who(node)}: unsupported value kind {sorted(a)}")
        if op == "Identity":
            return c[0]
        if op == "Cast":
            from onnx import helper
            return c[0].astype(helper.tensor_dtype_to_np_dtype(a["to"]))
        if op == "Shape":
            shape = np.array(c[0].shape, dtype=np.int64)
            return shape[a.get("start", 0):a.get("end", None)]
        if op == "Gather":
            return np.take(c[0], c[1].astype(np.int64), axis=a.get("axis", 0))
        if op == "Concat":
            return np.concatenate([x for x in c if x is not None], axis=a["axis"])
        if op in ("Unsqueeze", "Squeeze"):
            axes = _ints(a["axes"]) if "axes" in a else (_ints(c[1]) if len(c) > 1 and c[1] is not None else None)
            if op == "Squeeze":
                return np.squeeze(c[0], axis=axes)
            out = c[0]
            rank = out.ndim + len(axes)
            for ax in sorted(x % rank for x in axes):
                out = np.expand_dims(out, ax)
            return out
        if op == "Reshape":
            return c[0].reshape(_numpy_shape(c[0], c[1], a.get("allowzero", 0)))
        if op == "Flatten":
            ax = a.get("axis", 1) % max(c[0].ndim, 1)
            return c[0].reshape(int(np.prod(c[0].shape[:ax])), -1)
        if op == "Transpose":
            return np.transpose(c[0], a.get("perm"))
        if op == "Slice":
            return _numpy_slice(c, a, self.opset)
        if op in ("Add", "Sub", "Mul", "Div"):
            fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}.get(op)
            if op == "Div":
                fn = np.floor_divide if c[0].dtype.kind in "iu" else np.divide
            return fn(c[0], c[1]).astype(np.result_type(c[0], c[1]))
        if op == "Neg":
            return -c[0]
        if op == "Sqrt":
            return np.sqrt(c[0])
        if op == "ConstantOfShape":
            from onnx import numpy_helper
            fill = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
            return np.full(_ints(c[0]), fill.reshape(-1)[0], dtype=fill.dtype)
        if op == "Range":
            return np.arange(c[0], c[1], c[2]).astype(c[0].dtype)
        raise ModelError(f"ONNX node {self._who(node)}: cannot fold op '{op}'")

    # ---- op mappings: each returns the IR node holding the ONNX node's first output
    def _map_Shape(self, node, a):
        shape = np.array(self.shape(self._act(node, node.input[0])), dtype=np.int64)
        self.consts[node.output[0]] = shape[a.get("start", 0):a.get("end", None)]
        return None

    def _map_Identity(self, node, a):
        return self._act(node, node.input[0])

    _map_Dropout = _map_Identity

    def _map_Relu(self, node, a):
        return self._op(node.output[0], "relu", [self._act(node, node.input[0])])

    def _map_Clip(self, node, a):
        lo, hi = (_f32(a[k]) if k in a else None for k in ("min", "max"))
        if len(node.input) > 1 and node.input[1]:
            lo = float(self._const(node, node.input[1], "min").reshape(-1)[0])
        if len(node.input) > 2 and node.input[2]:
            hi = float(self._const(node, node.input[2], "max").reshape(-1)[0])
        x = self._act(node, node.input[0])
        if hi is None and lo == 0:
            return self._op(node.output[0], "relu", [x])
        return self._op(node.output[0], "clip", [x], a_min=float(-_FLOAT_MAX if lo is None else lo),
                        a_max=float(_FLOAT_MAX if hi is None else hi))

    def _map_Softmax(self, node, a):
        x = self._act(node, node.input[0])
        axis = a.get("axis", 1 if self.opset < 13 else -1)
        rank = len(self.shape(x))
        if self.opset < 13 and axis % rank != rank - 1:
            # before opset 13 Softmax normalises over all axes from `axis` on, which MXNet's softmax cannot
            raise ModelError(f"ONNX Softmax {self._who(node)}: opset {self.opset} softmax over axes {axis}.. "
                             f"of a {rank}-D tensor is not supported")
        return self._op(node.output[0], "softmax", [x], axis=axis)

    def _map_Flatten(self, node, a):
        x = self._act(node, node.input[0])
        ax = a.get("axis", 1)
        if ax < 0:
            ax += len(self.shape(x))
        if ax != 1:
            raise ModelError(f"ONNX Flatten {self._who(node)}: only axis=1 is supported, got {a.get('axis')}")
        return self._op(node.output[0], "Flatten", [x])

    def _map_Reshape(self, node, a):
        x = self._act(node, node.input[0])
        shape = [int(v) for v in self._const(node, node.input[1], "shape").reshape(-1)]
        if a.get("allowzero", 0) and 0 in shape:
            raise ModelError(f"ONNX Reshape {self._who(node)}: allowzero=1 with a 0 in the shape is not supported")
        # a traced model repeats its batch size here; copying dim 0 instead keeps the batch free
        if shape and shape[0] == self.batch and len(self.shape(x)) > 0:
            shape[0] = 0
        return self._op(node.output[0], "Reshape", [x], shape=tuple(shape))

    def _map_Concat(self, node, a):
        ins = [self._operand(node, i, None) for i in node.input if i]
        axis = a["axis"]
        if axis < 0:
            axis += len(self.shape(ins[0]))
        return self._op(node.output[0], "Concat", ins, dim=axis, num_args=len(ins))

    def _operand(self, node, name: str, rank: int | None) -> str:
        """An input that may be an activation or a constant (made a param, 1s prepended up to `rank` so
        MXNet's broadcast lines it up with the activation exactly as ONNX's right-aligned rule does)."""
        if name in self.ir_of:
            return self.ir_of[name]
        value = self._const(node, name, "operand")
        if rank is not None and value.ndim < rank:
            value = value.reshape((1,) * (rank - value.ndim) + value.shape)
        return self._param(name, value)

    def _binary(self, node, op: str, invert: bool = False):
        names = list(node.input)
        acts = [n for n in names if n in self.ir_of]
        if not acts:
            raise ModelError(f"ONNX node {self._who(node)}: no activation input")
        rank = max(len(self.shape(self.ir_of[n])) for n in acts)
        ins = []
        for n in names:
            if invert and n not in self.ir_of:  # x / c -> x * (1 / c)
                ins.append(self._operand_value(node, n, 1.0 / self._const(node, n, "divisor").astype(np.float64), rank))
            else:
                ins.append(self._operand(node, n, rank))
        return self._op(node.output[0], op, ins)

    def _operand_value(self, node, name, value, rank):
        value = np.asarray(value)
        if value.ndim < rank:
            value = value.reshape((1,) * (rank - value.ndim) + value.shape)
        return self._param(f"{name}_inv", value)

    def _map_Add(self, node, a):
        return self._binary(node, "broadcast_add")

    def _map_Sub(self, node, a):
        return self._binary(node, "broadcast_sub")

    def _map_Mul(self, node, a):
        return self._binary(node, "broadcast_mul")

    def _map_Div(self, node, a):
        if node.input[1] in self.ir_of:
            raise ModelError(f"ONNX Div {self._who(node)}: only division by a constant is supported")
        return self._binary(node, "broadcast_mul", invert=True)

    def _map_Pad(self, node, a):
        x = self._act(node, node.input[0])
        if self.opset < 11:
            pads, value = _ints(a["pads"]), _f32(a.get("value", 0.0))
        else:
            pads = _ints(self._const(node, node.input[1], "pads").reshape(-1))
            value = 0.0
            if len(node.input) > 2 and node.input[2]:
                value = float(self._const(node, node.input[2], "constant_value").reshape(-1)[0])
            if len(node.input) > 3 and node.input[3]:
                raise ModelError(f"ONNX Pad {self._who(node)}: the axes input is not supported")
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode not in ("constant", "reflect", "edge"):
            raise ModelError(f"ONNX Pad {self._who(node)}: mode '{mode}' is not supported")
        rank = len(pads) // 2
        width = []
        for d in range(rank):
            width += [pads[d], pads[d + rank]]
        if any(p < 0 for p in pads):
            raise ModelError(f"ONNX Pad {self._who(node)}: negative pads (cropping) are not supported")
        if rank not in (4, 5) or any(width[:4]):
            raise ModelError(f"ONNX Pad {self._who(node)}: MXNet pads only the spatial axes of a 4-D/5-D "
                             f"tensor, got pads {pads}")
        return self._op(node.output[0], "pad", [x], mode=mode, constant_value=value, pad_width=tuple(width))

    def _spatial_pads(self, node, a, x: str, kernel: tuple, strides: tuple, dilations: tuple) -> tuple:
        """(begin..., end...) pads, auto_pad resolved from the input's static shape."""
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        nd = len(kernel)
        if auto in ("NOTSET", ""):
            return _ints(a.get("pads", (0,) * (2 * nd)))
        if auto == "VALID":
            return (0,) * (2 * nd)
        size = self.shape(x)[2:]
        begin, end = [], []
        for i in range(nd):
            out = -(-size[i] // strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size[i], 0)
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return tuple(begin + end)

    def _explicit_pad(self, node, x: str, pads: tuple, mode: str = "constant") -> str:
        nd = len(pads) // 2
        width = [0, 0, 0, 0]
        for i in range(nd):
            width += [pads[i], pads[i + nd]]
        return self._op(f"{node.output[0]}_pad", "pad", [x], mode=mode, constant_value=0.0, pad_width=tuple(width))

    def _map_Conv(self, node, a):
        x = self._act(node, node.input[0])
        w = self._const(node, node.input[1], "weight")
        if w.ndim != 4:
            raise ModelError(f"ONNX Conv {self._who(node)}: only 2-D convolution is supported (weight {w.shape})")
        kernel = _ints(a.get("kernel_shape", w.shape[2:]))
        strides = _ints(a.get("strides", (1, 1)))
        dil = _ints(a.get("dilations", (1, 1)))
        pads = self._spatial_pads(node, a, x, kernel, strides, dil)
        if pads[:2] != pads[2:]:
            x = self._explicit_pad(node, x, pads)
            pads = (0, 0, 0, 0)
        ins = [x, self._param(node.input[1], w)]
        has_bias = len(node.input) > 2 and bool(node.input[2])
        if has_bias:
            ins.append(self._param(node.input[2], self._const(node, node.input[2], "bias").reshape(-1)))
        return self._op(node.output[0], "Convolution", ins, kernel=kernel, stride=strides, dilate=dil,
                        pad=pads[:2], num_filter=int(w.shape[0]), num_group=int(a.get("group", 1)),
                        no_bias=not has_bias)

    def _map_Gemm(self, node, a):
        if a.get("transA", 0):
            raise ModelError(f"ONNX Gemm {self._who(node)}: transA=1 is not supported")
        x = self._act(node, node.input[0])
        b = self._const(node, node.input[1], "B").astype(np.float64)
        w = (b if a.get("transB", 0) else b.T) * _f32(a.get("alpha", 1.0))  # FullyConnected wants (out, in)
        ins = [x, self._param(node.input[1], w)]
        has_bias = len(node.input) > 2 and bool(node.input[2])
        if has_bias:
            c = self._const(node, node.input[2], "C").astype(np.float64) * _f32(a.get("beta", 1.0))
            if c.size not in (1, w.shape[0]) or (c.ndim == 2 and c.shape[0] != 1):
                raise ModelError(f"ONNX Gemm {self._who(node)}: C of shape {c.shape} is not a per-output bias")
            ins.append(self._param(node.input[2], np.broadcast_to(c.reshape(-1), (w.shape[0],))))
        return self._op(node.output[0], "FullyConnected", ins, num_hidden=int(w.shape[0]), no_bias=not has_bias)

    def _map_MatMul(self, node, a):
        x = self._act(node, node.input[0])
        if node.input[1] not in self.consts:
            raise ModelError(f"ONNX MatMul {self._who(node)}: only a constant right operand is supported")
        b = self.consts[node.input[1]]
        if b.ndim != 2:
            raise ModelError(f"ONNX MatMul {self._who(node)}: right operand must be 2-D, got {b.shape}")
        attrs = {"num_hidden": int(b.shape[1]), "no_bias": True}
        if len(self.shape(x)) != 2:
            attrs["flatten"] = False  # ONNX MatMul acts on the last axis only
        return self._op(node.output[0], "FullyConnected", [x, self._param(node.input[1], b.T)], **attrs)

    def _map_BatchNormalization(self, node, a):
        if a.get("training_mode", 0):
            raise ModelError(f"ONNX BatchNormalization {self._who(node)}: training_mode=1 is not supported")
        x = self._act(node, node.input[0])
        names = ("scale", "bias", "mean", "var")
        ps = [self._param(n, self._const(node, n, what), aux=what in ("mean", "var"))
              for n, what in zip(node.input[1:5], names)]
        return self._op(node.output[0], "BatchNorm", [x] + ps, eps=_f32(a.get("epsilon", 1e-5)),
                        momentum=_f32(a.get("momentum", 0.9)), fix_gamma=False, axis=1)

    def _pool(self, node, a, kind: str):
        x = self._act(node, node.input[0])
        kernel = _ints(a["kernel_shape"])
        if len(kernel) != 2:
            raise ModelError(f"ONNX {node.op_type} {self._who(node)}: only 2-D pooling is supported")
        if any(d != 1 for d in a.get("dilations", (1, 1))):
            raise ModelError(f"ONNX {node.op_type} {self._who(node)}: dilated pooling is not supported")
        strides = _ints(a.get("strides", (1, 1)))
        pads = self._spatial_pads(node, a, x, kernel, strides, (1, 1))
        include = bool(a.get("count_include_pad", 0))
        if pads[:2] != pads[2:]:
            if kind == "avg" and not include:
                raise ModelError(f"ONNX AveragePool {self._who(node)}: asymmetric pads {pads} with "
                                 f"count_include_pad=0 are not supported")
            # edge padding never changes a max; zeros are what count_include_pad=1 averages in
            x = self._explicit_pad(node, x, pads, "edge" if kind == "max" else "constant")
            pads = (0, 0, 0, 0)
        attrs = dict(kernel=kernel, stride=strides, pad=pads[:2], pool_type=kind,
                     pooling_convention="full" if a.get("ceil_mode", 0) else "valid")
        if kind == "avg":
            attrs["count_include_pad"] = include
        return self._op(node.output[0], "Pooling", [x], **attrs)

    def _map_MaxPool(self, node, a):
        return self._pool(node, a, "max")

    def _map_AveragePool(self, node, a):
        return self._pool(node, a, "avg")

    def _map_GlobalAveragePool(self, node, a):
        return self._op(node.output[0], "Pooling", [self._act(node, node.input[0])], global_pool=True,
                        pool_type="avg", kernel=(1, 1))

    def _map_GlobalMaxPool(self, node, a):
        return self._op(node.output[0], "Pooling", [self._act(node, node.input[0])], global_pool=True,
                        pool_type="max", kernel=(1, 1))


_SUPPORTED = sorted({k[5:] for k in vars(_Importer) if k.startswith("_map_")} | (_FOLDABLE - {"Shape"}))


def _numpy_shape(x: np.ndarray, shape: np.ndarray, allowzero: int) -> tuple:
    shape = [int(v) for v in shape.reshape(-1)]
    if not allowzero:
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return tuple(shape)


def _numpy_slice(c: list, a: dict, opset: int) -> np.ndarray:
    x = c[0]
    if opset < 10:
        starts, ends = a["starts"], a["ends"]
        axes, steps = a.get("axes", list(range(len(starts)))), [1] * len(starts)
    else:
        starts, ends = c[1].reshape(-1), c[2].reshape(-1)
        axes = c[3].reshape(-1) if len(c) > 3 and c[3] is not None else range(len(starts))
        steps = c[4].reshape(-1) if len(c) > 4 and c[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[int(ax)] = slice(int(s), int(e), int(st))  # python clamps out-of-range ends like ONNX does
    return x[tuple(index)]
