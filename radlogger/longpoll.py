"""The HTTP long-poll boundary's names, in one place: the paths, headers and content type that
the server (:mod:`radlogger.endpoints.longpoll`) sends and the client (:mod:`radlogger.client`,
used by the ``remote`` device) reads.  The protocol itself is described in radlogger.client.

Plain constants, no aiohttp: the client side runs without the ``web`` extra.
"""

from __future__ import annotations

__all__ = ["POLL_PATH", "INFO_PATH", "FRAMES_TYPE", "CURSOR", "EPOCH", "GAP", "RESET", "COUNT",
           "TOPIC", "TYPE", "META"]

POLL_PATH = "/poll"
INFO_PATH = "/info"

#: the body of an answer with more than one item: a stream of radlogger.wire frames
FRAMES_TYPE = "application/x-radlogger-frames"

#: the cursor to send next time (the last item returned or skipped)
CURSOR = "X-Radlogger-Cursor"
#: changes when the server restarts (cursors are then meaningless)
EPOCH = "X-Radlogger-Epoch"
#: items lost between the client's cursor and the oldest item still buffered
GAP = "X-Radlogger-Gap"
#: "1" when the server could not honour the cursor (new epoch) and started over
RESET = "X-Radlogger-Reset"
#: items in the answer
COUNT = "X-Radlogger-Count"
#: with max=1, the single item's topic, packet type and wire header (JSON) travel as headers
TOPIC = "X-Radlogger-Topic"
TYPE = "X-Radlogger-Type"
META = "X-Radlogger-Meta"
