"""The synthetic device's patterns are what the options say."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import wait_for
from radlogger.device import DeviceDone, DeviceState
from radlogger.devices.synthetic import SyntheticDevice
from radlogger.measurement import Measurement


def test_patterns() -> None:
    d = SyntheticDevice("s", rate=4, pattern="sine", period=1.0, amplitude=2.0)
    assert np.allclose(d._values(0, 4), [0, 2, 0, -2], atol=1e-9)
    d = SyntheticDevice("s", rate=4, pattern="ramp", period=1.0, amplitude=1.0)
    assert np.allclose(d._values(0, 5), [0, 0.25, 0.5, 0.75, 0])
    assert SyntheticDevice("s", pattern="counter")._values(5, 3) == [5, 6, 7]
    assert SyntheticDevice("s", pattern="constant", amplitude=3)._values(0, 2) == [3.0, 3.0]
    r = SyntheticDevice("s", pattern="random", seed=1)._values(0, 1000)
    assert abs(float(np.mean(r))) < 0.2 and r == SyntheticDevice("s", pattern="random",
                                                                   seed=1)._values(0, 1000)
    arr = SyntheticDevice("s", pattern="counter", array_size=3)._values(2, 2)
    assert [a.tolist() for a in arr] == [[2, 3, 4], [3, 4, 5]]
    assert arr[0].dtype == np.float32
    sine = SyntheticDevice("s", rate=8, pattern="sine", period=1.0, array_size=2)._values(2, 1)
    assert sine[0].tolist() == pytest.approx([1.0, 1.0])
    assert math.isclose(SyntheticDevice("s", rate=8, pattern="sine", period=1)._values(2, 1)[0], 1)


class _Collect:
    """A stand-in outlet that keeps the values pushed."""

    stats = None

    def __init__(self) -> None:
        self.values: list[object] = []

    def push(self, m: Measurement) -> bool:
        self.values.append(m.value)
        return True

    def push_many(self, ms: list[Measurement]) -> int:
        self.values.extend(m.value for m in ms)
        return len(ms)


@pytest.mark.parametrize("pattern", ["random", "sine", "counter"])
def test_values_do_not_depend_on_how_the_stream_is_polled(pattern: str) -> None:
    """Scalars are computed ahead in blocks: one at a time or in chunks, the same stream."""
    streams = []
    for chunk in (1, 7, 1000):
        d = SyntheticDevice("s", pattern=pattern, seed=3, rate=0, count=700, chunk=chunk)
        out = _Collect()
        d.outlet = out
        d.open()
        with pytest.raises(DeviceDone):
            while True:
                d.poll()
        streams.append(out.values)
    assert streams[0] == streams[1] == streams[2] == \
        SyntheticDevice("s", pattern=pattern, seed=3, rate=0)._values(0, 700)


def test_a_slow_device_stops_at_once_and_twice() -> None:
    """Device.wait is one lock acquire: a stop request releases it, a second one is harmless."""
    d = SyntheticDevice("s", rate=0.01)  # the next measurement is 100 s away
    d.outlet = _Collect()
    d.start()
    wait_for(lambda: d.state is DeviceState.RUNNING)
    d.request_stop()
    assert d.stop(5) and d.state is DeviceState.STOPPED
    assert d.stopping and d.wait(100)  # stopped: waits return at once
    d.start()  # a restart waits again
    wait_for(lambda: d.state is DeviceState.RUNNING)
    assert not d.wait(0.001)
    assert d.stop(5)
