"""MQTT endpoint: publishes measurements to an MQTT broker (Mosquitto), for other hosts.

Topic ``wsa1.spectrum`` goes to ``<topic_prefix>/wsa1/spectrum``; the payload is one of the
forms of :mod:`radlogger.payload`: ``payload = binary`` (JSON for scalars, the compact binary
form for arrays), ``payload = json`` (everything JSON, arrays as lists, an ISO time field), and
with ``batch = N`` up to N measurements of one topic per MQTT message (a JSON list, or binary
frames).  QoS 0 or 1, optional retain, TLS and username/password.  ``<prefix>/status`` is a
retained ``online``/``offline`` (the last will, set at connect); ``metadata = yes`` keeps a
retained ``{"topic","unit","type","dtype","shape"}`` on ``<prefix>/_meta/<topic path>``.

Why batches: a broker and a client pay about the same per MQTT message whatever its size
(paho 26,000 messages/s against 1.23 M measurements/s at 100 per message here).  ``batch_ms``
trades latency for size: after a round of fewer than ``batch`` measurements the endpoint waits
until ``batch_ms`` after the round's start, so the next round finds more in its inbox.

Delivery and accounting.  A measurement counts as handled only once the broker acknowledged
it (QoS 1: PUBACK) or it was written whole to the socket (QoS 0); at most ``window`` are in
flight.  While the broker is unreachable the endpoint waits: its bounded inbox buffers, and
what the inbox cannot hold is dropped and counted by the pipeline (``inbox_full``).  The
connection is re-established with backoff and publishing resumes; QoS 1 messages that were in
flight are resent by paho (at least once: the MQTT device drops the duplicates), QoS 0 messages
that never reached the socket are resent by us (:attr:`MQTTEndpoint.retries` counts both).
At stop, what still cannot be sent by the deadline is dropped with reason ``mqtt_unavailable``:
``received == handled + dropped`` holds exactly.

What PUBACK means: the broker took the message, not that it is stored.  A broker without
``persistence true`` loses what it acknowledged but had not yet delivered when it restarts
(tests/test_mqtt_durability.py shows both cases): durability is the broker's persistence plus
a persistent-session subscriber (``clean_session = no``, QoS 1).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from radlogger.backoff import Backoff
from radlogger.endpoint import NEVER_INLINE, Endpoint
from radlogger.measurement import Measurement
from radlogger.mqtt import (
    CONNECTION_OPTIONS,
    MQTTLink,
    default_client_id,
    make_client,
    to_mqtt_topic,
)
from radlogger.options import Option
from radlogger.payload import (
    FORMATS,
    batch_item,
    describe,
    encode_columns,
    encode_one,
    join_batch,
)

_OK = 0  # paho MQTT_ERR_SUCCESS


class MQTTEndpoint(Endpoint):
    kind = "mqtt"
    summary = "publishes measurements to an MQTT broker (JSON scalars, binary arrays)"
    options = CONNECTION_OPTIONS + (
        NEVER_INLINE,  # it waits on a network: never on the broker's thread
        Option("retain", bool, False, "ask the broker to keep the last message per topic"),
        Option("window", int, 100, "most messages in flight (sent, not yet acknowledged)",
               min=1, max=65000),
        Option("backoff_initial", float, 0.5, "first reconnect delay in seconds", min=0),
        Option("backoff_max", float, 30.0, "longest reconnect delay in seconds", min=0),
        Option("payload", str, "binary", "binary = JSON scalars and compact binary arrays; "
               "json = everything JSON (arrays as lists, ISO time): for Node-RED, Telegraf, "
               "Grafana", choices=FORMATS),
        Option("batch", int, 1, "most measurements of one topic per MQTT message (1: one "
               "each; more: a JSON list or binary frames, read by the mqtt device)", min=1,
               max=100000),
        Option("batch_ms", float, 0.0, "with batch > 1: wait until this long after a round "
               "that did not fill a message, so the next one gathers more", min=0, max=10000),
        Option("status", bool, True, "retained online/offline on <prefix>/status (last will)"),
        Option("metadata", bool, False, "retained unit/type/dtype/shape per topic on "
               "<prefix>/_meta/<topic path>"),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        self.link: MQTTLink | None = None
        self._cv = threading.Condition(threading.Lock())
        # mid -> (topic, payload, measurements in it), until confirmed
        self._outstanding: dict[int, tuple[str, bytes, int]] = {}
        self._early: set[int] = set()  # confirmations that beat the publish() call's return
        self._retry: list[tuple[str, bytes, int]] = []  # QoS 0 messages the connection lost
        self._meta_sent: dict[str, tuple[Any, ...]] = {}  # topic -> metadata published
        self._give_up_at: float | None = None
        self._stalled = False  # waiting for a broker that is not there
        self.confirmed = 0  # acknowledged by the broker (QoS 1) / written (QoS 0)
        self.retries = 0  # messages sent again after a connection loss
        self.unsent = 0  # given up at stop (also in stats as mqtt_unavailable)
        self.bytes_sent = 0
        self.messages = 0  # MQTT messages published (a batch is one)

    @property
    def graph_target(self) -> str:
        s = self.settings
        return f"mqtt://{s.host}:{s.port}/{s.topic_prefix.strip('/')}/#"

    # ---------------------------------------------------------------- lifecycle
    def open(self) -> None:
        s = self.settings
        client = make_client(s, s.client_id or default_client_id(self.name, unique=True),
                             clean_session=True, what=f"endpoint {self.name}")
        client.max_inflight_messages_set(s.window)
        self._give_up_at = None
        self.link = MQTTLink(client, s.host, s.port, s.keepalive,
                             Backoff(s.backoff_initial, s.backoff_max), self.name,
                             on_connected=self._wake, on_lost=self._connection_lost,
                             on_publish=self._confirm,
                             status_topic=to_mqtt_topic(s.topic_prefix, "status")
                             if s.status else None)
        self.link.start()

    def deadline(self, at: float | None) -> None:
        """Stop waiting for an absent broker a little before ``at``, leaving time to count
        what could not be sent (else the base class would count the whole batch in flight as
        a shutdown drop, and the pipeline's flush would wait for it in vain).  ``None``: a
        reload goes on, buffer through outages again."""
        if at is None:
            self._give_up_at = None
            return
        self._give_up_at = at - min(0.5, max(0.0, at - time.monotonic()) / 4)
        self._wake()

    def stalled(self) -> bool:
        """True while only waiting for an unreachable broker.

        The pipeline's stop waits for every endpoint to go idle before it stops them; waiting
        for a broker that is down cannot drain anything, so we let the stop go on: the base's
        stop then counts what could not be sent, within the deadline.
        """
        return self._stalled

    def close(self) -> None:
        if self.link is not None:
            self.link.stop()  # kept: its counters stay readable after stop
        with self._cv:
            self._outstanding.clear()
            self._retry.clear()
            self._early.clear()

    # ---------------------------------------------------------------- network thread side
    def _wake(self) -> None:
        self._meta_sent = {}  # a new connection: publish the metadata again
        with self._cv:
            self._cv.notify_all()

    def _confirm(self, mid: int) -> None:
        with self._cv:
            done = self._outstanding.pop(mid, None)
            if done is not None:
                self.confirmed += done[2]
                self._cv.notify_all()
            else:
                self._early.add(mid)

    def _connection_lost(self) -> None:
        with self._cv:
            if self.settings.qos == 0:
                # Never written whole: the broker has not seen them, so sending again is safe.
                self._retry.extend(self._outstanding.values())
                self._outstanding.clear()
            else:
                # paho resends them on reconnect
                self.retries += sum(n for _, _, n in self._outstanding.values())
            self._cv.notify_all()

    # ---------------------------------------------------------------- endpoint thread side
    def _can_send(self) -> bool:
        link = self.link
        return link is not None and link.connected and \
            len(self._outstanding) < self.settings.window

    def _wait(self, ready: Any) -> bool:
        """Under the condition: wait until ``ready()``; False once it is time to give up."""
        try:
            while not ready():
                link = self.link
                self._stalled = link is None or not link.connected
                give_up = self._give_up_at
                timeout = 0.5
                if give_up is not None:
                    timeout = give_up - time.monotonic()
                    if timeout <= 0:
                        return False
                self._cv.wait(min(timeout, 0.5))
            return True
        finally:
            self._stalled = False

    def _send(self, topic: str, payload: bytes, count: int = 1) -> bool:
        s = self.settings
        while True:
            with self._cv:
                if not self._wait(self._can_send):
                    return False
            link = self.link
            info = link.publish(topic, payload, s.qos, s.retain) if link is not None else None
            if info is None:
                continue  # the connection dropped meanwhile: wait for the next one
            if info.rc == _OK or s.qos == 1:
                # QoS 1 that found the connection gone (NO_CONN, CONN_LOST): paho keeps the
                # message and sends it again after reconnecting, like the ones in flight.
                with self._cv:
                    if info.mid in self._early:
                        self._early.discard(info.mid)
                        self.confirmed += count
                    else:
                        self._outstanding[info.mid] = (topic, payload, count)
                self.bytes_sent += len(payload)
                self.messages += 1
                return True
            # QoS 0 not written whole (the connection broke under it): send it again once the
            # link thread has noticed and reconnected.
            self.retries += count
            with self._cv:
                self._cv.wait(0.01)

    def _settle(self) -> bool:
        """Wait until everything sent is confirmed, resending what a lost connection ate."""
        while True:
            with self._cv:
                if not self._wait(lambda: not self._outstanding or self._retry):
                    return False
                if not self._retry:
                    return True
                retry, self._retry = self._retry, []
            self.retries += sum(n for _, _, n in retry)
            for i, (topic, payload, n) in enumerate(retry):
                if not self._send(topic, payload, n):
                    with self._cv:
                        self._retry[:0] = retry[i + 1:]
                    return False

    def _publish_metadata(self, batch: list[Measurement]) -> None:
        link, prefix = self.link, self.settings.topic_prefix
        for m in batch:
            d = describe(m)
            key = (d["unit"], d["type"], d.get("dtype"), tuple(d.get("shape", ())))
            if link is not None and self._meta_sent.get(m.topic) != key and \
                    link.publish_control(to_mqtt_topic(prefix, "_meta." + m.topic),
                                         json.dumps(d).encode()):
                self._meta_sent[m.topic] = key

    def _messages(self, batch: list[Measurement]) -> tuple[list[tuple[str, bytes, int]], int]:
        """(MQTT topic, payload, measurements in it) for the batch, and how many failed."""
        s = self.settings
        prefix, fmt, size = s.topic_prefix, s.payload, s.batch
        out: list[tuple[str, bytes, int]] = []
        failed = 0
        if size == 1:
            for m in batch:
                try:
                    payload = encode_one(m, fmt)
                except Exception as exc:  # noqa: BLE001 - one bad value must not stop the rest
                    self.item_failed(m, exc)
                    failed += 1
                    continue
                out.append((to_mqtt_topic(prefix, m.topic), payload, 1))
            return out, failed
        groups: dict[str, list[Measurement]] = {}
        chunks: list[list[Measurement]] = []
        for m in batch:
            group = groups.setdefault(m.topic, [])
            group.append(m)
            if len(group) == size:
                chunks.append(group)
                groups[m.topic] = []
        chunks.extend(g for g in groups.values() if g)
        for chunk in chunks:
            payload = encode_columns(chunk) if fmt == "binary" else None
            n = len(chunk)
            if payload is None:
                items = []
                for m in chunk:
                    try:
                        items.append(batch_item(m, fmt))
                    except Exception as exc:  # noqa: BLE001 - one bad value fails alone
                        self.item_failed(m, exc)
                        failed += 1
                if not items:
                    continue
                payload, n = join_batch(items, fmt), len(items)
            out.append((to_mqtt_topic(prefix, chunk[0].topic), payload, n))
        return out, failed

    def handle_batch(self, batch: list[Measurement]) -> None:
        started = time.monotonic()
        confirmed_before = self.confirmed
        messages, failed = self._messages(batch)
        for topic, payload, n in messages:
            if not self._send(topic, payload, n):
                break
        else:
            if self.settings.metadata:  # after the data: the link is up by now
                self._publish_metadata(batch)
            if self._settle():
                self._linger(started, len(batch))
                return
        lost = len(batch) - failed - (self.confirmed - confirmed_before)
        with self._cv:
            self._outstanding.clear()
            self._retry.clear()
        if lost > 0:
            self.unsent += lost
            self.count_dropped("mqtt_unavailable", lost)

    def _linger(self, started: float, n: int) -> None:
        """Batch mode: let the inbox gather the next round's measurements (``batch_ms``)."""
        s = self.settings
        if s.batch == 1 or s.batch_ms <= 0 or n >= s.batch:
            return
        until = started + s.batch_ms / 1000
        with self._cv:
            while self._give_up_at is None and (left := until - time.monotonic()) > 0:
                self._cv.wait(left)

    def counters(self) -> dict[str, int | float]:
        link = self.link
        return {
            "connected": int(bool(link and link.connected)),
            "confirmed": self.confirmed, "retries": self.retries, "unsent": self.unsent,
            "messages": self.messages,
            "in_flight": len(self._outstanding), "bytes_sent": self.bytes_sent,
            "connects": link.connects if link else 0,
            "disconnects": link.disconnects if link else 0,
            "connect_failures": link.connect_failures if link else 0,
        }
