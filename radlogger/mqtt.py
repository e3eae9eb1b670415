"""What the MQTT endpoint and the MQTT device share: options, the paho client, topic mapping,
and :class:`MQTTLink`, a connection kept up by our own network thread with :class:`Backoff`.

Why our own network thread instead of paho's ``loop_start()``: paho's reconnect loop has its
own fixed doubling delay without jitter and sleeps in 1 s steps; ours reconnects with the
project's :class:`~radlogger.backoff.Backoff` and stops within 50 ms.  The thread drives paho
through its external-event-loop interface (``socket()``, ``loop_read/write/misc``) and does
its ``select`` without holding a lock; every paho call, ours and the publisher's, runs under
one lock.  A ``publish`` thus writes to the socket directly from the publishing thread (no
hand-off, no wake-up per message: 3-4x the throughput of paho's threaded mode here), and can
never slip between a reconnect's new socket and its CONNECT packet.

Topic mapping: radloggerd ``wsa1.spectrum`` <-> MQTT ``<prefix>/wsa1/spectrum``.

paho-mqtt is optional (the ``mqtt`` extra) and imported where a client is built or driven, so
the options and the topic mapping load without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlogger.errors import ConfigurationError

from .backoff import Backoff
from .options import Option
from .topics import safe_segment

if TYPE_CHECKING:
    import paho.mqtt.client as paho

__all__ = ["CONNECTION_OPTIONS", "MQTTConfigError", "close_client", "make_client", "to_mqtt_topic",
           "from_mqtt_topic", "MQTTLink", "default_client_id", "connack_error", "service"]

log = logging.getLogger(__name__)

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux

CONNECTION_OPTIONS = (
    Option("host", str, "127.0.0.1", "MQTT broker host"),
    Option("port", int, 1883, "MQTT broker port (8883 is usual with tls)", min=1, max=65535),
    Option("client_id", str, None, "MQTT client id (default: radloggerd-<host>-<name>...)"),
    Option("keepalive", int, 30, "seconds between keep-alive pings", min=5),
    Option("username", str, None, "user name for the broker"),
    Option("password", str, None, "password for the broker (prefer password_file)"),
    Option("password_file", str, None, "file holding the broker password"),
    Option("tls", bool, False, "connect with TLS"),
    Option("ca_file", str, None, "CA certificate(s) that signed the broker's certificate "
           "(default: the system's)"),
    Option("cert_file", str, None, "client certificate for TLS client authentication"),
    Option("key_file", str, None, "private key of cert_file"),
    Option("tls_insecure", bool, False, "do not check the broker's host name against its "
           "certificate (testing only)"),
    Option("topic_prefix", str, "radlogger", "MQTT topic prefix: wsa1.iq <-> <prefix>/wsa1/iq"),
    Option("qos", int, 1, "MQTT QoS: 0 = at most once, 1 = at least once (acknowledged)",
           choices=(0, 1)),
)

class MQTTConfigError(ConfigurationError, ValueError):
    """A user-fixable MQTT setting problem (missing certificate file, ...)."""


def default_client_id(name: str, unique: bool) -> str:
    """Stable per host and plugin name (persistent sessions need that), or unique per process."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"radloggerd-{host}-{name}" + (f"-{os.getpid()}" if unique else "")


def _read_password(settings: Mapping[str, Any], what: str) -> str | None:
    path = settings.get("password_file")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise MQTTConfigError(f"{what}: password_file {path}: {exc.strerror}: create it or "
                                  "fix the path") from None
    return settings.get("password")


