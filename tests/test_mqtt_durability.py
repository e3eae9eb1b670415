"""What QoS 1 can and cannot promise: PUBACK means the broker took a message, not that it is
stored.  Messages acknowledged to the endpoint but not yet delivered to a persistent-session
subscriber (QoS 1, clean_session = False, offline at the time) are lost across a broker restart
unless the broker has ``persistence true``; radloggerd cannot see that loss (every counter says
"handled"), so the README tells users to configure the broker for durability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from mosquitto import Mosquitto

from conftest import wait_for
from radlogger.endpoints.mqtt import MQTTEndpoint
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline

N = 200
FAST = {"backoff_initial": 0.02, "backoff_max": 0.1}


class Subscriber:
    """A persistent-session QoS 1 subscriber (clean_session = False, fixed client id)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.payloads: list[bytes] = []
        self.subscribed = False
        self.client: paho.Client | None = None

    def connect(self) -> None:
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="durable-sub",
                        clean_session=False, protocol=paho.MQTTv311)
        c.on_message = lambda _c, _u, msg: self.payloads.append(bytes(msg.payload))

        def on_connect(client: paho.Client, *_: Any) -> None:
            client.subscribe("radlogger/#", qos=1)

        c.on_connect = on_connect
        c.on_subscribe = lambda *_: setattr(self, "subscribed", True)
        self.subscribed = False
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        self.client = c
        wait_for(lambda: self.subscribed, message="subscribed")

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None


@pytest.mark.parametrize("persistence", [False, True], ids=["no-persistence", "persistence"])
def test_acknowledged_messages_survive_a_broker_restart_only_with_persistence(
        tmp_path: Path, persistence: bool) -> None:
    broker = Mosquitto(tmp_path / "b", persistence=persistence)
    sub = Subscriber(broker.port)
    p = Pipeline()
    try:
        broker.start()
        sub.connect()  # the broker now keeps a session for durable-sub ...
        sub.disconnect()  # ... and queues QoS 1 messages for it while it is away
        ep = p.add_endpoint(MQTTEndpoint("mq", port=broker.port, qos=1, status=False, **FAST),
                            subscribe=["src"])
        p.start()
        out = p.outlet("src")
        for i in range(N):
            out.push(Measurement("src", "src.v", i))
        wait_for(lambda: ep.confirmed == N, message="every message acknowledged (PUBACK)")
        # handled is counted when the batch returns, just after its last PUBACK
        wait_for(lambda: ep.stats.handled == N, message="the batch accounted")
        assert ep.stats.handled == N and ep.stats.dropped == 0
        assert p.stop(5)
        broker.restart()  # SIGTERM: with persistence the broker saves its queues first
        sub.connect()
        # A marker published after the reconnect arrives after anything the broker kept.
        c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        c.publish("radlogger/marker", b"marker", qos=1).wait_for_publish(5)
        c.disconnect()
        c.loop_stop()
        wait_for(lambda: b"marker" in sub.payloads, message="marker delivered")
        survived = len(sub.payloads) - 1
        # radloggerd's counters are the same in both cases: the broker acknowledged all N.
        assert survived == (N if persistence else 0)
    finally:
        sub.disconnect()
        if p.running:
            p.stop(5)
        broker.stop()
