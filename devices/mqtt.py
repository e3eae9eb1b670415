"""MQTT device: subscribes to topics published by other radloggerd instances (or any MQTT
client) and re-publishes them in the local pipeline.

Payloads in every form the ``mqtt`` endpoint sends (:mod:`radlogger.payload`: binary, JSON,
batches of either) keep their value, unit, timestamps and metadata; the endpoint's retained
``<prefix>/status`` and ``<prefix>/_meta/...`` messages are counted (``status_messages``,
``meta_messages``), not relayed; with ``payload = value`` any MQTT message becomes a measurement
whose value is the payload parsed as JSON (a number, text, a list) or else its text or bytes,
on a topic derived from the MQTT topic.

Reliability across broker restarts: with ``qos = 1`` and ``clean_session = no`` (defaults) the
broker keeps this device's subscription and queues messages while it is away (across a broker
restart too, when the broker has ``persistence true``).  QoS 1 may deliver a message twice
after a reconnect; ``dedupe`` drops repeats by (origin, sequence number, timestamp) and counts
them.  The network loop runs on the device thread; a lost broker is the base class's business:
counted, closed, reconnected with backoff.

Beware of loops: a host that publishes ``radlogger/#`` and subscribes to it too receives its own
measurements; give each host its own ``topic_prefix``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as paho

from radlogger.device import Device
from radlogger.measurement import Measurement, now_ns
from radlogger.mqtt import (
    CONNECTION_OPTIONS,
    close_client,
    connack_error,
    default_client_id,
    from_mqtt_topic,
    make_client,
    service,
)
from radlogger.options import Option, by_reason
from radlogger.payload import decode_payload
from radlogger.relay import Deduplicator, adopt
from radlogger.wire import WireError

log = logging.getLogger(__name__)

_OK = paho.MQTTErrorCode.MQTT_ERR_SUCCESS


class MQTTDevice(Device):
    kind = "mqtt"
    summary = "subscribes to MQTT topics (other radloggerd instances) and re-publishes them"
    options = CONNECTION_OPTIONS + (
        Option("topics", list, [], "MQTT topic filters to subscribe to (default "
               "<topic_prefix>/#)"),
        Option("clean_session", bool, False, "forget the subscription when disconnected (no: "
               "the broker queues messages for us while we are away)"),
        Option("payload", str, "wire", "wire = radloggerd measurements; value = any payload "
               "(JSON, text or bytes) as the value", choices=("wire", "value")),
        Option("keep_topics", bool, False, "publish wire payloads under their original topic "
               "instead of <device>.<topic>"),
        Option("dedupe", bool, True, "drop measurements delivered twice (QoS 1 redelivery)"),
        Option("dedupe_window", int, 65536, "measurements remembered for dedupe", min=1),
    )

    def __init__(self, name: str, settings: Any = None, **kw: Any) -> None:
        super().__init__(name, settings, **kw)
        s = self.settings
        self.filters = s.topics or [f"{s.topic_prefix.strip('/')}/#"]
        self.prefix = "" if s.keep_topics else name
        self.client_id = s.client_id or default_client_id(name, unique=s.clean_session)
        self.dedupe = Deduplicator(s.dedupe_window) if s.dedupe else None
        self.received = 0
        self.control = Counter[str]()  # status and metadata messages seen
        self._packets = 0  # callbacks seen (drives read draining)
        self.bad_messages: Counter[str] = Counter()
        self.client: paho.Client | None = None
        self._connected = False
        self._refused = ""
        self._connect_deadline = 0.0
        self._last_bad_log = 0.0

    @property
    def graph_source(self) -> str:
        s = self.settings
        return f"mqtt://{s.host}:{s.port}/" + ",".join(self.filters)

    def topics(self) -> list[str]:
        """None declared: it relays whatever the broker delivers (under ``<name>.``)."""
        return []

    # ---------------------------------------------------------------- lifecycle
    def open(self) -> None:
        s = self.settings
        client = make_client(s, self.client_id, s.clean_session, f"device {self.name}")
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._connected = False
        self._refused = ""
        self.client = client
        client.connect_timeout = 5.0
        client.connect(s.host, s.port, s.keepalive)  # OSError -> counted, retried with backoff
        self._connect_deadline = time.monotonic() + 10.0

    def poll(self) -> None:
        client = self.client
        if client is None:
            raise ConnectionError("not connected")
        rc = service(client, 0.1, lambda: self._packets)
        if rc != _OK:
            raise ConnectionError(f"broker {self.settings.host}:{self.settings.port}: "
                                  f"{paho.error_string(rc)}")
        if self._refused:
            raise ConnectionRefusedError(self._refused)
        if not self._connected and time.monotonic() > self._connect_deadline:
            raise TimeoutError(f"{self.settings.host}:{self.settings.port} sent no CONNACK "
                               "(is it an MQTT broker?)")

    def close(self) -> None:
        client, self.client = self.client, None
        connected, self._connected = self._connected, False
        if client is not None:
            close_client(client, connected)

    # ---------------------------------------------------------------- paho callbacks
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self._packets += 1
        if reason.is_failure:
            self._refused = connack_error(reason)
            return
        self._connected = True
        qos = self.settings.qos
        client.subscribe([(f, qos) for f in self.filters])

    def _on_subscribe(self, *args: Any) -> None:
        self._packets += 1

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.received += 1
        self._packets += 1
        try:
            ms = self._measurements(msg)
        except (WireError, ValueError) as exc:
            self._bad("undecodable" if isinstance(exc, WireError) else "bad_topic", msg, exc)
            return
        except Exception as exc:  # noqa: BLE001 - a poison message is counted and acknowledged
            # (raising here would drop the connection, and QoS 1 would redeliver it forever)
            self._bad("decoder_error", msg, exc)
            return
        if len(ms) == 1:
            self.outlet.push(ms[0])
        elif ms:
            self.outlet.push_many(ms)

    def _measurements(self, msg: paho.MQTTMessage) -> list[Measurement]:
        if self.settings.payload == "value":
            topic = f"{self.name}.{from_mqtt_topic(self.settings.topic_prefix, msg.topic)}"
            return [Measurement(self.name, topic, _plain_value(bytes(msg.payload)), now_ns())]
        kind = _control_kind(msg)
        if kind:
            self.control[kind] += 1
            return []
        dedupe, name, prefix = self.dedupe, self.name, self.prefix
        return [adopt(m, name, prefix) for m in decode_payload(msg.payload)
                if dedupe is None or not dedupe.seen(m)]

    def _bad(self, reason: str, msg: paho.MQTTMessage, exc: Exception) -> None:
        self.bad_messages[reason] += 1
        self.count_errors()
        now = time.monotonic()
        if now - self._last_bad_log >= 1.0:
            self._last_bad_log = now
            log.warning("device %s: dropped a message on %s: %s (%d bad so far)", self.name,
                        msg.topic, exc, sum(self.bad_messages.values()))

    def counters(self) -> dict[str, int | float]:
        return {"connected": int(self._connected), "received": self.received,
                "status_messages": self.control["status"],
                "meta_messages": self.control["meta"],
                "duplicates": self.dedupe.duplicates if self.dedupe else 0,
                **by_reason("bad_messages", self.bad_messages)}


def _control_kind(msg: paho.MQTTMessage) -> str:
    """``status`` / ``meta`` for the endpoint's retained side messages, else ``""``."""
    topic = msg.topic
    if "/_meta/" in topic or topic.startswith("_meta/"):
        return "meta"
    if (topic == "status" or topic.endswith("/status")) and \
            bytes(msg.payload) in (b"online", b"offline"):
        return "status"
    return ""


def _plain_value(payload: bytes) -> Any:
    """A foreign payload as a value: JSON if it parses, else text, else bytes."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(payload)
    try:
        return json.loads(text)
    except ValueError:
        return text
