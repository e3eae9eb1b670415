"""Every built-in plugin reports its own per-reason counters through the one declared method,
``Configurable.counters()``, and status shows them for every component (issue 12, part 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from radlogger import plugins
from radlogger.config import default_config_path, load_config
from radlogger.options import Configurable
from radlogger.pipeline import Pipeline
from radlogger.reload import Reconfigurer
from radlogger.status import StatusTracker, format_status

_STORE = {"rows", "bytes", "flushes", "lost", "files", "pending", "disk_errors"}
_LAZY = {"skipped", "own_outputs_ignored"}
_ASSEMBLER = {"frames", "placed", "duplicates", "late", "emitted", "complete", "incomplete",
              "missing_frames", "evicted", "pending"}
_LAGSETS = {"datagrams", "lagsets", "bad_frames"} | _ASSEMBLER

#: (role, plugin) -> (minimal settings, the counters it must report); ``{tmp}`` is a temp dir
PLUGINS: dict[tuple[str, str], tuple[dict[str, Any], set[str]]] = {
    ("device", "synthetic"): ({}, {"emitted", "connects"}),
    ("device", "replay"): ({"path": "{tmp}/none.jsonl"}, {"emitted"}),
    ("device", "remote"): ({"url": "http://127.0.0.1:9/poll"},
                           {"cursor", "received", "requests", "gaps", "remote_lost", "resets"}),
    ("device", "mqtt"): ({}, {"connected", "received", "duplicates", "bad_messages"}),
    ("device", "pico"): ({"simulate": True},
                         {"evaluations", "failures", "bad_lines", "uploaded_bytes", "cycles",
                          "queued", "simulator_starts"}),
    ("device", "pico_farm"): ({"db": "{tmp}/farm.sqlite", "port": 0},
                              {"boards", "ticks", "events_pending"}),
    ("device", "widar"): ({"simulate": True},
                          _LAGSETS | {"port", "rcvbuf", "kernel_drops", "simulator_starts",
                                       "drained_at_stop", "discarded"}),
    ("device", "widar_replay"): ({"path": "{tmp}/none.widar"}, _LAGSETS),
    ("device", "wsa4000"): ({"simulate": True},
                            {"connects", "packets", "gaps", "missing_packets", "bad_packets",
                             "resync_bytes", "simulator_starts"}),
    ("endpoint", "log"): ({}, {"lines"}),
    ("endpoint", "null"): ({}, {"count", "out_of_order"}),
    ("endpoint", "fft"): ({}, _LAZY | {"fft_calls", "spectra"}),
    ("endpoint", "calibrate"): ({}, _LAZY | {"calibrated", "flipped"}),
    ("endpoint", "spectrum"): ({}, {"stored", "renders", "tracks", "files"}),
    ("endpoint", "lag_normalize"): ({}, _LAZY | {"flagged_frames"}),
    ("endpoint", "lag_fft"): ({}, _LAZY),
    ("endpoint", "integrate"): ({"count": 4},
                                _LAZY | {"integrations", "partial", "partial_discarded"}),
    # its counters are the child process's accounting: checked running in test_isolation.py
    ("endpoint", "isolated"): ({"stages": ["lag_normalize"]}, set()),
    ("endpoint", "mqtt"): ({}, {"connected", "confirmed", "retries", "unsent", "in_flight",
                                "bytes_sent", "connects", "disconnects", "connect_failures"}),
    ("endpoint", "longpoll"): ({"port": 0}, {"requests", "served", "gaps", "lost", "waiting",
                                             "buffered", "buffered_bytes", "evicted", "cursor"}),
    ("endpoint", "pool"): ({"endpoint": "null", "workers": 1},
                           {"crashes", "restarts", "chunks", "workers_alive"}),
    ("endpoint", "csv"): ({"path": "{tmp}/a.csv"}, _STORE),
    ("endpoint", "jsonl"): ({"path": "{tmp}/a.jsonl"}, _STORE),
    ("endpoint", "sqlite"): ({"path": "{tmp}/a.sqlite"}, _STORE),
    ("endpoint", "hdf5"): ({"path": "{tmp}/a.h5"}, _STORE),
}


def _groups() -> dict[str, str]:
    return {"device": plugins.DEVICE_GROUP, "endpoint": plugins.ENDPOINT_GROUP}


def test_the_table_covers_every_built_in_plugin() -> None:
    registered = {(role, name) for role, group in _groups().items()
                  for name in plugins.names(group)}
    assert registered == set(PLUGINS)


@pytest.mark.parametrize("key", sorted(PLUGINS), ids=lambda k: f"{k[0]}:{k[1]}")
def test_counters_of_every_built_in_plugin(key: tuple[str, str], tmp_path: Path) -> None:
    role, name = key
    settings, expected = PLUGINS[key]
    settings = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v
                for k, v in settings.items()}
    cls = plugins.load(_groups()[role], name)
    instance = cls(f"{name}0", settings)
    assert isinstance(instance, Configurable)
    counters = instance.counters()
    assert isinstance(counters, dict)
    assert expected <= set(counters), f"missing: {sorted(expected - set(counters))}"
    for k, v in counters.items():
        assert isinstance(k, str) and isinstance(v, (int, float)), (k, v)


def test_counts_by_reason_are_flat(tmp_path: Path) -> None:
    from radlogger.devices.pico.driver import PicoDevice

    dev = PicoDevice("p", simulate=True)
    dev.failures.update({"watchdog": 2, "timeout": 1})
    dev.bad_lines["garbage"] += 3
    c = dev.counters()
    assert c["failures"] == 3 and c["failures.watchdog"] == 2 and c["failures.timeout"] == 1
    assert c["bad_lines"] == 3 and c["bad_lines.garbage"] == 3


def test_status_shows_the_own_counters_of_every_component(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The packaged default configuration (simulated WSA4000, pico and WIDAR, processing
    chains, stores) running: status carries each component's ``counters()``, and the table
    ``radloggerd status`` prints shows them."""
    monkeypatch.chdir(tmp_path)  # the default configuration writes under radlogger-data/
    config = load_config(default_config_path())
    pipeline = Pipeline()
    Reconfigurer(pipeline).build(config)
    pipeline.start()
    try:
        wait_for(lambda: pipeline.devices["pico1"].counters()["evaluations"] >= 1
                 and pipeline.devices["wsa1"].counters()["packets"] >= 1
                 and pipeline.devices["widar"].counters()["lagsets"] >= 1, 30,
                 message="every simulated instrument delivered")
        status = StatusTracker().update(pipeline)
    finally:
        assert pipeline.stop(10.0)
    components = {**pipeline.devices, **pipeline.endpoints}
    assert {c.name for c in status.components} == set(components)
    for c in status.components:
        own = components[c.name].counters()
        assert own and set(c.own) <= set(own), c.name  # reasons may appear, never vanish
        assert set(c.own) <= set(c.counters)
    assert status.get("pico1").own["evaluations"] >= 1
    assert status.get("widar").own["lagsets"] >= 1
    text = format_status(status)
    assert "evaluations=" in text and "lagsets=" in text and "fft_calls=" in text
    assert "flushes=" in text and "lines=" in text
