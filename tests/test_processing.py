"""The processing endpoint base: output templates, derived topics, one demand lookup per batch."""

from __future__ import annotations

import pytest

from radlogger.endpoints.lag.fft import LagFFTEndpoint
from radlogger.endpoints.lag.integrate import IntegrateEndpoint
from radlogger.endpoints.lag.normalize import LagNormalizeEndpoint
from radlogger.endpoints.spectrum.calibrate import CalibrateEndpoint
from radlogger.endpoints.spectrum.fft import FFTEndpoint
from radlogger.measurement import Measurement
from radlogger.options import OptionError
from radlogger.processing import ProcessingEndpoint, check_output, derive_topic
from radlogger.sample import catalog


@pytest.mark.parametrize(("topic", "template", "out"), [
    ("wsa1.iq", "spectrum", "wsa1.spectrum"),
    ("widar.lagset", "{quantity}_norm", "widar.lagset_norm"),
    ("a.b.c", "{quantity}_x", "a.b.c_x"),  # the device is what precedes the first dot
    ("a.b.c", "spectrum", "a.spectrum"),
    ("plain", "{quantity}_x", "plain_x"),  # no device prefix: all quantity
])
def test_derived_topics_keep_the_device(topic: str, template: str, out: str) -> None:
    assert derive_topic(topic, template) == out


@pytest.mark.parametrize("template", ["{nope}", "{0}", "{quantity:d}", "a.b", "", "a b",
                                      "{quantity}.x", "{quantity}"])
def test_bad_output_templates_are_one_line_errors_naming_the_key(template: str) -> None:
    with pytest.raises(OptionError) as exc:
        check_output("output", template)
    assert exc.value.key == "output" and "\n" not in str(exc.value)
    assert str(exc.value).startswith(f"output = {template!r}: ")


@pytest.mark.parametrize(("cls", "default", "topic", "out"), [
    (FFTEndpoint, "spectrum", "wsa1.iq", "wsa1.spectrum"),
    (CalibrateEndpoint, "{quantity}_dbm", "wsa1.spectrum", "wsa1.spectrum_dbm"),
    (LagNormalizeEndpoint, "{quantity}_norm", "widar.lagset", "widar.lagset_norm"),
    (LagFFTEndpoint, "spectrum", "widar.lagset_norm", "widar.spectrum"),
    (IntegrateEndpoint, "{quantity}_int", "widar.spectrum", "widar.spectrum_int"),
])
def test_each_kind_keeps_its_output_default(cls: type[ProcessingEndpoint], default: str,
                                            topic: str, out: str) -> None:
    kw = {"count": 2} if cls is IntegrateEndpoint else {}
    e = cls("e", **kw)
    assert e.out_topic(topic) == out
    assert cls.produces == e.produces == ("{device}." + default,)
    output = {o.name: o for o in cls.declared_options()}["output"]
    assert output.default == default
    info = next(i for i in catalog(cls.kind) if i.cls is cls)
    assert "output" in {o.name for o in info.own_options}  # listed with the kind's options
    other = cls("o", output="{quantity}_y", **kw)
    assert other.out_topic(topic) == topic + "_y" and other.produces == (
        "{device}.{quantity}_y",)


def test_calibrate_keeps_its_suffix_option() -> None:
    assert CalibrateEndpoint("c", suffix="_x").out_topic("a.spectrum") == "a.spectrum_x"
    same = CalibrateEndpoint("c", suffix="_x", output="{quantity}_x")
    assert same.out_topic("a.spectrum") == "a.spectrum_x"
    with pytest.raises(OptionError) as exc:
        CalibrateEndpoint("c", suffix="_x", output="{quantity}_y")
    assert exc.value.key == "suffix" and "\n" not in str(exc.value)
    with pytest.raises(OptionError) as exc:
        CalibrateEndpoint("c", suffix=".x")
    assert exc.value.key == "suffix"


def test_demanded_asks_once_per_output_topic_and_counts_the_rest() -> None:
    asked: list[str] = []

    def has_subscribers(topic: str) -> bool:
        asked.append(topic)
        return topic == "a.spectrum"

    fft = FFTEndpoint("fft")
    fft.bind(None, has_subscribers, None)
    batch = [Measurement("a", t, i) for i, t in enumerate(
        ["a.iq", "b.iq", "a.iq", "a.iq2", "b.iq", "a.iq"])]
    kept = fft.demanded(batch)
    assert [m.value for m in kept] == [0, 2, 3, 5]  # a.iq and a.iq2 both feed a.spectrum
    assert fft.skipped == 2
    assert sorted(asked) == ["a.spectrum", "b.spectrum"]
    assert fft.wants("a.iq") and not fft.wants("b.iq")


def test_integrate_always_wants_its_control_topic() -> None:
    integ = IntegrateEndpoint("i", count=2)
    integ.bind(None, lambda topic: False, None)
    assert integ.wants("w.control") and not integ.wants("w.spectrum")
