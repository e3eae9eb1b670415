"""Remote device: long-polls another radloggerd's ``longpoll`` endpoint and re-publishes.

This is how a processing group runs in another process or on another machine: the upstream
radloggerd serves e.g. ``wsa1.iq`` with a ``longpoll`` endpoint; this device pulls it (cursor
kept across reconnects, so an outage of the link loses nothing the upstream still buffers)
and pushes it into the local pipeline, where ``fft -> calibrate -> store`` subscribe as usual.

Local topics are ``<device name>.<remote topic>`` (``keep_topics = yes`` keeps the remote
topic unchanged).  Items the upstream could no longer deliver (its ring overflowed while we were
away) are counted in :attr:`RemoteDevice.remote_lost` and logged, never hidden.
"""

from __future__ import annotations

import logging
from typing import Any

from radlogger.client import LongPollClient, Poll
from radlogger.device import Device
from radlogger.options import Option
from radlogger.relay import adopt
from radlogger.web import resolve_token

log = logging.getLogger(__name__)


class RemoteDevice(Device):
    kind = "remote"
    summary = "long-polls another radloggerd's longpoll endpoint and re-publishes its topics"
    options = (
        Option("url", str, None, "base URL of the upstream longpoll endpoint, e.g. "
               "http://10.0.0.2:8470", required=True),
        Option("token", str, None, "bearer token of the upstream endpoint"),
        Option("token_file", str, None, "file holding the bearer token (overrides token)"),
        Option("topics", list, [], "only these upstream topics (patterns); empty = all it serves"),
        Option("batch", int, 500, "most measurements per request", min=1),
        Option("wait", float, 10.0, "how long one request waits for data, seconds", min=0.0),
        Option("start", str, "oldest", "where a fresh device starts in the upstream buffer",
               choices=("oldest", "latest")),
        Option("keep_topics", bool, False, "publish under the upstream topic names instead of "
               "<device>.<topic>"),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        self.client = LongPollClient(s.url, resolve_token(s.token, s.token_file,
                                                           f"device {name}"),
                                     s.topics, s.batch, s.wait, s.start)
        self.prefix = "" if s.keep_topics else name
        self._pending: Poll | None = None

    @property
    def remote_lost(self) -> int:
        """Measurements the upstream reported lost (its buffer overflowed before we fetched)."""
        return self.client.lost

    @property
    def graph_source(self) -> str:
        return self.settings.url

    def topics(self) -> list[str]:
        """None declared: it relays whatever the upstream serves (under ``<name>.``)."""
        return []

    def open(self) -> None:
        self.client.reset_interrupt()
        self._pending = self.client.poll(wait=0)  # proves the link and the token now

    def poll(self) -> None:
        result, self._pending = self._pending, None
        if result is None:
            result = self.client.poll()
        if result.gap or result.reset:
            log.warning("device %s: upstream %s %s", self.name, self.settings.url,
                        f"lost {result.gap} measurements before we could fetch them"
                        if result.gap else "restarted; resuming from its oldest buffered data")
        push, name, prefix = self.outlet.push, self.name, self.prefix
        for m in result.items:
            push(adopt(m, name, prefix))

    def interrupt(self) -> None:
        self.client.interrupt()

    def close(self) -> None:
        self.client.close()

    def counters(self) -> dict[str, int | float]:
        c = self.client
        return {"cursor": -1 if c.cursor is None else c.cursor,  # -1: nothing fetched yet
                "received": c.received, "requests": c.requests,
                "gaps": c.gaps, "remote_lost": self.remote_lost, "resets": c.resets,
                "bad_answers": c.bad_answers}
