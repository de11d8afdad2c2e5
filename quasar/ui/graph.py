"""The catalog's lineage: every source, signal, request-time signal and feature service as a node, an edge from
what each one reads to it, and a node's upstream and downstream drawn as an inline SVG, laid out here on the
server (no script runs in the browser).

Edges: a source (or the upstream signal of a ``Source.signal``) to the signal computed from it; each input of a
request-time signal to it; each feature reference of a feature service's latest version to the service. The
drawing of a node holds every node it is computed from (upstream, transitively) and every node computed from
it (downstream, transitively), in columns by the longest path from their roots, so each edge points right.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape
from typing import Any

from quasar.signals.refs import parse_feature_ref

KINDS = ("source", "signal", "request", "service")       # also the column order of ties
ROUTES = {"source": "sources", "signal": "signals", "request": "requests", "service": "services"}
NODE_W, NODE_H, BEND_H, GAP_X, GAP_Y, PAD = 184, 46, 8, 64, 14, 12
LABEL_CHARS = 22


@dataclass(frozen=True, order=True)
class Node:
    kind: str
    name: str
    detail: str = field(default="", compare=False)      # e.g. "aggregation", "parquet source"

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def href(self) -> str:
        return f"/{ROUTES[self.kind]}/{self.name}"


@dataclass
class Lineage:
    """The catalog's nodes and ``edges`` (``(from id, to id)``), read from the registry once."""

    nodes: dict[str, Node] = field(default_factory=dict)
    edges: set[tuple[str, str]] = field(default_factory=set)

    def add(self, node: Node) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id

    def around(self, focus: str) -> Lineage:
        """``focus`` with everything upstream and downstream of it (not its siblings)."""
        keep = {focus} | _reach(focus, self.edges, forward=True) | _reach(focus, self.edges, forward=False)
        return Lineage(nodes={k: n for k, n in self.nodes.items() if k in keep},
                       edges={(a, b) for a, b in self.edges if a in keep and b in keep})

    def upstream(self, focus: str) -> set[str]:
        return _reach(focus, self.edges, forward=False)

    def downstream(self, focus: str) -> set[str]:
        return _reach(focus, self.edges, forward=True)


def _reach(start: str, edges: Iterable[tuple[str, str]], *, forward: bool) -> set[str]:
    step: dict[str, list[str]] = {}
    for a, b in edges:
        src, dst = (a, b) if forward else (b, a)
        step.setdefault(src, []).append(dst)
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in step.get(todo.pop(), []):
            if nxt not in seen and nxt != start:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def catalog_lineage(registry: Any) -> Lineage:
    """The lineage of every latest version in the registry."""
    lin = Lineage()
    signals = registry.signals()
    requests = registry.request_signals()
    services = registry.services()
    request_names = {rv.name for rv in requests}
    signal_names = {sv.name for sv in signals}

    def ref_node(name: str) -> str:
        if name in request_names:
            return lin.add(Node("request", name, "request-time"))
        return lin.add(Node("signal", name, "signal" if name in signal_names else "not registered"))

    for sv in signals:
        lin.add(Node("signal", sv.name, sv.signal.kind))
    for sv in signals:
        sig = sv.signal
        me = f"signal:{sv.name}"
        if sig.source.kind == "signal" and sig.source.upstream:
            lin.edges.add((ref_node(sig.source.upstream), me))
        else:
            lin.edges.add((lin.add(Node("source", sig.source.name, f"{sig.source.kind} source")), me))
    for rv in requests:
        me = lin.add(Node("request", rv.name, "request-time"))
        for up in rv.signal.upstream:
            lin.edges.add((ref_node(up), me))
    for fs in services:
        me = lin.add(Node("service", fs.name, "feature service"))
        for raw in fs.service.features:
            try:
                name = parse_feature_ref(raw).signal
            except Exception:       # a reference the registry accepted but this parser does not: left out
                continue
            lin.edges.add((ref_node(name), me))
    return lin


@dataclass(frozen=True)
class Placed:
    node: Node | None                  # None: a bend point of an edge that crosses a column
    id: str
    x: int
    y: int
    h: int


@dataclass
class Drawing:
    placed: dict[str, Placed]
    routes: dict[tuple[str, str], list[str]]        # each edge's bend points, upstream first
    width: int
    height: int


