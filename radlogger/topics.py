"""The topic grammar, in one place: what a topic is, what a subscription pattern is, and how a
foreign name (an MQTT topic level, a component name) becomes a valid topic segment.

Topics are dotted names, ``<device>.<quantity>`` and deeper (``wsa1.iq``, ``wsa1.spectrum_dbm``):
segments of letters, digits, ``_`` and ``-`` that start with a letter or digit (PyPubSub refuses
name parts that start with ``_``).  A subscription pattern is an exact topic, a subtree prefix
(``wsa1`` receives ``wsa1.iq``) or a glob (``*.iq``).  The broker, the wire decoder, processing
templates, the config check, the store reader's selection and the long-poll endpoint all use
these definitions.
"""

from __future__ import annotations

import fnmatch
import re

__all__ = ["TOPIC_RE", "NAME_RE", "is_topic", "is_glob", "validate_pattern", "pattern_matches",
           "safe_segment"]

#: a whole topic: dotted segments, each starting with a letter or digit
TOPIC_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)*$")
#: a device or endpoint name (a config section [device:NAME]): it becomes the first segment of
#: its topics, so no dots
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_NOT_SEGMENT_CHAR = re.compile(r"[^A-Za-z0-9_-]")
_GLOB_CHARS = frozenset("*?[")


def is_topic(text: str) -> bool:
    return TOPIC_RE.match(text) is not None


def is_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


def validate_pattern(pattern: str) -> str | None:
    """None if ``pattern`` is a usable subscription, else what is wrong with it."""
    if is_glob(pattern):
        return None if pattern.strip() == pattern and pattern else "empty glob"
    if not TOPIC_RE.match(pattern):
        return (f"'{pattern}' is not a topic (dotted names of letters, digits, '_' and '-', "
                "e.g. wsa1.iq) nor a glob")
    return None


def pattern_matches(pattern: str, topic: str) -> bool:
    """Whether a subscription ``pattern`` receives measurements published on ``topic``."""
    if is_glob(pattern):
        return fnmatch.fnmatchcase(topic, pattern)
    return topic == pattern or topic.startswith(pattern + ".")


def safe_segment(text: str) -> str:
    """``text`` with every character a topic segment cannot hold replaced by ``_``."""
    return _NOT_SEGMENT_CHAR.sub("_", text)
