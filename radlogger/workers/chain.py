"""The work a worker does: a chain of endpoint stages, run in order through the endpoint base.

One runner for every worker, a pipeline-process child or a pool's worker thread, so the same
endpoint class meets the same error handling wherever it runs:

* each batch goes through :meth:`Endpoint.process_batch` (the base's error isolation,
  counters, ``on_error``/``max_errors`` policy), what a stage publishes is the next stage's
  batch, and the chosen outputs go to ``emit``;
* a stage whose ``handle_batch`` let an exception escape (or that marked itself failed) is in
  an unknown state: the batch is reported as *crashed* and the stage is replaced by a fresh
  instance (closed, re-created, opened), so one poison item does not keep breaking a worker.

Stages are named by entry-point kind or ``module:Class`` (:func:`radlogger.plugins.load_class`)
and configured by plain values, so a child process can build them from text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..broker import pattern_matches
from ..endpoint import Endpoint, EndpointState
from ..measurement import Measurement
from ..plugins import load_class

__all__ = ["StageSpec", "Chain", "Result", "load_stage", "TakesControl"]

log = logging.getLogger(__name__)

#: failed items at the chain's input, crash text (or ""), stages re-created
Result = tuple[int, str, int]


@runtime_checkable
class TakesControl(Protocol):
    """The optional capability of a stage that reacts to control events (``reset``, ``mark``,
    codes >= 100), e.g. ``integrate``; ``flush`` always goes to :meth:`Endpoint.flush`."""

    def on_control(self, command: str, arg: int = 0) -> None: ...


@dataclass(frozen=True)
class StageSpec:
    """One stage: endpoint kind or ``module:Class``, its name, its settings (plain values)."""

    target: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "name": self.name,
                "settings": {k: v if isinstance(v, (str, int, float, bool, list)) else str(v)
                             for k, v in self.settings.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageSpec:
        return cls(str(data["target"]), str(data["name"]), dict(data.get("settings") or {}))


def load_stage(target: str) -> type[Endpoint]:
    """An endpoint class by kind or ``module:Class``; raises LookupError or TypeError."""
    cls: type[Endpoint] = load_class(target, base=Endpoint)
    return cls


class _Outlet:
    """A stage's outlet: what it publishes becomes the next stage's batch."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Measurement] = []

    def push(self, m: Measurement) -> bool:
        self.items.append(m)
        return True

    def push_many(self, ms: list[Measurement]) -> int:
        self.items.extend(ms)
        return len(ms)

    def take(self) -> list[Measurement]:
        items, self.items = self.items, []
        return items


class Chain:
    """The stages of one worker.  ``forward``: ``last`` (all the last stage publishes) and/or
    topic patterns (any stage's outputs that match); ``emit`` receives what is forwarded.
    ``routes`` answers ``has_subscribers`` for the last stage (default: what is forwarded)."""

    def __init__(self, specs: Iterable[StageSpec], forward: Iterable[str],
                 emit: Callable[[list[Measurement]], None],
                 routes: Callable[[str], bool] | None = None) -> None:
        self.specs = list(specs)
        if not self.specs:
            raise ValueError("a worker needs at least one stage")
        forward = [f for f in forward if f != "none"]
        self.forward_last = "last" in forward
        self.patterns = [p for p in forward if p != "last"]
        self.emit = emit
        self.routes = routes
        self.stages: list[Endpoint] = []
        self.outlets = [_Outlet() for _ in self.specs]
        self.recreated = 0
        self._errors_before = 0  # errors of stage instances since replaced
        self._failed = 0
        self._crash = ""
        self._recreated_mark = 0

    # ---------------------------------------------------------------- lifecycle
    def _make(self, i: int) -> Endpoint:
        spec = self.specs[i]
        stage = load_stage(spec.target)(spec.name, spec.settings)
        stage.bind(self.outlets[i], self._subscribed(i == len(self.specs) - 1), None)
        stage.open()
        return stage

    def _subscribed(self, last: bool) -> Callable[[str], bool]:
        if not last or self.forward_last:
            return self.routes if (last and self.routes is not None) else (lambda topic: True)
        patterns = self.patterns
        return lambda topic: any(pattern_matches(p, topic) for p in patterns)

    def open(self) -> None:
        """Create and open every stage; on a failure the ones opened are closed again."""
        try:
            for i in range(len(self.specs)):
                self.stages.append(self._make(i))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for stage in self.stages:
            try:
                stage.close()
            except Exception as exc:  # noqa: BLE001 - close the others anyway
                log.error("stage %s: close failed: %s", stage.name, exc)
        self.stages = []

    def _recreate(self, i: int) -> None:
        old = self.stages[i]
        self._errors_before += old.stats.errors
        if old.state is not EndpointState.FAILED:  # a failed stage closed itself
            try:
                old.close()
            except Exception as exc:  # noqa: BLE001
                log.error("stage %s: close after a crash failed: %s", old.name, exc)
        self.outlets[i].take()
        self.stages[i] = self._make(i)  # raises when it cannot: the worker is then broken
        self.recreated += 1

    # ---------------------------------------------------------------- the work
    def run(self, items: list[Measurement], first: int = 0) -> None:
        """Run ``items`` through the stages from ``first`` on."""
        last = len(self.stages) - 1
        for i in range(first, last + 1):
            stage = self.stages[i]
            n = len(items)
            stage.stats.received += n
            dropped, crashed = stage.stats.dropped, stage.stats.failed_batches
            stage.process_batch(items)  # the endpoint base's error isolation and accounting
            if i == first == 0:
                self._failed += stage.stats.dropped - dropped
            if stage.stats.failed_batches > crashed or stage.state is EndpointState.FAILED:
                why = "raised" if stage.stats.failed_batches > crashed else "marked failed"
                self._crash = f"stage {stage.name} {why} (see the worker's log); re-created"
                self._recreate(i)
            items = self.outlets[i].take()
            if not items:
                return
            self._forward(items, i == last)

    def _forward(self, items: list[Measurement], last: bool) -> None:
        if not (last and self.forward_last):
            patterns = self.patterns
            items = [m for m in items if any(pattern_matches(p, m.topic) for p in patterns)]
        if items:
            self.emit(items)

    def take_result(self) -> Result:
        """What happened since the last call: failed input items, crash text, re-creations."""
        result = (self._failed, self._crash, self.recreated - self._recreated_mark)
        self._failed, self._crash, self._recreated_mark = 0, "", self.recreated
        return result

    def control(self, name: str, arg: int = 0) -> None:
        """``flush`` flushes every stage in order; other events go to stages that take them
        (``on_control(name, arg)``).  What a stage publishes in response runs down the chain."""
        for i, stage in enumerate(self.stages):
            try:
                if name == "flush":
                    stage.flush()
                else:
                    if not isinstance(stage, TakesControl):
                        continue
                    stage.on_control(name, arg)
            except Exception as exc:  # noqa: BLE001 - a stage bug must not kill the worker
                stage.stats.errors += 1
                log.error("stage %s failed on control %s: %s", stage.name, name, exc)
            out = self.outlets[i].take()
            if out:
                self._forward(out, i == len(self.stages) - 1)
                if i + 1 < len(self.stages):
                    self.run(out, i + 1)

    def finish(self) -> None:
        """Flush in order (outputs run down the chain), then close."""
        self.control("flush")
        self.close()

    @property
    def errors(self) -> int:
        return self._errors_before + sum(s.stats.errors for s in self.stages)
