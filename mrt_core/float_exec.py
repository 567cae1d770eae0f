"""Float execution of a Graph through `mx.nd`, node by node, optionally keeping every intermediate."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .errors import ModelError
from .graph import Graph, Node

def mx_call(node: Node, inputs: list):
    import mxnet as mx
    fn = getattr(mx.nd, node.op, None) or getattr(mx.nd._internal, node.op, None)  # _mul_scalar etc.
    if fn is None:
        raise ModelError(f"{node.describe()}: unknown operator '{node.op}' (not an MXNet op)")
    try:
        return fn(*inputs, **node.op_attrs())
    except Exception as exc:  # MXNetError carries a long C++ trace; keep its message
        msg = str(exc).split("Stack trace")[0].strip().splitlines()
        raise ModelError(f"{node.describe()} failed: {msg[-1] if msg else exc}") from None


def run_float(graph: Graph, feeds: dict[str, np.ndarray], keep: Iterable[str] | str = "outputs",
              dtype: str = "float32", visit=None) -> dict[str, "mx.nd.NDArray"]:
    """Run `graph` on `feeds` (input name -> array). keep: "outputs", "all", or an iterable of node names.
    visit(name, value) sees every node's value as it is made (calibration uses it to keep only statistics).

    Returns name -> mx.nd.NDArray for the kept nodes (graph outputs always included)."""
    import mxnet as mx
    missing = [n for n in graph.input_names if n not in feeds]
    if missing:
        raise ModelError(f"no data given for graph input(s) {missing}")
    keep_set = set(graph.nodes) if keep == "all" else set(graph.outputs) | (set() if keep == "outputs" else set(keep))
    users = graph.consumers()
    remaining = {n: len(u) for n, u in users.items()}
    values: dict = {}
    result: dict = {}
    for node in graph.nodes.values():
        if node.op == "null":
            src = graph.params[node.name] if node.name in graph.params else feeds[node.name]
            value = mx.nd.array(src, dtype=dtype)
        else:
            args = [values[i] for i in node.inputs]
            value = mx_call(node, args)
            for i in node.inputs:  # free what no later node needs, so memory stays per-layer
                remaining[i] -= 1
                if remaining[i] == 0 and i not in keep_set:
                    values.pop(i, None)
        values[node.name] = value
        if visit is not None:
            visit(node.name, value)
        if node.name in keep_set:
            result[node.name] = value
    return result


def infer_shapes(graph: Graph, input_shapes: dict[str, tuple] | None = None) -> dict[str, tuple]:
    """Shape of every node's output for a batch of one (a -1 batch dimension counts as 1)."""
    input_shapes = input_shapes or graph.input_shapes
    feeds = {}
    for name in graph.input_names:
        if name not in input_shapes:
            raise ModelError(f"no shape known for graph input '{name}'")
        shape = tuple(1 if d in (-1, None) else int(d) for d in input_shapes[name])
        feeds[name] = np.zeros(shape, dtype=np.float32)
    values = run_float(graph, feeds, keep="all")
    return {name: tuple(v.shape) for name, v in values.items()}
