"""What ``radloggerd check`` finds beyond the syntax: what would fail or misbehave at run time.

Loading a configuration validates each section alone; these checks look across sections, from
the plugins' declared capabilities (``listens()``, ``writes()``, ``accepts``, the dataflow
graph), never from option names:

* **errors** (``check`` exits 1): two services on one port (the control API and every
  component's ``listens()``); a store directory that cannot be created or is not writable; two
  stores writing one path; a subscription loop (a topic that comes back to an endpoint that fed
  it, through an endpoint or an outside service such as an MQTT broker);
* **warnings**: an endpoint subscribed to topics whose quantity it does not take
  (``accepts``), e.g. a spectrum sink given scalars.
"""

from __future__ import annotations

import os
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

__all__ = ["check_config"]

_ANY_HOST = ("", "0.0.0.0", "::", "*")


def check_config(config: Any) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` of a loaded :class:`radlogger.config.Config`."""
    errors = _ports(config) + _stores(config) + _loops(config)
    return errors, _accepts(config)


def _specs(config: Any) -> list[Any]:
    return [*config.devices.values(), *config.endpoints.values()]


def _ports(config: Any) -> list[str]:
    d = config.daemon
    taken: list[tuple[str, str, int, str]] = []
    if d.control_port:
        taken.append(("tcp", d.control_host, d.control_port, "[radlogger] control_port"))
    for spec in _specs(config):
        for proto, host, port in spec.instance.listens():
            if port:
                taken.append((proto, host, port, f"{spec.where('port')}: [{spec.section}]"))
    errors = []
    for i, (proto, host, port, who) in enumerate(taken):
        for proto2, host2, port2, who2 in taken[:i]:
            if proto == proto2 and port == port2 and (
                    host == host2 or host in _ANY_HOST or host2 in _ANY_HOST):
                errors.append(f"{who} listens on {proto} port {port}, as {who2} does: only "
                              "one can; give one of them another port (0 = any free port)")
    return errors


def _creatable(directory: Path) -> str:
    """Why files cannot be created in ``directory`` ('' if they can)."""
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        if probe == directory:
            return f"{directory} is not writable"
        return f"{directory} does not exist and cannot be created: {probe} is not writable"
    return ""


def _stores(config: Any) -> list[str]:
    errors = []
    seen: dict[Path, str] = {}
    for spec in config.endpoints.values():
        for written in spec.instance.writes():
            path = Path(written).expanduser().resolve()
            where = f"{spec.where('path')}: [{spec.section}]"
            other = seen.setdefault(path, where)
            if other != where:
                errors.append(f"{where} writes {path}, as {other} does: two stores cannot "
                              "share a file; give each its own path")
            directory = path if path.is_dir() else path.parent
            why = _creatable(directory)
            if why:
                errors.append(f"{where} cannot write {written}: {why}; create the directory "
                              "with write permission for this user, or choose another path")
    return errors


def _loops(config: Any) -> list[str]:
    """Cycles in the dataflow graph that pass through an endpoint."""
    graph = config.graph
    children: dict[str, list[str]] = {}
    for a, b in graph.edges:
        children.setdefault(a, []).append(b)
    errors: list[str] = []
    reported: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for child in children.get(node, ()):
            if state.get(child) == 1:
                cycle = path[path.index(child):]
                key = frozenset(cycle)
                # an endpoint and its own output alone: processing never takes its own output
                if len(cycle) > 2 and key not in reported and \
                        any(n.startswith("endpoint:") for n in cycle):
                    reported.add(key)
                    names = " -> ".join(graph.nodes[n].label for n in [*cycle, child])
                    errors.append(f"subscription loop: {names}: each measurement would come "
                                  "back forever; narrow a subscribe, or publish elsewhere")
            elif child not in state:
                visit(child)
        path.pop()
        state[node] = 2

    for node in list(graph.nodes):
        if node not in state:
            visit(node)
    return errors


def _accepts(config: Any) -> list[str]:
    graph = config.graph
    warnings = []
    for spec in config.endpoints.values():
        accepts = tuple(spec.instance.accepts)
        if not accepts:
            continue
        refused = []
        for a, b in graph.edges:
            node = graph.nodes[a]
            if b != f"endpoint:{spec.name}" or node.kind != "topic" or "(" in node.label:
                continue
            quantity = node.label.partition(".")[2] or node.label
            if not any(fnmatchcase(quantity, p) for p in accepts):
                refused.append(node.label)
        if refused:
            warnings.append(f"{spec.where('subscribe')}: [{spec.section}] takes "
                            f"{', '.join(accepts)}, but subscribes to {', '.join(refused)}: "
                            "each would fail; narrow subscribe")
    return warnings
