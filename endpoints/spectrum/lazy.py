"""Transitive laziness for processing endpoints (the WSA host library's "connect lazily").

The broker resolves demand transitively (``Broker.has_demand``): a subscriber counts unless it
implements ``wants(topic)`` and that says no.  ``fft`` and ``calibrate`` implement ``wants`` from
the demand for their own output, so in ``fft -> calibrate -> sink`` removing the sink idles both.
"""

from __future__ import annotations

from typing import Any

__all__ = ["demanded"]


def demanded(endpoint: Any, topic: str) -> bool:
    """Whether some consumer of ``topic`` will actually use it."""
    return bool(endpoint.has_subscribers(topic))
