"""The synthetic device's patterns are what the options say."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radlogger.devices.synthetic import SyntheticDevice


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
