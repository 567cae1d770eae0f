"""MXNet symbol JSON + params <-> Graph.

Two namings are read: Gluon's `NAME-symbol.json` + `NAME-0000.params` (keys prefixed `arg:`/`aux:`) and
MRT's `NAME.json` + `NAME.params` (plain keys). The JSON is parsed here, not by MXNet, so that a broken
file gives an error that names what is wrong.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .errors import ModelError
from .graph import Graph, Node

# Inputs of these ops at these positions are auxiliary states (MXNet stores them as `aux:`).
_AUX_INPUTS = {"BatchNorm": (3, 4), "_contrib_SyncBatchNorm": (3, 4)}


def find_model_files(model_dir: str, model_name: str) -> tuple[str, str]:
    """Return (json, params) paths for either naming, or raise naming the files looked for."""
    candidates = [
        (f"{model_name}-symbol.json", f"{model_name}-0000.params"),
        (f"{model_name}.json", f"{model_name}.params"),
    ]
    for sym, par in candidates:
        sym_path, par_path = os.path.join(model_dir, sym), os.path.join(model_dir, par)
        if os.path.exists(sym_path):
            if not os.path.exists(par_path):
                raise ModelError(f"found {sym_path} but not its params file {par_path}")
            return sym_path, par_path
    looked = ", ".join(os.path.join(model_dir, c[0]) for c in candidates)
    raise ModelError(f"model '{model_name}' not found: looked for {looked}")


def load_params(path: str) -> tuple[dict[str, np.ndarray], set[str]]:
    import mxnet as mx
    try:
        raw = mx.nd.load(path)
    except Exception as exc:  # MXNet raises MXNetError with a C++ backtrace; keep the first line
        lines = [l.strip() for l in str(exc).splitlines() if l.strip() and not l.strip().startswith(("File", "Traceback", "["))]
        raise ModelError(f"cannot read params file {path}: {lines[-1] if lines else 'not an MXNet params file'}") from None
    if isinstance(raw, list) and not raw:
        raw = {}  # MXNet reads an empty dict back as an empty list
    if not isinstance(raw, dict):
        raise ModelError(f"params file {path} holds an unnamed list of arrays, expected a name -> array dict")
    params, aux = {}, set()
    for key, value in raw.items():
        kind, _, name = key.partition(":")
        if not name:
            kind, name = "arg", key
        if kind == "aux":
            aux.add(name)
        params[name] = value.asnumpy()
    return params, aux


def graph_from_json(text: str, params: dict[str, np.ndarray], aux: set[str] = frozenset(),
                    source: str = "symbol JSON") -> Graph:
    try:
        data = json.loads(text)
        raw_nodes, heads = data["nodes"], data["heads"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelError(f"{source} is not an MXNet symbol file: {exc}") from None
    nodes: list[Node] = []
    names: list[str] = []
    for idx, raw in enumerate(raw_nodes):
        try:
            name, op = raw["name"], raw["op"]
            attrs = raw.get("attrs", raw.get("param", raw.get("attr", {}))) or {}
            inputs = []
            for entry in raw.get("inputs", []):
                src, out_index = entry[0], entry[1]
                if out_index != 0:
                    raise ModelError(f"{source}: node '{name}' uses output {out_index} of node "
                                     f"'{names[src]}'; only single-output use is supported")
                inputs.append(names[src])
        except (KeyError, IndexError, TypeError) as exc:
            raise ModelError(f"{source}: node #{idx} is malformed ({exc!r})") from None
        nodes.append(Node(name, op, inputs, attrs))
        names.append(name)
    outputs = []
    for head in heads:
        if head[1] != 0:
            raise ModelError(f"{source}: output {head[1]} of node '{names[head[0]]}' is a graph output; "
                             f"only single-output nodes are supported")
        outputs.append(names[head[0]])
    graph = Graph(nodes, {}, outputs)
    missing = [n.name for n in graph.nodes.values()
               if n.op == "null" and n.name not in params and _is_weight_slot(graph, n.name)]
    if missing:
        raise ModelError(f"{source}: params missing for {', '.join(missing[:5])}"
                         + (" ..." if len(missing) > 5 else ""))
    graph.params = {k: v for k, v in params.items() if k in graph.nodes}
    graph.aux_names = set(aux) & set(graph.params)
    _check_param_shapes(graph)
    return graph


def _is_weight_slot(graph: Graph, name: str) -> bool:
    """A null node fed into a weight/bias/BN-state position must be a param, never a data input."""
    for node in graph.nodes.values():
        if name in node.inputs[1:] and node.op in ("Convolution", "FullyConnected", "BatchNorm", "Deconvolution"):
            return True
    return False


def _check_param_shapes(graph: Graph) -> None:
    for node in graph.nodes.values():
        if node.op in ("Convolution", "FullyConnected") and len(node.inputs) >= 2:
            w = graph.params.get(node.inputs[1])
            if w is None:
                continue
            want = node.attr("num_filter") if node.op == "Convolution" else node.attr("num_hidden")
            if want is not None and w.shape[0] != want:
                raise ModelError(f"{node.describe()}: weight '{node.inputs[1]}' has shape {w.shape}, "
                                 f"but the node wants {want} outputs")


def load_mxnet(model_dir: str, model_name: str) -> Graph:
    sym_path, par_path = find_model_files(model_dir, model_name)
    params, aux = load_params(par_path)
    with open(sym_path) as f:
        text = f.read()
    return graph_from_json(text, params, aux, source=sym_path)


def graph_to_json(graph: Graph) -> str:
    index = {name: i for i, name in enumerate(graph.nodes)}
    nodes = []
    for node in graph.nodes.values():
        entry = {"op": node.op, "name": node.name, "inputs": [[index[i], 0, 0] for i in node.inputs]}
        if node.attrs:
            entry["attrs"] = dict(node.attrs)
        nodes.append(entry)
    data = {
        "nodes": nodes,
        "arg_nodes": [i for i, n in enumerate(graph.nodes.values()) if n.op == "null"],
        "node_row_ptr": list(range(len(nodes) + 1)),
        "heads": [[index[o], 0, 0] for o in graph.outputs],
        "attrs": {"mxnet_version": ["int", 10901]},
    }
    return json.dumps(data, indent=2)


def save_mxnet(graph: Graph, directory: str, name: str, naming: str = "gluon") -> tuple[str, str]:
    """Write the graph; naming 'gluon' -> NAME-symbol.json/NAME-0000.params with arg:/aux:, 'mrt' -> NAME.json/.params."""
    import mxnet as mx
    os.makedirs(directory, exist_ok=True)
    if naming == "gluon":
        sym_path = os.path.join(directory, f"{name}-symbol.json")
        par_path = os.path.join(directory, f"{name}-0000.params")
        blobs = {("aux:" if k in graph.aux_names else "arg:") + k: mx.nd.array(v, dtype=v.dtype)
                 for k, v in graph.params.items()}
    elif naming == "mrt":
        sym_path = os.path.join(directory, f"{name}.json")
        par_path = os.path.join(directory, f"{name}.params")
        blobs = {k: mx.nd.array(v, dtype=v.dtype) for k, v in graph.params.items()}
    else:
        raise ValueError(f"unknown naming '{naming}' (use 'gluon' or 'mrt')")
    with open(sym_path, "w") as f:
        f.write(graph_to_json(graph))
    mx.nd.save(par_path, blobs)
    return sym_path, par_path
