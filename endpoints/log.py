"""The log endpoint: measurements into Python ``logging`` (one line each, or one per batch)."""

from __future__ import annotations

import logging
from typing import Any

from radlogger.endpoint import Endpoint
from radlogger.measurement import Measurement
from radlogger.options import Option

_LEVELS = ("DEBUG", "INFO", "WARNING")


def describe_value(value: object) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"array{tuple(shape)} {getattr(value, 'dtype', '')}"
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


class LogEndpoint(Endpoint):
    kind = "log"
    summary = "writes measurements to the log, one line each or a summary per batch"
    options = (
        Option("per", str, "measurement", "one line per measurement, or per batch",
               choices=("measurement", "batch")),
        Option("level", str, "INFO", "log level of the lines", choices=_LEVELS),
        Option("logger", str, "radlogger.data", "logger name (route it with logging config)"),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self.lines = 0  # log lines written

    def counters(self) -> dict[str, int | float]:
        return {"lines": self.lines}

    def open(self) -> None:
        self._log = logging.getLogger(self.settings.logger)
        self._level = logging.getLevelName(self.settings.level)

    def handle_batch(self, batch: list[Measurement]) -> None:
        if not self._log.isEnabledFor(self._level):
            return
        if self.settings.per == "batch":
            last = batch[-1]
            topics = sorted({m.topic for m in batch})
            self._log.log(self._level, "%d measurements on %s; last %s = %s %s", len(batch),
                          ", ".join(topics), last.topic, describe_value(last.value), last.unit)
            self.lines += 1
            return
        for m in batch:
            self._log.log(self._level, "%s #%d %s %s", m.topic, m.seq, describe_value(m.value),
                          m.unit)
        self.lines += len(batch)
