"""Quantization: one walk over the prepared float graph that emits an integer-only graph.

Every prepared node gets a `QTensor`: the integer-graph node holding its value, the scale (real ~ q / scale
+ offset), and its precision (signed bits). Consumers requantize their inputs (realize: optional pre-shift,
multiply by frac, rounding shift) to the precision they want, as MRT's operator expansions do.
The per-op rules live in `ops.py`; this module holds the shared machinery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import quant_math as qm
from .calibrate import Features, optimized_range
from .errors import ConfigError, QuantizeError
from .graph import Graph, Node
from .qconfig import NodeConfig, QuantConfig, Settings


MIN_FRAC_BITS = 16  # below this many bits for frac, a realize first narrows its input to the calibrated bits


@dataclass
class QTensor:
    name: str                      # node of the integer graph
    scale: float                   # real ~ q / scale + offset
    precision: int                 # signed bits of q
    offset: float = 0.0            # real value of q == 0; nonzero only right after an affine requantization
    is_float: bool = False         # a restored (float) value


@dataclass
class NodeReport:
    """What quantization decided for one prepared node."""
    name: str
    op: str
    origin: str
    precision: int
    scale: float
    int_nodes: list = field(default_factory=list)
    scale_error: float = 0.0       # worst relative error of a frac*2^exp approximation made for this node
    weight_scale: object = None    # float or per-channel array, for Convolution/FullyConnected
    restored: bool = False


@dataclass
class QuantizedModel:
    graph: Graph                                  # the integer graph (params hold integers)
    precision: dict[str, int]                     # integer-graph node -> signed bits
    values: dict[str, QTensor]                    # prepared node -> where its value lives
    input_scales: dict[str, float]
    reports: dict[str, NodeReport]
    float_nodes: set[str]                         # integer-graph nodes that compute in float (restored)
    settings: Settings
    warnings: list = field(default_factory=list)  # configured settings that no node used, and why
    exec_cache: dict = field(default_factory=dict, repr=False, compare=False)  # the executor's per-model state

    @property
    def max_precision(self) -> int:
        return max(p for n, p in self.precision.items() if n not in self.float_nodes)


class QuantContext:
    """State of one quantization walk: the integer graph under construction and the helpers rules use."""

    def __init__(self, graph: Graph, features: dict[str, Features], config: QuantConfig, settings: Settings,
                 shapes: dict[str, tuple]):
        self.graph = graph
        self.shapes = shapes  # float shapes of the prepared nodes (batch of one)
        self.features = features
        self.config = config
        self.settings = settings
        self.nodes: list[Node] = []
        self.names: set[str] = set()
        self.params: dict[str, np.ndarray] = {}
        self.precision: dict[str, int] = {}
        self.float_nodes: set[str] = set()
        self.values: dict[str, QTensor] = {}
        self.reports: dict[str, NodeReport] = {}
        self.current: Node | None = None
        self.current_nodes: list[str] = []
        self.scale_error = 0.0
        self.used: dict[str, set] = {}
        self.aliases = folded_aliases(graph, config)
        self.value_owners: dict[str, list[str]] = {}  # prepared node -> the user's nodes whose value it holds
        for orig, name in graph.value_of.items():
            self.value_owners.setdefault(name, []).append(orig)

    # ---- configuration lookups (users configure the names of their original model)
    def _node_key(self, prepared_name: str) -> str | None:
        """The config entry governing a prepared node's own settings (restore, granularity): its origin's,
        else that of a user node folded or dropped into it (a BatchNorm folded into its Convolution)."""
        origin = self.graph.origin.get(prepared_name, prepared_name)
        if origin in self.config:
            return origin
        return self.aliases.get(origin)

    def _lookup(self, key: str | None, field: str | None) -> NodeConfig:
        if key is None:
            return NodeConfig()
        if field:
            self.note(key, field)
        return self.config[key]

    def node_config(self, prepared_name: str, field: str | None = None) -> NodeConfig:
        return self._lookup(self._node_key(prepared_name), field)

    def _tensor_key(self, prepared_name: str) -> str | None:
        for orig in self.value_owners.get(prepared_name, ()):
            if orig in self.config:
                return orig
        key = self._node_key(prepared_name)
        node = self.graph.nodes[prepared_name]
        if key is None and node.op in INHERITS_QUANTIZATION and node.inputs:
            return self._tensor_key(node.inputs[0])  # relu/pad/pool keep the quantization of what they pass on
        return key

    def tensor_config(self, prepared_name: str, field: str | None = None) -> NodeConfig:
        """How a tensor is quantized for its consumers: the config of the user's node whose value it is,
        else its origin's, else (through relu, pad, max pooling, flatten) that of the tensor it passes on."""
        return self._lookup(self._tensor_key(prepared_name), field)

    def note(self, key: str, field: str) -> None:
        """Record that a configured field took effect (what never does is reported as a warning)."""
        self.used.setdefault(key, set()).add(field)

    def value_range(self, prepared_name: str) -> tuple[float, float]:
        spec = self.tensor_config(prepared_name, "optimizor").optimizor
        if spec == {"name": "HistoricalValue"} and self.settings.default_lambda is not None:
            spec = {"name": "HistoricalValue", "lambda": self.settings.default_lambda}
        return optimized_range(self.features[prepared_name], spec)

    def range_absmax(self, prepared_name: str) -> float:
        """The magnitude a symmetric quantizer of this value covers (its optimized range)."""
        return max(abs(v) for v in self.value_range(prepared_name))

    # ---- emitting integer-graph nodes
    def unique(self, name: str) -> str:
        if name not in self.names:
            return name
        k = 1
        while f"{name}~{k}" in self.names:
            k += 1
        return f"{name}~{k}"

    def emit(self, name: str, op: str, inputs: list[str], bits: int, is_float: bool = False, **attrs) -> str:
        """Add an integer-graph node whose output needs `bits` signed bits."""
        if not is_float and bits > qm.MAX_BIT:
            where = self.current.describe() if self.current else f"'{name}'"
            raise QuantizeError(f"{where}: integer node '{name}' ({op}) needs {bits} bits, "
                                f"more than the {qm.MAX_BIT}-bit bound")
        name = self.unique(name)
        self.names.add(name)
        self.nodes.append(Node(name, op, inputs, attrs))
        self.precision[name] = bits
        if is_float:
            self.float_nodes.add(name)
        self.current_nodes.append(name)
        return name

    def constant(self, name: str, value: np.ndarray) -> str:
        """An integer constant; its precision is what its largest magnitude needs."""
        value = np.atleast_1d(np.asarray(value, dtype=np.float64))  # MXNet has no 0-d arrays
        if not np.all(np.isfinite(value)) or np.any(value != np.round(value)):
            raise QuantizeError(f"constant '{name}' is not integer-valued")
        name = self.unique(name)
        self.names.add(name)
        self.params[name] = value.astype(np.float64)
        self.nodes.append(Node(name, "null"))
        self.precision[name] = qm.precision_of(np.abs(value).max() if value.size else 0)
        self.current_nodes.append(name)
        return name

    # ---- requantization
    def realize(self, x: QTensor, scale_out, precision_out: int, tag: str = "requant", ndim: int = 4,
                absmax=None) -> QTensor:
        """Bring x to scale_out (scalar, or per channel along axis 1 when x.scale is an array) at
        precision_out with integer ops only: [pre-shift] -> multiply by frac -> rounding shift/clip.

        absmax: the calibrated real magnitude of x (scalar or per channel). The pre-shift excess is counted
        from the bits x really occupies at that magnitude, not from its worst-case bound: a bound that is
        10 bits loose would otherwise shift away all but a few bits. The pre-shift clips to
        precision_out + Shift_bits, so the recorded precision stays a guarantee on any data."""
        base = f"{x.name}.{tag}"
        name, prec = x.name, x.precision
        scale_in = np.asarray(x.scale, dtype=np.float64)
        used = prec
        if absmax is not None:
            magnitude = float(np.max(np.asarray(absmax, dtype=np.float64) * scale_in))
            used = min(prec, qm.precision_of(np.ceil(magnitude)))
        excess = used - precision_out - self.settings.shift_bits
        if excess > 0:
            prec = precision_out + self.settings.shift_bits
            name = self.emit(f"{base}.pre", "cvm_right_shift", [name], prec, shift_bit=excess, precision=prec)
            scale_in = scale_in / 2.0 ** excess
        elif used < prec and qm.MAX_BIT - prec < MIN_FRAC_BITS:
            # no shift needed, but the loose bound would leave frac only a few bits (a 1% scale error per
            # channel at 7 bits): clip to the calibrated bits so frac gets the rest of the 32
            prec = used
            name = self.emit(f"{base}.narrow", "cvm_clip", [name], prec, precision=prec)
        ratio = np.asarray(scale_out, dtype=np.float64) / scale_in
        budget = qm.MAX_BIT - prec
        if ratio.ndim == 0:
            frac, exp = qm.cvm_float(float(ratio), budget)
            fracs = np.array(frac, dtype=np.float64)
        else:
            # one exponent per channel, so that every channel's frac uses the whole budget: with one shift
            # for all, a channel whose ratio is 2^12 below the largest keeps budget - 12 bits (depthwise
            # convs with per-channel weight scales spread that far: 6-100% scale errors on EfficientNet)
            pairs = [qm.cvm_float(float(r), budget) for r in ratio.ravel()]
            exps = np.array([e for _, e in pairs]).reshape(ratio.shape)
            if exps.max() < 0 and exps.min() < exps.max():
                fracs = np.array([f for f, _ in pairs], dtype=np.float64).reshape(ratio.shape)
                exp = exps
            else:  # one shift for all channels: the largest ratio sets the exponent
                exp = math.frexp(float(ratio.max()))[1] - budget  # the largest frac uses the whole budget
                fracs = np.minimum(qm.round_half_away(ratio / 2.0 ** exp), (1 << budget) - 1)
        used = scale_in * fracs * 2.0 ** exp
        err = float(np.max(np.abs(used / np.asarray(scale_out) - 1.0)))
        self.scale_error = max(self.scale_error, err)
        if fracs.ndim > 0 or fracs != 1:
            if fracs.ndim > 0:
                fracs = fracs.reshape((1, -1) + (1,) * (ndim - 2))
            fname = self.constant(f"{base}.frac", fracs)
            prec = prec + qm.bit_length(int(fracs.max()))
            name = self.emit(f"{base}.mul", "broadcast_mul", [name, fname], prec)
        if np.ndim(exp) > 0:
            # shifts past 32 all give 0 on a 32-bit value, as 32 does: capped, exactly
            shifts = np.minimum(-exp, qm.MAX_BIT).reshape((1, -1) + (1,) * (ndim - 2))
            sname = self.constant(f"{base}.shifts", shifts)
            name = self.emit(f"{base}.shift", "cvm_right_shift", [name, sname], precision_out,
                             precision=precision_out)
        elif exp < 0:
            name = self.emit(f"{base}.shift", "cvm_right_shift", [name], precision_out,
                             shift_bit=-exp, precision=precision_out)
        elif exp > 0:
            name = self.emit(f"{base}.shift", "cvm_left_shift", [name], precision_out,
                             shift_bit=exp, precision=precision_out)
        else:
            name = self.emit(f"{base}.clip", "cvm_clip", [name], precision_out, precision=precision_out)
        out_scale = float(np.asarray(scale_out)) if np.ndim(scale_out) == 0 else scale_out
        return QTensor(name, out_scale, precision_out)

    def requantize(self, x: QTensor, producer: str, precision: int | None = None, channels: slice | None = None,
                   force: bool = False) -> QTensor:
        """The value of prepared node `producer` (held by x) at `precision` bits, quantized the way the
        producer's config says (symmetric or affine, with its optimizor). `channels` restricts the range
        to a slice of the channel axis (channel-wise granularity)."""
        precision = precision or self.settings.output_precision
        cfg = self.tensor_config(producer, "quant_type")
        if channels is not None:
            f = self.features[producer]
            if f.channel_min is None:
                raise QuantizeError(f"node '{producer}' has no channel axis to slice")
            lo = float(min(f.channel_min[channels].min(), 0.0))
            hi = float(max(f.channel_max[channels].max(), 0.0))
        else:
            lo, hi = self.value_range(producer)
        if x.is_float:
            return self.quantize_float(x, lo, hi, precision, cfg.quant_type)
        if cfg.quant_type == "UniformAffine":
            return self._requantize_affine(x, lo, hi, precision)
        if x.precision <= precision and not force:
            return x  # already as narrow as wanted: requantizing could only lose bits
        return self.realize(x, qm.symmetric_scale(max(abs(lo), abs(hi)), precision), precision,
                            ndim=len(self.shapes[producer]), absmax=self.calibrated_absmax(producer, channels))

    def calibrated_absmax(self, producer: str, channels: slice | None = None) -> float:
        f = self.features[producer]
        if channels is not None and f.channel_absmax is not None:
            return float(f.channel_absmax[channels].max())
        return f.absmax

    def _requantize_affine(self, x: QTensor, lo: float, hi: float, precision: int) -> QTensor:
        """Xq = realize(Xe - zp, frac, exp) in [0, 2^p - 1]; real = Xq / scale + zp / scale_e (p+1 signed bits)."""
        scale = qm.affine_scale(lo, hi, precision)
        zp = int(qm.round_half_away(lo * x.scale))
        name = x.name
        prec = x.precision
        if zp != 0:
            zname = self.constant(f"{x.name}.zp", np.array(-zp))
            prec = max(prec, qm.precision_of(abs(zp))) + 1
            name = self.emit(f"{x.name}.sub_zp", "broadcast_add", [name, zname], prec)
        shifted = self.realize(QTensor(name, x.scale, prec), scale, precision + 1, tag="affine", absmax=hi - lo)
        top = (1 << precision) - 1
        out = self.emit(f"{x.name}.affine_clip", "clip", [shifted.name], precision + 1, a_min=0, a_max=top)
        return QTensor(out, shifted.scale, precision + 1, offset=zp / x.scale)

    def quantize_float(self, x: QTensor, lo: float, hi: float, precision: int, quant_type: str) -> QTensor:
        """A restored node's float output, quantized for its integer consumers."""
        if quant_type == "UniformAffine":
            scale = qm.affine_scale(lo, hi, precision)
            name = self.emit(f"{x.name}.quantize", "mrt_quantize", [x.name], precision + 1, scale=scale,
                             zero=lo, precision=precision + 1, a_min=0, a_max=(1 << precision) - 1)
            return QTensor(name, scale, precision + 1, offset=lo)
        scale = qm.symmetric_scale(max(abs(lo), abs(hi)), precision)
        name = self.emit(f"{x.name}.quantize", "mrt_quantize", [x.name], precision, scale=scale, zero=0.0,
                         precision=precision)
        return QTensor(name, scale, precision)

    def dequantize(self, x: QTensor) -> str:
        if x.is_float:
            return x.name
        return self.emit(f"{x.name}.dequantize", "mrt_dequantize", [x.name], 32, is_float=True,
                         scale=x.scale, offset=x.offset)

    def symmetric(self, x: QTensor) -> QTensor:
        """Fold a nonzero offset into the integers: q + round(offset * scale) at the same scale."""
        if x.offset == 0:
            return x
        c = int(qm.round_half_away(x.offset * x.scale))
        cname = self.constant(f"{x.name}.offset", np.array(c))
        prec = max(x.precision, qm.precision_of(abs(c))) + 1
        return QTensor(self.emit(f"{x.name}.add_offset", "broadcast_add", [x.name, cname], prec), x.scale, prec)

    # ---- weights
    def quantize_weight(self, name: str, w: np.ndarray, precision: int, quant_type: str,
                        per_channel_groups: int | None = None):
        """Integer weight, scale (scalar or per output channel) and integer zero point (0 if symmetric).

        per_channel_groups: None -> one scale; k -> one scale per block of k output channels."""
        w = np.asarray(w, dtype=np.float64)
        if per_channel_groups is None:
            flat = w.reshape(1, -1)
        else:
            flat = w.reshape(w.shape[0] // per_channel_groups, -1)
        if quant_type == "UniformAffine":
            lo = np.minimum(flat.min(axis=1), 0.0)
            hi = np.maximum(flat.max(axis=1), 0.0)
            scale = qm.affine_scale(lo, hi, precision)
            scale = np.atleast_1d(scale)
            zp = qm.round_half_away(lo * scale)
        else:
            scale = np.atleast_1d(qm.symmetric_scale(np.abs(flat).max(axis=1), precision))
            zp = np.zeros_like(scale)
        repeat = 1 if per_channel_groups is None else per_channel_groups
        full_scale = np.repeat(scale, repeat) if per_channel_groups is not None else scale
        shape = (-1,) + (1,) * (w.ndim - 1)
        s = full_scale.reshape(shape) if per_channel_groups is not None else float(scale[0])
        z = (np.repeat(zp, repeat).reshape(shape) if per_channel_groups is not None else float(zp[0]))
        top = (1 << precision) - 1 if quant_type == "UniformAffine" else qm.int_range(precision)
        low = 0 if quant_type == "UniformAffine" else -top
        q = np.clip(qm.round_half_away(w * s) - z, low, top)
        wname = self.constant(f"{name}.q", q)
        out_scale = float(scale[0]) if per_channel_groups is None else full_scale
        out_zp = float(zp[0]) if per_channel_groups is None else np.repeat(zp, repeat)
        return wname, out_scale, out_zp

    # ---- reporting
    def begin(self, node: Node) -> None:
        self.current, self.current_nodes, self.scale_error, self.extra = node, [], 0.0, {}

    def finish(self, node: Node, out: QTensor, **extra) -> None:
        self.values[node.name] = out
        self.reports[node.name] = NodeReport(
            name=node.name, op=node.op, origin=self.graph.origin.get(node.name, node.name),
            precision=out.precision, scale=float(np.max(out.scale)), int_nodes=list(self.current_nodes),
            scale_error=self.scale_error, **self.extra, **extra)


def quantize(graph: Graph, features: dict[str, Features], config: QuantConfig | None = None,
             settings: Settings | None = None, shapes: dict[str, tuple] | None = None) -> QuantizedModel:
    """Quantize the prepared float `graph` with calibration `features` under `config`."""
    from .float_exec import infer_shapes
    from .ops import get_rule
    config = config or QuantConfig()
    settings = settings or Settings()
    validate_config(graph, config)
    ctx = QuantContext(graph, features, config, settings, shapes or infer_shapes(graph))
    input_scales = {}
    for name in graph.input_names:
        node = graph.nodes[name]
        ctx.begin(node)
        lo, hi = ctx.value_range(node.name)
        scale = qm.symmetric_scale(max(abs(lo), abs(hi)), settings.input_precision)
        input_scales[node.name] = scale
        ctx.names.add(node.name)
        ctx.nodes.append(Node(node.name, "null"))
        ctx.precision[node.name] = settings.input_precision
        ctx.finish(node, QTensor(node.name, scale, settings.input_precision))
    for node in graph.nodes.values():
        if node.op == "null":
            continue
        ctx.begin(node)
        restored = ctx.node_config(node.name).restore
        if restored:
            ctx.node_config(node.name, "restore")  # records that the restore took effect
        out = restore_rule(ctx, node) if restored else get_rule(node)(ctx, node)
        ctx.finish(node, out, restored=restored)
    outputs = []
    for name in graph.outputs:
        outputs.append(ctx.values[name].name)
    int_graph = Graph(ctx.nodes, ctx.params, outputs)
    int_graph.input_shapes = dict(graph.input_shapes)
    return QuantizedModel(int_graph, ctx.precision, ctx.values, input_scales, ctx.reports, ctx.float_nodes, settings,
                          unused_settings(graph, config, ctx.used, ctx.aliases))


def restore_rule(ctx: QuantContext, node: Node) -> QTensor:
    """Layer-wise restoration: the node runs in float on its dequantized inputs."""
    inputs = []
    for name in node.inputs:
        if name in ctx.graph.params:
            pname = ctx.unique(f"{name}.float")
            ctx.names.add(pname)
            ctx.params[pname] = ctx.graph.params[name]
            ctx.nodes.append(Node(pname, "null"))
            ctx.precision[pname] = 32
            ctx.float_nodes.add(pname)
            inputs.append(pname)
        else:
            inputs.append(ctx.dequantize(ctx.values[name]))
    out = ctx.emit(node.name, node.op, inputs, 32, is_float=True, **node.attrs)
    return QTensor(out, 1.0, 32, is_float=True)


INHERITS_QUANTIZATION = ("relu", "Activation", "pad", "Pad", "Flatten", "flatten", "Reshape", "reshape",
                         "Pooling", "Dropout", "identity", "_copy", "transpose", "expand_dims", "squeeze")
_WHERE = {
    "restore": "restore applies to op nodes",
    "granularity": "granularity applies to Convolution/FullyConnected (channel-wise also to pad, relu and max "
                   "Pooling; group-wise only to grouped convolutions)",
    "quant_type": "a quant_type applies where a Convolution, FullyConnected, add or Concat requantizes this "
                  "value, or to a weight",
    "optimizor": "an optimizor applies where this value is requantized (a Convolution, FullyConnected, add or "
                 "Concat consumes it)",
}


def folded_aliases(graph: Graph, config: QuantConfig) -> dict[str, str]:
    """User nodes that no prepared node comes from (folded or dropped) -> their config governs the node
    that now holds their value, unless that node is configured itself."""
    origins = {graph.origin.get(n, n) for n, node in graph.nodes.items() if node.op != "null"}
    aliases = {}
    for name in config:
        if name not in origins and name in graph.value_of:
            target = graph.origin.get(graph.value_of[name], graph.value_of[name])
            if target not in config:
                aliases[target] = name
    return aliases


def unused_settings(graph: Graph, config: QuantConfig, used: dict, aliases: dict) -> list[str]:
    default = NodeConfig()
    out = []
    for name, cfg in config.items():
        for fld, value in (("restore", cfg.restore), ("granularity", cfg.granularity), ("quant_type", cfg.quant_type),
                           ("optimizor", cfg.optimizor)):
            if value != getattr(default, fld) and fld not in used.get(name, set()):
                via = [t for t, a in aliases.items() if a == name]
                extra = f" (it was folded into {via[0]})" if via else ""
                out.append(f"'{name}'{extra}: {fld}={value} had no effect; {_WHERE[fld]}")
    return out


def validate_config(graph: Graph, config: QuantConfig) -> None:
    """Every configured name must be a node (or param) of the user's original model."""
    known = set(graph.origin.values()) | set(graph.value_of)
    for name in config:
        if name not in known:
            close = sorted(n for n in known if name.lower() in n.lower() or n.lower() in name.lower())[:5]
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise ConfigError(f"config names node '{name}', which is not in the model{hint}")
