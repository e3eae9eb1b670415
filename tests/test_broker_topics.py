"""Distinct topics are bounded (a peer inventing topics cannot grow memory for good) and a new
topic costs the same however many exist (PyPubSub's linear sibling check is skipped)."""

from __future__ import annotations

import inspect
import logging

import pytest
from pubsub.core.topicargspec import ArgsInfo

from conftest import Collector
from radlogger import broker
from radlogger.measurement import Measurement
from radlogger.pipeline import Pipeline


def test_topics_past_max_topics_are_dropped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    p = Pipeline(max_topics=50)
    sink = p.add_endpoint(Collector("all"), subscribe=["*"])
    with caplog.at_level(logging.WARNING):
        for k in range(20):
            p.broker.publish([Measurement("peer", f"peer.t{k * 10 + i}", i) for i in range(10)])
    assert len(sink.items) == 0  # not started: the inbox holds them
    snap = p.snapshot()
    assert snap["producers"]["peer"]["dropped_by_reason"] == {"too_many_topics": 150}
    assert snap["producers"]["peer"]["published"] == 50
    assert p.broker.refused_topics == 150
    refusals = [r for r in caplog.records if "past max_topics" in r.getMessage()]
    assert len(refusals) == 1  # rate-limited: one line per second, not one per topic
    first = [r for r in caplog.records if "too many topics" in r.getMessage()]
    assert first and "max_topics = 50" in first[0].getMessage()
    # known topics still flow
    p.broker.publish([Measurement("peer", "peer.t3", 99)])
    assert p.snapshot()["producers"]["peer"]["published"] == 51


def test_the_flat_new_topic_patch_still_applies_to_the_installed_pypubsub() -> None:
    # the private method we replace is still what ArgsInfo calls for every new child topic
    assert "__addChildAI(self)" in inspect.getsource(ArgsInfo.__init__)
    assert ArgsInfo._ArgsInfo__addChildAI is broker._flat_add_child  # type: ignore[attr-defined]


def test_many_sibling_topics_are_all_delivered() -> None:
    p = Pipeline(max_topics=30_000)
    sink = p.add_endpoint(Collector("all", inbox_size=100_000), subscribe=["dev"])
    for k in range(20):
        p.broker.publish([Measurement("dev", f"dev.q{k * 1000 + i}", i) for i in range(1000)])
    assert p.snapshot()["producers"]["dev"]["published"] == 20_000
    assert sink.stats.received == 20_000


def test_cached_listeners_follow_subscription_changes() -> None:
    """The broker's cache of PyPubSub's listeners (radlogger.topictree) is rebuilt when a
    subscription comes or goes: late subscribers get later batches, removed ones none, and a
    subtree subscriber is called before the topic's own one, as PyPubSub orders them."""
    p = Pipeline()
    calls: list[tuple[str, int]] = []

    class Owner:
        def __init__(self, name: str) -> None:
            self.name = name

        def offer(self, batch: list[Measurement], wait: bool = False) -> None:
            calls.extend((self.name, m.value) for m in batch)

    exact, tree, late = Owner("exact"), Owner("tree"), Owner("late")
    p.broker.subscribe(exact, "d.v", exact.offer)
    p.broker.subscribe(tree, "d", tree.offer)
    p.broker.publish([Measurement("d", "d.v", 1)])
    assert calls == [("tree", 1), ("exact", 1)]
    p.broker.subscribe(late, "d.*", late.offer)
    p.broker.publish([Measurement("d", "d.v", 2)])
    assert sorted(calls[2:]) == [("exact", 2), ("late", 2), ("tree", 2)]
    p.broker.unsubscribe_owner(exact)
    p.broker.publish([Measurement("d", "d.v", 3), Measurement("d", "d.w", 4)])
    assert sorted(calls[5:]) == [("late", 3), ("late", 4), ("tree", 3), ("tree", 4)]