def layout(lin: Lineage) -> Drawing:
    """Nodes placed in columns by longest path from a root; an edge crossing columns gets a bend point in each
    one it crosses, so it runs between nodes, never under one; each column ordered by the mean row of what
    its members read (then kind and name), so edges cross little. Sugiyama's layering, in short."""
    preds: dict[str, list[str]] = {k: [] for k in lin.nodes}
    for a, b in sorted(lin.edges):
        preds[b].append(a)
    column: dict[str, int] = {}

    def depth(n: str, path: frozenset[str]) -> int:
        if n not in column:
            ups = [p for p in preds[n] if p not in path]      # a cycle (refused at registration) draws flat
            column[n] = 1 + max((depth(p, path | {n}) for p in ups), default=-1)
        return column[n]

    for n in lin.nodes:
        depth(n, frozenset())
    slots: dict[str, list[str]] = {n: [] for n in lin.nodes}     # what each slot reads, bend points included
    routes: dict[tuple[str, str], list[str]] = {}
    for a, b in sorted(lin.edges):
        prev = a
        bends = []
        for c in range(column[a] + 1, column[b]):
            bend = f"~{a}>{b}#{c}"
            column[bend] = c
            slots[bend] = [prev]
            bends.append(bend)
            prev = bend
        slots[b].append(prev)
        routes[(a, b)] = bends
    columns: dict[int, list[str]] = {}
    for n in sorted(slots, key=lambda k: (k in lin.nodes, *((KINDS.index(lin.nodes[k].kind), lin.nodes[k].name)
                                                            if k in lin.nodes else (0, k)))):
        columns.setdefault(column[n], []).append(n)
    row: dict[str, float] = {}
    for c in sorted(columns):
        members = columns[c]
        if c:
            members.sort(key=lambda n: sum(row[p] for p in slots[n]) / len(slots[n]) if slots[n] else 0.0)
        for i, n in enumerate(members):
            row[n] = float(i)

    def tall(n: str) -> int:
        return NODE_H if n in lin.nodes else BEND_H

    spans = {c: sum(tall(n) for n in m) + (len(m) - 1) * GAP_Y for c, m in columns.items()}
    height = PAD * 2 + max(spans.values(), default=0)
    width = PAD * 2 + len(columns) * NODE_W + max(0, len(columns) - 1) * GAP_X
    placed: dict[str, Placed] = {}
    for c, members in sorted(columns.items()):
        y = (height - spans[c]) // 2
        for n in members:
            placed[n] = Placed(lin.nodes.get(n), n, PAD + c * (NODE_W + GAP_X), y, tall(n))
            y += tall(n) + GAP_Y
    return Drawing(placed, routes, width, height)


def _route(d: Drawing, a: str, b: str) -> str:
    """The path of edge ``a -> b``: a curve from ``a``'s right side to each bend point's column, straight
    across it, on to ``b``'s left side."""
    src = d.placed[a]
    x, y = src.x + NODE_W, src.y + src.h // 2
    path = [f"M {x} {y}"]
    for bend in [*d.routes[(a, b)], b]:
        at = d.placed[bend]
        nx, ny = at.x, at.y + at.h // 2
        mid = (nx - x) // 2
        path.append(f"C {x + mid} {y}, {nx - mid} {ny}, {nx} {ny}")
        x, y = nx, ny
        if bend != b:
            x = at.x + NODE_W
            path.append(f"L {x} {y}")
    return " ".join(path)


def _label(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"


def lineage_svg(lin: Lineage, focus: str) -> str:
    """``lin`` around ``focus`` as an inline SVG: a ``g.node`` per node (``data-node="kind:name"``, a link to
    its page, ``focus`` on the one drawn for), a ``path.edge`` per edge (``data-from``, ``data-to``)."""
    drawing = layout(lin.around(focus))
    width, height = drawing.width, drawing.height
    parts = [f'<svg class="lineage" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="lineage of {escape(focus)}">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#64748b"/></marker></defs>']
    for a, b in sorted(drawing.routes):
        parts.append(f'<path class="edge" data-from="{escape(a)}" data-to="{escape(b)}" d="{_route(drawing, a, b)}" '
                     'fill="none" stroke="#64748b" stroke-width="1.5" marker-end="url(#arrow)"/>')
    for p in drawing.placed.values():
        n = p.node
        if n is None:
            continue
        classes = f"node {n.kind}" + (" focus" if n.id == focus else "")
        parts.append(
            f'<g class="{classes}" data-node="{escape(n.id)}"><a href="{escape(n.href)}">'
            f'<title>{escape(n.kind)} {escape(n.name)} ({escape(n.detail)})</title>'
            f'<rect x="{p.x}" y="{p.y}" width="{NODE_W}" height="{NODE_H}" rx="7"/>'
            f'<text x="{p.x + 10}" y="{p.y + 19}" class="name">{escape(_label(n.name))}</text>'
            f'<text x="{p.x + 10}" y="{p.y + 36}" class="detail">{escape(n.detail)}</text></a></g>')
    parts.append("</svg>")
    return "".join(parts)
