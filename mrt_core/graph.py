"""The one graph IR: single-output nodes in topological order, MXNet op names, numpy params.

A node whose op is "null" is either a parameter (its name is a key of `Graph.params`) or a graph input.
Attributes are kept as MXNet writes them (strings), so a node can be handed to `mx.nd` or written back
to symbol JSON unchanged; `Node.attr` parses them on demand.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from .errors import ModelError


def attr_to_str(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(attr_to_str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (np.integer, np.floating)):
        return str(value.item())
    return str(value)


def parse_attr(text: str):
    """MXNet attribute string -> python value: '(3, 3)' -> (3, 3), 'True' -> True, '2' -> 2, 'relu' -> 'relu'."""
    if text in ("None", "none"):
        return None
    if text in ("True", "true"):
        return True
    if text in ("False", "false"):
        return False
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.attrs = {k: attr_to_str(v) for k, v in self.attrs.items()}
        self.inputs = list(self.inputs)

    def attr(self, key: str, default=None):
        return parse_attr(self.attrs[key]) if key in self.attrs else default

    def tuple_attr(self, key: str, default: tuple = ()) -> tuple:
        value = self.attr(key, default)
        if value is None:
            return tuple(default)
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)

    def window(self) -> tuple[tuple, tuple, tuple]:
        """(kernel, stride, pad) of a pooling or convolution window, MXNet's defaults filled in."""
        kernel = self.tuple_attr("kernel")
        return (kernel, self.tuple_attr("stride") or (1,) * len(kernel),
                self.tuple_attr("pad") or (0,) * len(kernel))

    def op_attrs(self) -> dict[str, str]:
        """Attributes meant for the operator (MXNet's '__x__' keys are annotations, not arguments)."""
        return {k: v for k, v in self.attrs.items() if not k.startswith("__")}

    def replace(self, **changes) -> "Node":
        data = dict(name=self.name, op=self.op, inputs=list(self.inputs), attrs=dict(self.attrs))
        data.update(changes)
        return Node(**data)

    def describe(self) -> str:
        return f"node '{self.name}' (op {self.op})"


