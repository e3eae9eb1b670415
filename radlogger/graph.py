"""The pipeline as a graph: devices -> topics -> endpoints -> derived topics -> ...

Built from a :class:`~radlogger.pipeline.Pipeline` (started or not): device topics come from
``Device.topics()``, subscriptions from the broker, derived topics from each endpoint's
``produces`` templates (``"{topic}_spectrum"``; also ``{source}``, ``{quantity}``, ``{name}``)
applied to the topics it receives, repeated until nothing new appears, so chains
(``wsa1.iq -> fft -> wsa1.iq_spectrum -> calibrate -> ...``) show whole.  Boundaries show as
external nodes (``graph_source`` of a device, ``graph_target`` of an endpoint: MQTT brokers,
long-poll URLs).  Rendered as text (always) and DOT, which Graphviz's ``dot`` turns into SVG
or PNG when it is installed.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .options import Configurable
from .topics import is_glob, pattern_matches

__all__ = ["Node", "Graph", "build_graph", "graph_text", "graph_dot", "render_graph"]


@dataclass
class Node:
    id: str
    kind: str  # device | topic | undeclared (a device's unknown topics) | endpoint | external
    label: str
    state: str = ""
    problem: str = ""


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, node: Node) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id

    def link(self, a: str, b: str) -> None:
        if (a, b) not in self.edges:
            self.edges.append((a, b))

    def children(self, node_id: str) -> list[str]:
        return [b for a, b in self.edges if a == node_id]

    def parents(self, node_id: str) -> list[str]:
        return [a for a, b in self.edges if b == node_id]


def _derive(template: str, topic: str, name: str) -> str | None:
    source, _, quantity = topic.partition(".")
    try:
        return template.format(topic=topic, source=source, device=source,
                               quantity=quantity, name=name)
    except (KeyError, IndexError, ValueError):
        return None


def _overlaps(pattern: str, topic: str) -> bool:
    """Whether subscription ``pattern`` receives ``topic``, which may itself be a glob standing
    for topics a device does not declare (``remote1.*``)."""
    if not is_glob(topic):
        return pattern_matches(pattern, topic)
    if pattern_matches(pattern, topic.replace("*", "x").replace("?", "x")):
        return True
    return not is_glob(pattern) and (fnmatch.fnmatchcase(pattern, topic) or
                                     fnmatch.fnmatchcase(pattern + ".x", topic))


def _endpoint_label(e: Configurable) -> str:
    kind = e.kind or type(e).__name__
    s = e.settings
    if kind == "pool":
        return f"{e.name} (pool: {s.get('workers')} x {s.get('endpoint')} " \
               f"{s.get('worker_mode')}es)".replace("threades", "threads")
    written = e.writes()  # a store: where it writes
    return f"{e.name} ({kind}" + (f": {', '.join(written)})" if written else ")")


def build_graph(pipeline: Any, status: Any = None) -> Graph:
    """The graph of ``pipeline``; ``status`` (a :class:`PipelineStatus`) adds states."""
    g = Graph()
    states: dict[tuple[str, str], Any] = {}
    if status is not None:
        states = {(c.role, c.name): c for c in status.components}

    def annotate(node: Node, role: str, name: str) -> Node:
        c = states.get((role, name))
        if c is not None:
            node.state, node.problem = c.state, c.problem
        return node

    topics: set[str] = set()
    for d in pipeline.devices.values():
        did = g.add(annotate(Node(f"device:{d.name}", "device",
                                  f"{d.name} ({d.kind})"), "device", d.name))
        source = d.graph_source
        if source:
            g.link(g.add(Node(f"external:{source}", "external", source)), did)
        declared = d.topics()
        for t in declared:
            topics.add(t)
            g.link(did, g.add(Node(f"topic:{t}", "topic", t)))
        if not declared:  # a relay or a generic driver: anything under its name
            t = f"{d.name}.*"
            topics.add(t)
            g.link(did, g.add(Node(f"topic:{t}", "undeclared",
                                   f"{t} (topics not declared by the driver)")))
    for t in pipeline.broker.known_topics():  # topics seen while running
        topics.add(t)
        g.add(Node(f"topic:{t}", "topic", t))

    subs: dict[str, list[str]] = {}
    for pattern, owner in pipeline.broker.subscriptions():
        subs.setdefault(owner.name if isinstance(owner, Configurable) else str(owner),
                        []).append(pattern)
    endpoints = list(pipeline.endpoints.values())
    for e in endpoints:
        eid = g.add(annotate(Node(f"endpoint:{e.name}", "endpoint", _endpoint_label(e)),
                             "endpoint", e.name))
        target = e.graph_target
        if target:
            g.link(eid, g.add(Node(f"external:{target}", "external", target)))

    fed: dict[str, set[str]] = {e.name: set() for e in endpoints}
    pending = set(topics)
    while pending:  # propagate derived topics until nothing new appears
        new: set[str] = set()
        for e in endpoints:
            for t in pending:
                if any(_overlaps(p, t) or p == t for p in subs.get(e.name, ())):
                    fed[e.name].add(t)
                    g.link(f"topic:{t}", f"endpoint:{e.name}")
                    for template in e.produces:
                        out = _derive(template, t, e.name)
                        if out and out not in topics:
                            new.add(out)
                        if out:
                            g.link(f"endpoint:{e.name}", g.add(Node(f"topic:{out}", "topic",
                                                                    out)))
        topics |= new
        pending = new
    for e in endpoints:
        for p in subs.get(e.name, ()):
            if not any(_overlaps(p, t) or p == t for t in topics):
                g.warnings.append(f"endpoint {e.name}: subscription '{p}' matches no topic "
                                  "any device or endpoint publishes")
                g.link(g.add(Node(f"topic:{p}", "topic", f"{p} (nothing publishes)")),
                       f"endpoint:{e.name}")
    for e in endpoints:
        if not fed[e.name] and not any(a.startswith("topic:") for a in
                                       g.parents(f"endpoint:{e.name}")):
            g.warnings.append(f"endpoint {e.name}: subscribes to nothing")
    return g


def _describe(node: Node) -> str:
    text = node.label
    if node.state:
        text += f" [{node.state}]"
    if node.problem:
        text += f" !! {node.problem}"
    return text


def graph_text(g: Graph) -> str:
    """A tree per device following the data: device -> topic -> endpoint -> derived topic."""
    lines: list[str] = []
    shown: set[str] = set()

    def walk(node_id: str, prefix: str, last: bool, depth: int) -> None:
        node = g.nodes[node_id]
        arrow = "-> " if node.kind in ("endpoint", "external") else ""
        branch = "" if depth == 0 else ("`-- " if last else "|-- ")
        again = node_id in shown and node.kind == "endpoint"
        lines.append(f"{prefix}{branch}{arrow}{_describe(node)}" + (" (see above)" if again
                                                                     else ""))
        if again:
            return
        shown.add(node_id)
        kids = g.children(node_id)
        inner = prefix + ("" if depth == 0 else ("    " if last else "|   "))
        for i, kid in enumerate(kids):
            walk(kid, inner, i == len(kids) - 1, depth + 1)

    # Trees start at devices, and at topics nothing declares (subscriptions to nothing).
    roots = [n for n in g.nodes.values() if n.kind == "device"] + \
        [n for n in g.nodes.values() if n.kind == "topic" and not g.parents(n.id)
         and g.children(n.id)]
    for root in roots:
        parents = [g.nodes[p] for p in g.parents(root.id) if g.nodes[p].kind == "external"]
        for p in parents:
            lines.append(f"{p.label} ->")
        walk(root.id, "", True, 0)
    orphans = [n for n in g.nodes.values() if n.kind == "endpoint" and n.id not in shown]
    if orphans:
        lines.append("endpoints receiving nothing:")
        lines.extend(f"  {_describe(n)}" for n in orphans)
    if g.warnings:
        lines.append("warnings:")
        lines.extend(f"  {w}" for w in g.warnings)
    return "\n".join(lines) + "\n"


_SHAPES = {"device": 'shape=box, style="rounded,filled", fillcolor="#dbe9f6"',
           "topic": 'shape=ellipse, style=filled, fillcolor="#f4f4f4"',
           "undeclared": 'shape=ellipse, style="dashed,filled", fillcolor="#f4f4f4"',
           "endpoint": 'shape=component, style=filled, fillcolor="#e3f3df"',
           "external": 'shape=cylinder, style=filled, fillcolor="#fdf1d6"'}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def graph_dot(g: Graph) -> str:
    out = ["digraph radloggerd {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for n in g.nodes.values():
        label = n.label + (f"\\n[{n.state}]" if n.state else "")
        extra = ', color=red, penwidth=2' if n.problem else ""
        tooltip = f", tooltip={_q(n.problem)}" if n.problem else ""
        out.append(f"  {_q(n.id)} [label={_q(label).replace(chr(92) * 2 + 'n', chr(92) + 'n')}"
                   f", {_SHAPES[n.kind]}{extra}{tooltip}];")
    for a, b in g.edges:
        out.append(f"  {_q(a)} -> {_q(b)};")
    out.append("}")
    return "\n".join(out) + "\n"


def render_graph(g: Graph, path: str | Path) -> tuple[Path, bool]:
    """Write the graph to ``path`` (.svg/.png via Graphviz, .dot, or .txt).

    Returns (the file written, whether it is a rendered image).  Without Graphviz an image
    request writes the text form next to it (``.txt``) instead of failing.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt == "dot":
        path.write_text(graph_dot(g))
        return path, False
    if fmt in ("svg", "png", "pdf"):
        dot = shutil.which("dot")
        if dot is not None:
            subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=graph_dot(g).encode(),
                           check=True, capture_output=True, timeout=60)
            return path, True
        path = path.with_suffix(".txt")
    path.write_text(graph_text(g))
    return path, False