def make_client(settings: Mapping[str, Any], client_id: str, clean_session: bool,
                what: str) -> paho.Client:
    """A paho client configured from the connection options (no network activity yet)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean_session, protocol=paho.MQTTv311,
                         reconnect_on_failure=False)
    if settings.get("username"):
        client.username_pw_set(settings["username"], _read_password(settings, what))
    if settings.get("tls"):
        for key in ("ca_file", "cert_file", "key_file"):
            path = settings.get(key)
            if path and not Path(path).is_file():
                raise MQTTConfigError(f"{what}: {key} {path} does not exist: fix the path")
        if settings.get("key_file") and not settings.get("cert_file"):
            raise MQTTConfigError(f"{what}: key_file needs cert_file")
        try:
            client.tls_set(ca_certs=settings.get("ca_file"), certfile=settings.get("cert_file"),
                           keyfile=settings.get("key_file"))
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise MQTTConfigError(f"{what}: TLS setup failed: {exc}: check ca_file, cert_file "
                                  "and key_file") from None
        client.tls_insecure_set(bool(settings.get("tls_insecure")))
    return client


def to_mqtt_topic(prefix: str, topic: str) -> str:
    """``wsa1.spectrum`` -> ``<prefix>/wsa1/spectrum``."""
    tail = topic.replace(".", "/")
    prefix = prefix.strip("/")
    return f"{prefix}/{tail}" if prefix else tail


def from_mqtt_topic(prefix: str, mqtt_topic: str) -> str:
    """Inverse of :func:`to_mqtt_topic`; foreign topics become valid radloggerd topics."""
    prefix = prefix.strip("/")
    if prefix and (mqtt_topic == prefix or mqtt_topic.startswith(prefix + "/")):
        mqtt_topic = mqtt_topic[len(prefix):]
    segments = [safe_segment(s) for s in mqtt_topic.split("/") if s]
    return ".".join(segments) or "message"


def connack_error(reason: Any) -> str:
    """A human explanation of a refused connection, with the fix."""
    text = str(reason)
    low = text.lower()
    if "not authori" in low or "bad user" in low or "password" in low:
        return f"broker refused the connection: {text} (check username/password)"
    if "identifier" in low:
        return f"broker refused the connection: {text} (set another client_id)"
    return f"broker refused the connection: {text}"


def service(client: paho.Client, timeout: float, activity: Callable[[], int],
            lock: Any = contextlib.nullcontext()) -> int:
    """One round of paho's external event loop: wait up to ``timeout`` for the socket, read
    everything that arrived, write what is queued, do keep-alive; returns paho's rc.

    ``activity()`` must change whenever a packet was handled (a callback counter): paho's
    ``loop_read`` handles one packet per call and cannot say whether it read anything.  The
    ``select`` runs outside ``lock``, the paho calls inside.  Not calling ``loop()`` keeps paho
    from creating its wake-up socketpair (one extra syscall per packet sent).
    """
    from paho.mqtt.enums import MQTTErrorCode

    ok = MQTTErrorCode.MQTT_ERR_SUCCESS
    sock = client.socket()
    if sock is None:
        return MQTTErrorCode.MQTT_ERR_NO_CONN
    pending = getattr(sock, "pending", None)  # TLS may hold decrypted bytes already
    if pending is not None and pending():
        readable = True
    else:
        try:
            wlist = [sock] if client.want_write() else []
            r, _, _ = select.select([sock], wlist, [], timeout)
        except ValueError as exc:  # closed socket
            raise OSError(str(exc)) from None
        readable = bool(r)
    read_any = readable
    with lock:
        rc = ok
        while readable and rc == ok:
            seen = activity()
            rc = client.loop_read()
            readable = activity() != seen
        if read_any and _QUICKACK is not None:
            # Acknowledge at once: a broker with Nagle on (mosquitto's default) holds its last
            # PUBACK of a round until our delayed ACK (40 ms): 20 batched rounds/s at most.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[attr-defined]
        if rc == ok and client.want_write():
            rc = client.loop_write()
        if rc == ok:
            rc = client.loop_misc()  # keep-alive pings; notices a silent dead broker
    return int(rc)


class MQTTLink:
    """Keeps one paho client connected: connect, loop, and on loss reconnect with backoff.

    ``on_connected()`` and ``on_lost()`` run on the link's thread after each transition.
    :meth:`publish` is thread-safe and returns ``None`` while not connected.
    """

    def __init__(self, client: paho.Client, host: str, port: int, keepalive: int,
                 backoff: Backoff, name: str,
                 on_connected: Callable[[], None] | None = None,
                 on_lost: Callable[[], None] | None = None,
                 on_publish: Callable[[int], None] | None = None,
                 connect_timeout: float = 5.0, status_topic: str | None = None) -> None:
        self.client = client
        self.host, self.port, self.keepalive = host, port, keepalive
        self.backoff = backoff
        self.name = name
        self.connect_timeout = connect_timeout
        self._on_connected = on_connected or (lambda: None)
        self._on_lost = on_lost or (lambda: None)
        self._on_publish = on_publish or (lambda mid: None)
        self.connected = False
        self.state = "stopped"
        self.connects = 0
        self.disconnects = 0
        self.connect_failures = 0
        self.last_error = ""
        self.inbound = 0  # packets that made a callback fire (drives read draining)
        self._refused = ""
        # Birth and last will: retained "online" at each connect, "offline" at a clean stop,
        # and the broker publishes the will "offline" when we vanish without a DISCONNECT.
        self.status_topic = status_topic
        self._control_mids: set[int] = set()  # status/metadata publishes: not measurements
        self._io = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        client.on_connect = self._paho_connect
        client.on_publish = self._paho_publish
        client.connect_timeout = connect_timeout
        if status_topic:
            client.will_set(status_topic, b"offline", qos=1, retain=True)
        client.connect_async(host, port, keepalive)

    # ---------------------------------------------------------------- public
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"mqtt:{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Any:
        with self._io:
            if not self.connected:
                return None
            return self.client.publish(topic, payload, qos, retain)

    def publish_control(self, topic: str, payload: bytes) -> bool:
        """A retained QoS 1 message that is not a measurement (status, metadata); False while
        not connected."""
        with self._io:
            return self.connected and self._control(topic, payload)

    def _control(self, topic: str, payload: bytes) -> bool:
        info = self.client.publish(topic, payload, 1, True)
        self._control_mids.add(info.mid)
        return info.rc == 0

    # ---------------------------------------------------------------- paho callbacks
    def _paho_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                      properties: Any) -> None:
        self.inbound += 1
        if reason.is_failure:
            self._refused = connack_error(reason)
            return
        self._refused = ""
        self.connected = True
        self.connects += 1
        self.backoff.reset()
        self.state = "connected"
        if self.connects > 1 or self.disconnects:
            log.info("mqtt %s: reconnected to %s:%d", self.name, self.host, self.port)
        if self.status_topic:
            self._control(self.status_topic, b"online")
        self._on_connected()

    def _paho_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any,
                      properties: Any) -> None:
        self.inbound += 1
        if mid in self._control_mids:
            self._control_mids.discard(mid)
            return
        self._on_publish(mid)

    # ---------------------------------------------------------------- network thread
    def _run(self) -> None:
        client = self.client
        while not self._stop.is_set():
            self.state = "connecting"
            try:
                with self._io:
                    client.reconnect()
                    _no_delay(client)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                self._failed(f"cannot connect to {self.host}:{self.port}: {exc}")
                if self._wait_backoff():
                    break
                continue
            reason = self._serve()
            was_connected = self.connected
            with self._io:
                self.connected = False
            if was_connected:
                self.disconnects += 1
                self._on_lost()
            if self._stop.is_set():
                break
            if was_connected:
                self.last_error = f"connection to {self.host}:{self.port} lost: {reason}"
                log.warning("mqtt %s: %s", self.name, self.last_error)
            else:
                self._failed(self._refused or reason)
            if self._wait_backoff():
                break
        self._shutdown()

    def _serve(self) -> str:
        """Loop until the connection ends; returns why."""
        import paho.mqtt.client as paho
        from paho.mqtt.enums import MQTTErrorCode

        client = self.client
        io = self._io
        started = time.monotonic()
        ok = MQTTErrorCode.MQTT_ERR_SUCCESS
        while not self._stop.is_set():
            try:
                rc = service(client, 0.05, lambda: self.inbound, io)
            except OSError as exc:
                return f"socket error: {exc}"
            if rc != ok:
                return paho.error_string(rc)
            if self._refused:
                return self._refused
            if not self.connected and time.monotonic() - started > self.connect_timeout:
                return f"no CONNACK within {self.connect_timeout:g} s (is it an MQTT broker?)"
        return "stopping"

    def _failed(self, message: str) -> None:
        self.connect_failures += 1
        first = message != self.last_error
        self.last_error = message
        (log.warning if first else log.debug)("mqtt %s: %s", self.name, message)

    def _wait_backoff(self) -> bool:
        """Wait before the next attempt; True when stopping."""
        self.state = "backoff"
        return self._stop.wait(self.backoff.next_delay())

    def _shutdown(self) -> None:
        if self.connected and self.status_topic:
            with contextlib.suppress(OSError, ValueError):
                self._control(self.status_topic, b"offline")
        close_client(self.client, self.connected)
        self.connected = False
        self.state = "stopped"


def _no_delay(client: Any) -> None:
    """Send each packet at once: with Nagle's algorithm the last PUBLISH of a round waits for
    the broker's delayed ACK (40 ms on Linux), which capped batched rounds at ~20/s."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def close_client(client: Any, connected: bool) -> None:
    """Say goodbye to the broker if connected, then close the socket whatever state paho is in
    (paho leaves it open after some errors, and we drive its loop ourselves)."""
    try:
        if connected:
            client.disconnect()
            client.loop_write()
    except (OSError, ValueError):
        pass
    sock = client.socket()
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