class Graph:
    """Nodes in topological order plus params; `origin` and `value_of` keep the lineage to the user's model.

    origin[node]   -> the user's (original) node this node was made from.
    value_of[orig] -> the node of this graph whose output equals the original node's output (absent when a
                      rewrite removed that value, e.g. a Convolution whose output only exists folded with BN).
    """

    def __init__(self, nodes: Iterable[Node], params: dict[str, np.ndarray], outputs: list[str],
                 aux_names: Iterable[str] = (), origin: dict[str, str] | None = None,
                 value_of: dict[str, str] | None = None, input_shapes: dict[str, tuple] | None = None):
        self.nodes: dict[str, Node] = {}
        for node in nodes:
            if node.name in self.nodes:
                raise ModelError(f"duplicate node name '{node.name}'")
            for name in node.inputs:
                if name not in self.nodes:
                    raise ModelError(f"{node.describe()} uses '{name}', which is not defined before it")
            self.nodes[node.name] = node
        self.params = dict(params)
        for name in outputs:
            if name not in self.nodes:
                raise ModelError(f"output '{name}' is not a node of the graph")
        self.outputs = list(outputs)
        self.aux_names = set(aux_names)
        self.origin = dict(origin) if origin is not None else {n: n for n in self.nodes}
        self.value_of = dict(value_of) if value_of is not None else {
            n: n for n, nd in self.nodes.items() if nd.op != "null" or n not in self.params}
        self.input_shapes = dict(input_shapes or {})

    # ---- queries
    @property
    def input_names(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.op == "null" and n.name not in self.params]

    def op_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.op != "null"]

    def is_param(self, name: str) -> bool:
        return name in self.params and self.nodes[name].op == "null"

    def consumers(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {n: [] for n in self.nodes}
        for node in self.nodes.values():
            for name in node.inputs:
                users[name].append(node.name)
        return users

    def descendants(self, name: str) -> set[str]:
        """Every node that (transitively) consumes `name`: what a change at `name` re-executes."""
        import networkx as nx
        return nx.descendants(self.to_networkx(), name)

    def param_count(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def to_networkx(self):
        import networkx as nx
        g = nx.DiGraph()
        for node in self.nodes.values():
            g.add_node(node.name, op=node.op)
            for name in node.inputs:
                g.add_edge(name, node.name)
        return g

    def copy(self) -> "Graph":
        return Graph([n.replace() for n in self.nodes.values()], dict(self.params), self.outputs,
                     self.aux_names, self.origin, self.value_of, self.input_shapes)


class GraphBuilder:
    """Builds a new graph from an old one, keeping names unique and the lineage maps up to date."""

    def __init__(self, source: Graph):
        self.source = source
        self.nodes: list[Node] = []
        self.names: set[str] = set()
        self.params = dict(source.params)
        self.alias: dict[str, str] = {}
        self.origin: dict[str, str] = {}
        self.current_origin: str | None = None
        self.lost: set[str] = set()  # original nodes whose value no longer exists (e.g. folded away)

    def get(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def replace_node(self, node: Node) -> None:
        """Swap an already added node for a changed one of the same name."""
        self.nodes = [node if n.name == node.name else n for n in self.nodes]

    def unique(self, name: str) -> str:
        if name not in self.names and name not in self.source.nodes:
            return name
        k = 1
        while f"{name}_{k}" in self.names or f"{name}_{k}" in self.source.nodes:
            k += 1
        return f"{name}_{k}"

    def add(self, node: Node) -> str:
        if node.name in self.names:
            raise ModelError(f"duplicate node name '{node.name}' while rewriting")
        self.names.add(node.name)
        self.nodes.append(node)
        if node.name not in self.origin:
            self.origin[node.name] = self.source.origin.get(node.name, self.current_origin)
        return node.name

    def op(self, name: str, op: str, inputs: list[str], **attrs) -> str:
        """Add a new op node named after `name` (made unique)."""
        return self.add(Node(self.unique(name), op, inputs, attrs))

    def param(self, name: str, value: np.ndarray, origin: str | None = None) -> str:
        """Add a param; `origin` names the user's param it was derived from (for per-weight config)."""
        name = self.unique(name)
        self.params[name] = np.asarray(value, dtype=np.float32)
        self.origin[name] = self.source.origin.get(origin, origin) if origin else self.current_origin
        return self.add(Node(name, "null"))

    def resolve(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def finish(self, outputs: list[str]) -> Graph:
        used = set(outputs)
        for node in reversed(self.nodes):
            if node.name in used:
                used.update(node.inputs)
        keep = [n for n in self.nodes
                if n.name in used or (n.op == "null" and n.name not in self.params)]
        # null nodes depend on nothing: listing them first keeps the order topological even when a rule
        # added a param after the node that uses it (see replace_node)
        keep = [n for n in keep if n.op == "null"] + [n for n in keep if n.op != "null"]
        params = {k: v for k, v in self.params.items() if k in used}
        value_of = {}
        for orig, name in self.source.value_of.items():
            if orig in self.lost:
                continue
            name = self.resolve(name)
            if name in used:
                value_of[orig] = name
        origin = {n.name: self.origin[n.name] for n in keep if n.name in self.origin}
        return Graph(keep, params, outputs, self.source.aux_names & set(params), origin, value_of,
                     self.source.input_shapes)


Rule = Callable[[Node, GraphBuilder], "str | None"]


def rewrite(graph: Graph, rule: Rule) -> Graph:
    """Walk `graph` once; `rule(node, builder)` may add nodes and return the name that replaces `node`,
    or return None to keep `node` (with its inputs already renamed)."""
    b = GraphBuilder(graph)
    for node in graph.nodes.values():
        node = node.replace(inputs=[b.resolve(i) for i in node.inputs])
        b.current_origin = graph.origin.get(node.name)
        out = rule(node, b)
        if out is None:
            out = b.add(node)
        if out != node.name:
            b.alias[node.name] = out
    b.current_origin = None
    return b.finish([b.resolve(o) for o in graph.outputs])
