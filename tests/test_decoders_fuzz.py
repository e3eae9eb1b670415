"""Every decoder of outside data answers any input with a result or its own counted error,
never another exception (issue 14: one message must not stop a device).  Property-based, sized
for the normal suite; `python -m benchmarks.fuzz_decoders` runs the long version."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.fuzz_decoders import DECODERS, hostile_inputs, mutate
from radlogger.measurement import Measurement
from radlogger.wire import encode, encode_frames

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", sorted(DECODERS))
@FAST
@given(data=st.binary(max_size=4096))
def test_random_bytes(name: str, data: bytes) -> None:
    decode, allowed = DECODERS[name]
    try:
        decode(data)
    except allowed:
        pass


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_hostile_inputs(name: str) -> None:
    """Deep nesting, huge numbers, non-UTF-8, truncations: the inputs the audit escaped with."""
    decode, allowed = DECODERS[name]
    for data in hostile_inputs():
        try:
            decode(data)
        except allowed:
            pass


_VALUES = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False),
                    st.text(max_size=50), st.binary(max_size=50))


@FAST
@given(values=st.lists(_VALUES, min_size=1, max_size=5), seed=st.integers(0, 2**32 - 1))
def test_mutated_valid_frames(values: list[object], seed: int) -> None:
    """Valid encodings with bytes flipped, cut and repeated: still a result or an error."""
    valid = [encode(Measurement("d", "d.v", v)) for v in values]
    valid.append(encode_frames([Measurement("d", "d.v", v) for v in values]))
    for data in valid:
        for name in ("wire.decode", "wire.decode_frames", "payload.decode_payload"):
            decode, allowed = DECODERS[name]
            try:
                decode(mutate(data, seed))
            except allowed:
                pass
