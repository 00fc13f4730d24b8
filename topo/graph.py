"""The topology of one vhost as a picture: Mermaid, Graphviz dot, or one self-contained HTML file.

Four kinds of edge, drawn differently everywhere: a binding to a queue (solid), an exchange-to-
exchange binding (solid, bold), an alternate exchange (dashed) and a dead-letter route from a queue to
its dead-letter exchange (dotted). The HTML holds an inline SVG laid out here (layers by distance from
the exchanges nothing feeds), with no script and no network access at view time.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

from topo.route import BUILTIN_EXCHANGES, Topology

FORMATS = ("mermaid", "dot", "html")


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    name: str
    kind: str  # "exchange" or "queue"
    detail: str  # exchange type (and internal) or queue type


@dataclass(frozen=True, slots=True)
class Edge:
    source: str  # node ids
    target: str
    kind: str  # "binding", "e2e", "alternate", "dead-letter"
    label: str


def build(topology: Topology) -> tuple[list[Node], list[Edge]]:
    """Nodes and edges: the declared objects plus the built-in exchanges that bindings use."""
    used = {b.source for bs in topology.bindings.values() for b in bs} | {
        b.destination for bs in topology.bindings.values() for b in bs if b.destination_type == "exchange"
    }
    nodes: list[Node] = []
    for name, exchange in sorted(topology.exchanges.items()):
        if name in BUILTIN_EXCHANGES and name not in used and not exchange.arguments:
            continue
        detail = (
            exchange.type + (", internal" if exchange.internal else "") + (", external" if exchange.external else "")
        )
        nodes.append(Node(f"x{len(nodes)}", name, "exchange", detail))
    for name, queue in sorted(topology.queues.items()):
        nodes.append(Node(f"q{len(nodes)}", name, "queue", queue.type + (", external" if queue.external else "")))
    ids = {(n.kind, n.name): n.id for n in nodes}
    edges: list[Edge] = []
    for source in sorted(topology.bindings):
        for binding in topology.bindings[source]:
            target = ids.get((binding.destination_type, binding.destination))
            if target is None or ("exchange", source) not in ids:
                continue
            label = binding.describe() if binding.arguments else binding.routing_key
            kind = "e2e" if binding.destination_type == "exchange" else "binding"
            edges.append(Edge(ids[("exchange", source)], target, kind, label))
    for name in sorted(topology.exchanges):
        if ("exchange", name) not in ids:
            continue
        alternate = topology.alternate_exchange(topology.exchanges[name])
        if alternate is not None and ("exchange", alternate[0]) in ids:
            edges.append(
                Edge(ids[("exchange", name)], ids[("exchange", alternate[0])], "alternate", "alternate-exchange")
            )
    for name in sorted(topology.queues):
        exchange, routing_key = topology.dead_letter(topology.queues[name])
        if exchange is not None and ("exchange", exchange[0]) in ids:
            label = "dead letters" + (f" ({routing_key[0]})" if routing_key else "")
            edges.append(Edge(ids[("queue", name)], ids[("exchange", exchange[0])], "dead-letter", label))
    return nodes, edges


def _mermaid_text(text: str) -> str:
    # Mermaid's own entity codes (#quot; #35;): inside a quoted label only these characters are special.
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text


def mermaid(topology: Topology) -> str:
    nodes, edges = build(topology)
    lines = ["flowchart LR", f"  %% vhost {topology.vhost}"]
    for node in nodes:
        label = _mermaid_text(f"{node.name} ({node.detail})")
        lines.append(f'  {node.id}{{{{"{label}"}}}}' if node.kind == "exchange" else f'  {node.id}[("{label}")]')
    arrows = {"binding": "-->", "e2e": "==>", "alternate": "-.->", "dead-letter": "-.->"}
    for edge in edges:
        label = _mermaid_text(edge.label) if edge.label else " "
        lines.append(f'  {edge.source} {arrows[edge.kind]}|"{label}"| {edge.target}')
    for index, edge in enumerate(edges):
        if edge.kind == "dead-letter":
            lines.append(f"  linkStyle {index} stroke:#c0392b,stroke-dasharray:2 4")
        elif edge.kind == "alternate":
            lines.append(f"  linkStyle {index} stroke:#d68910,stroke-dasharray:8 4")
    lines.append("  classDef exchange fill:#eaf2fb,stroke:#2e6da4")
    lines.append("  classDef queue fill:#eafaf1,stroke:#1e8449")
    for kind in ("exchange", "queue"):
        members = [n.id for n in nodes if n.kind == kind]
        if members:
            lines.append(f"  class {','.join(members)} {kind}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def dot(topology: Topology) -> str:
    nodes, edges = build(topology)
    lines = [f"digraph {_dot_text(topology.vhost)} {{", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for node in nodes:
        shape = (
            'shape=hexagon, style=filled, fillcolor="#eaf2fb"'
            if node.kind == "exchange"
            else ('shape=cylinder, style=filled, fillcolor="#eafaf1"')
        )
        lines.append(f"  {node.id} [label={_dot_text(node.name + chr(10) + node.detail)}, {shape}];")
    styles = {
        "binding": "",
        "e2e": ", penwidth=2",
        "alternate": ', style=dashed, color="#d68910"',
        "dead-letter": ', style=dotted, color="#c0392b"',
    }
    for edge in edges:
        lines.append(f"  {edge.source} -> {edge.target} [label={_dot_text(edge.label)}{styles[edge.kind]}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---- HTML: an SVG laid out here -----------------------------------------------------------------

NODE_W, NODE_H, COL_GAP, ROW_GAP, MARGIN = 220, 48, 260, 30, 30
EDGE_STYLE = {
    "binding": 'stroke="#555" stroke-width="1.4"',
    "e2e": 'stroke="#2e6da4" stroke-width="2.6"',
    "alternate": 'stroke="#d68910" stroke-width="1.8" stroke-dasharray="8 4"',
    "dead-letter": 'stroke="#c0392b" stroke-width="1.8" stroke-dasharray="2 4"',
}


def _layers(nodes: list[Node], edges: list[Edge]) -> dict[str, int]:
    """Column of each node: exchanges by their distance from the exchanges nothing binds into; queues last."""
    forward: dict[str, list[str]] = {}
    fed = set()
    for edge in edges:
        if edge.kind in ("e2e", "alternate"):
            forward.setdefault(edge.source, []).append(edge.target)
            fed.add(edge.target)
    exchanges = [n.id for n in nodes if n.kind == "exchange"]
    column: dict[str, int] = {}
    frontier = [x for x in exchanges if x not in fed] or exchanges[:1]
    for x in frontier:
        column[x] = 0
    while frontier:
        following = []
        for x in frontier:
            for y in forward.get(x, []):
                if y not in column:
                    column[y] = column[x] + 1
                    following.append(y)
        frontier = following
    for x in exchanges:
        column.setdefault(x, 0)
    last = max(column.values(), default=-1) + 1
    for node in nodes:
        if node.kind == "queue":
            column[node.id] = last
    return column


def _svg(topology: Topology) -> tuple[str, int, int]:
    nodes, edges = build(topology)
    column = _layers(nodes, edges)
    rows: dict[int, int] = {}
    position: dict[str, tuple[int, int]] = {}
    for node in nodes:
        col = column[node.id]
        row = rows.get(col, 0)
        rows[col] = row + 1
        position[node.id] = (MARGIN + col * (NODE_W + COL_GAP), MARGIN + 30 + row * (NODE_H + ROW_GAP))
    # Room on the right for the dead-letter labels under the last column.
    width = MARGIN * 2 + (max(column.values(), default=0) + 1) * (NODE_W + COL_GAP) - COL_GAP + 160
    height = MARGIN * 2 + 30 + max(rows.values(), default=1) * (NODE_H + ROW_GAP) + 60
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="Helvetica, Arial, sans-serif" font-size="12">',
        "<defs>",
    ]
    for kind, colour in (("binding", "#555"), ("e2e", "#2e6da4"), ("alternate", "#d68910"), ("dead-letter", "#c0392b")):
        out.append(
            f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    out.append("</defs>")
    out.append(
        f'<text x="{MARGIN}" y="{MARGIN}" font-size="16" font-weight="bold">vhost {html.escape(topology.vhost)}</text>'
    )
    # Edges into the same side of a node enter at different heights, each with its label beside it.
    entries: dict[str, list[int]] = {}
    for index, edge in enumerate(edges):
        if position[edge.target][0] > position[edge.source][0]:
            entries.setdefault(edge.target, []).append(index)
    for index, edge in enumerate(edges):
        (sx, sy), (tx, ty) = position[edge.source], position[edge.target]
        if tx > sx:
            slot = entries[edge.target]
            x1, y1 = sx + NODE_W, sy + NODE_H / 2
            x2, y2 = tx, ty + NODE_H * (slot.index(index) + 1) / (len(slot) + 1)
            bend = (x2 - x1) / 2
            path = f"M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} {x2 - bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
            label = (x2 - 10, y2 - 3, "end")
        else:  # backwards (dead letters, cycles, alternates in one column): a loop under the two nodes
            x1, x2 = sx + NODE_W / 2, tx + NODE_W / 2
            y1, y2 = sy + NODE_H, ty + NODE_H
            drop = 30 + 10 * (index % 5)
            path = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{y1 + drop:.0f} {x2:.0f},{y2 + drop:.0f} {x2:.0f},{y2:.0f}"
            label = (x1 + 6, y1 + 13, "start")
        out.append(
            f'<g class="edge {edge.kind}"><path d="{path}" fill="none" {EDGE_STYLE[edge.kind]} '
            f'marker-end="url(#arrow-{edge.kind})"/>'
            f'<text x="{label[0]:.0f}" y="{label[1]:.0f}" text-anchor="{label[2]}" fill="#333" font-size="10">'
            f"{html.escape(edge.label)}</text></g>"
        )
    for node in nodes:
        x, y = position[node.id]
        if node.kind == "exchange":
            shape = (
                f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="14" fill="#eaf2fb" stroke="#2e6da4" '
                'stroke-width="1.5"/>'
            )
        else:
            shape = (
                f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="3" fill="#eafaf1" stroke="#1e8449" '
                'stroke-width="1.5"/>'
            )
        name = html.escape(node.name)
        out.append(
            f'<g class="node {node.kind}" data-name="{name}">{shape}'
            f'<text x="{x + NODE_W / 2:.0f}" y="{y + 19}" text-anchor="middle" font-weight="bold">{name}</text>'
            f'<text x="{x + NODE_W / 2:.0f}" y="{y + 35}" text-anchor="middle" fill="#555" font-size="10">'
            f"{html.escape(node.kind + ' · ' + node.detail)}</text></g>"
        )
    out.append("</svg>")
    return "\n".join(out), width, height


LEGEND = (
    '<p class="legend"><span style="color:#555">── binding to a queue</span> · '
    '<span style="color:#2e6da4"><b>━━ exchange-to-exchange binding</b></span> · '
    '<span style="color:#d68910">- - alternate exchange</span> · '
    '<span style="color:#c0392b">··· dead letters</span></p>'
)


def html_page(topology: Topology) -> str:
    svg, width, _ = _svg(topology)
    title = html.escape(f"topo graph: vhost {topology.vhost}")
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        "<style>body{font-family:Helvetica,Arial,sans-serif;margin:16px;background:#fff;color:#222}"
        ".legend{font-size:13px}</style></head>\n"
        f'<body><h1 style="font-size:18px">{title}</h1>{LEGEND}\n'
        f'<div style="min-width:{width}px">{svg}</div>\n</body></html>\n'
    )


def render(topology: Topology, fmt: str) -> str:
    if fmt == "mermaid":
        return mermaid(topology)
    if fmt == "dot":
        return dot(topology)
    return html_page(topology)
