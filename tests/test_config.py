"""INI configuration: loading, drop-ins, environment, every error message, the dataflow graph."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import (
    ERROR_CASES,
    expected_message,
    make_test_plugins,
    write_case,
    write_ini,
)

from radlogger.config import (
    DAEMON_OPTIONS,
    ConfigError,
    default_config_path,
    known_topics,
    load_config,
)
from radlogger.pipeline import Pipeline


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_plugins(tmp_path_factory.mktemp("plugins"))


@pytest.fixture
def testplug(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test plugin distribution on sys.path, as if pip-installed."""
    monkeypatch.syspath_prepend(str(plugin_site))
    yield plugin_site


# ------------------------------------------------------------------------------ loading
def test_packaged_default_loads_with_its_graph() -> None:
    config = load_config(None, env={})
    assert config.files == [str(default_config_path())]
    # the simulated instruments (tests/test_simulated.py runs them)
    assert {n: s.plugin for n, s in config.devices.items()} == {
        "wsa1": "wsa4000", "pico1": "pico", "widar": "widar"}
    assert all(s.settings.simulate for s in config.devices.values())
    assert set(config.endpoints) == {"fft", "calibrate", "spectra", "normalize", "lagfft",
                                     "integrate", "log", "pico_db", "widar_h5"}
    assert config.warnings == []
    edges = config.graph.edges
    assert ("device:wsa1", "topic:wsa1.iq") in edges
    assert ("topic:wsa1.iq", "endpoint:fft") in edges
    assert ("topic:wsa1.spectrum_dbm", "endpoint:spectra") in edges
    assert ("topic:wsa1.spectrum_dbm", "endpoint:log") in edges
    assert ("topic:widar.spectrum_int", "endpoint:widar_h5") in edges
    assert ("topic:pico1.pulses", "endpoint:pico_db") in edges
    assert ("topic:wsa1.iq", "endpoint:log") not in edges  # raw data is not logged
    assert config.daemon.stats_interval == 10.0
    # a daemon option not set anywhere takes its declared default
    defaults = {o.name: o.default for o in DAEMON_OPTIONS}
    assert config.daemon.queue_size == defaults["queue_size"]


def test_values_are_typed_and_inline_comments_dropped(tmp_path: Path) -> None:
    path = write_ini(tmp_path / "r.ini", """
        [radlogger]
        queue_size = 1_000   # underscores allowed
        queue_policy = block ; the device waits
        [device:d]
        driver = synthetic
        rate = 2.5
        [endpoint:o]
        type = null
        subscribe = d,
            *.value
        """)
    config = load_config(path, env={})
    assert config.daemon.queue_size == 1000
    assert config.daemon.queue_policy == "block"
    assert config.devices["d"].settings.rate == 2.5
    assert config.endpoints["o"].settings.subscribe == ["d", "*.value"]
    assert config.devices["d"].instance.topics() == ["d.value"]


def test_conf_d_is_merged_in_name_order(tmp_path: Path) -> None:
    main = write_ini(tmp_path / "main.ini", """
        [radlogger]
        stats_interval = 1
        shutdown_deadline = 3
        [device:a]
        driver = synthetic
        """)
    (tmp_path / "conf.d").mkdir()
    write_ini(tmp_path / "conf.d" / "20-late.ini", "[radlogger]\nstats_interval = 20\n")
    write_ini(tmp_path / "conf.d" / "10-early.ini", """
        [radlogger]
        stats_interval = 10
        [endpoint:o]
        type = null
        subscribe = a
        """)
    write_ini(tmp_path / "conf.d" / "ignored.txt", "not ini at all")
    config = load_config(main, env={})
    assert config.files == [str(main), str(tmp_path / "conf.d/10-early.ini"),
                            str(tmp_path / "conf.d/20-late.ini")]
    assert config.daemon.stats_interval == 20.0  # the later file wins
    assert config.daemon.shutdown_deadline == 3.0  # untouched keys stay
    assert config.endpoints["o"].file == str(tmp_path / "conf.d/10-early.ini")
    assert ("topic:a.value", "endpoint:o") in config.graph.edges


def test_include_can_be_moved_or_disabled(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    write_ini(tmp_path / "conf.d" / "x.ini", "[radlogger]\nstats_interval = 7\n")
    (tmp_path / "extra").mkdir()
    write_ini(tmp_path / "extra" / "y.ini", "[radlogger]\nstats_interval = 9\n")
    off = write_ini(tmp_path / "off.ini", "[radlogger]\ninclude =\n")
    assert load_config(off, env={}).daemon.stats_interval == 60.0
    moved = write_ini(tmp_path / "moved.ini", "[radlogger]\ninclude = extra\n")
    assert load_config(moved, env={}).daemon.stats_interval == 9.0
    missing = write_ini(tmp_path / "missing.ini", "[radlogger]\ninclude = nowhere\n")
    config = load_config(missing, env={})
    assert config.files == [str(missing)]
    assert config.warnings == [f"{missing}:2: [radlogger] include = nowhere: directory "
                               f"{tmp_path}/nowhere does not exist, no drop-ins read; create it "
                               "or leave include empty"]


def test_environment_overrides_the_daemon_section(tmp_path: Path) -> None:
    path = write_ini(tmp_path / "e.ini", "[radlogger]\nqueue_size = 10\n")
    config = load_config(path, env={"RADLOGGER_QUEUE_SIZE": "4096",
                                    "RADLOGGER_LOG_LEVEL": "DEBUG",
                                    "RADLOGGER_CONFIG": "/not/read/here",
                                    "RADLOGGER_QUEUE_SIZ": "1", "OTHER": "x"})
    assert config.daemon.queue_size == 4096
    assert config.daemon.log_level == "DEBUG"
    assert config.warnings == ["environment RADLOGGER_QUEUE_SIZ is not a daemon option and is "
                               "ignored; did you mean RADLOGGER_QUEUE_SIZE?"]


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_every_error_has_its_one_line_message(case: tuple, tmp_path: Path, testplug: Path) -> None:
    name, files, env, template = case
    main = write_case(tmp_path, files)
    with pytest.raises(ConfigError) as info:
        load_config(main, env=env)
    message = str(info.value)
    assert message == expected_message(template, tmp_path)
    assert "\n" not in message


def test_errors_carry_file_section_and_key(tmp_path: Path) -> None:
    path = write_ini(tmp_path / "k.ini", """
        [device:sine]
        driver = synthetic
        period = 0
        """)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    err = info.value
    assert (err.file, err.section, err.key, err.line) == (str(path), "device:sine", "period", 3)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory; pass an INI file"):
        load_config(tmp_path, env={})
    bad = tmp_path / "latin1.ini"
    bad.write_bytes(b"[radlogger]\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text .*save it as UTF-8"):
        load_config(bad, env={})


# ------------------------------------------------------------------------------ warnings, graph
def test_subscription_matching_nothing_is_a_warning_with_a_hint(tmp_path: Path) -> None:
    path = write_ini(tmp_path / "w.ini", """
        [device:sine]
        driver = synthetic
        [endpoint:typo]
        type = null
        subscribe = sine.valeu
        [endpoint:glob]
        type = null
        subscribe = *.value
        [endpoint:idle]
        type = null
        """)
    config = load_config(path, env={})
    assert config.warnings == [
        f"{path}:5: [endpoint:typo] subscribe: 'sine.valeu' matches no topic any configured "
        "device or endpoint produces; did you mean 'sine.value'?",
        f"{path}:9: [endpoint:idle] subscribes to nothing and will receive no data; set "
        "subscribe = <topics or patterns>",
    ]
    assert ("topic:sine.value", "endpoint:glob") in config.graph.edges


def test_processing_chains_resolve_through_produces(tmp_path: Path, testplug: Path) -> None:
    path = write_ini(tmp_path / "chain.ini", """
        [device:d]
        driver = synthetic
        [endpoint:twice]
        type = doubler
        subscribe = d.value
        [endpoint:four]
        type = doubler
        subscribe = d.value_x2
        [endpoint:store]
        type = null
        subscribe = d.value_x2_x2
        """)
    config = load_config(path, env={})
    assert config.warnings == []
    graph = config.graph
    assert sorted(known_topics(graph)) == ["d.value", "d.value_x2", "d.value_x2_x2"]
    for edge in [("topic:d.value", "endpoint:twice"), ("endpoint:twice", "topic:d.value_x2"),
                 ("topic:d.value_x2", "endpoint:four"), ("endpoint:four", "topic:d.value_x2_x2"),
                 ("topic:d.value_x2_x2", "endpoint:store")]:
        assert edge in graph.edges


def test_device_without_declared_topics_gives_no_false_warning(tmp_path: Path,
                                                                testplug: Path) -> None:
    path = write_ini(tmp_path / "raw.ini", """
        [device:raw]
        driver = undeclared
        [endpoint:a]
        type = null
        subscribe = raw.anything
        [endpoint:b]
        type = null
        subscribe = other.x
        """)
    config = load_config(path, env={})
    assert config.warnings == [
        f"{path}:8: [endpoint:b] subscribe: 'other.x' matches no topic any configured device or "
        "endpoint produces; no device publishes any topic"]


def test_loaded_plugins_build_a_working_pipeline(tmp_path: Path) -> None:
    """The loader's instances are ready for a pipeline: configuration is the real thing."""
    path = write_ini(tmp_path / "p.ini", """
        [device:d]
        driver = synthetic
        rate = 0
        count = 500
        [endpoint:o]
        type = null
        subscribe = d
        """)
    config = load_config(path, env={})
    pipeline = Pipeline(queue_size=config.daemon.queue_size, overflow="block")
    pipeline.add_endpoint(config.endpoints["o"].instance)
    device = pipeline.add_device(config.devices["d"].instance)
    pipeline.start()
    try:
        device._thread.join(10)
    finally:
        assert pipeline.stop(10)
    assert pipeline.endpoints["o"].count == 500
    assert pipeline.balanced()


def test_same_as_compares_resolved_settings(tmp_path: Path) -> None:
    a = load_config(write_ini(tmp_path / "a.ini", "[device:d]\ndriver = synthetic\nrate = 10\n"),
                    env={})
    b = load_config(write_ini(tmp_path / "b.ini", "[device:d]\ndriver = synthetic\n"
                              "rate = 10.0  # same value, other spelling\n"), env={})
    c = load_config(write_ini(tmp_path / "c.ini", "[device:d]\ndriver = synthetic\nrate = 11\n"),
                    env={})
    assert a.devices["d"].same_as(b.devices["d"])
    assert not a.devices["d"].same_as(c.devices["d"])


def test_resolved_ini_round_trips(tmp_path: Path) -> None:
    config = load_config(None, env={})
    again = load_config(write_ini(tmp_path / "resolved.ini", config.resolved_ini()), env={})
    assert again.daemon == config.daemon
    for name, spec in config.devices.items():
        assert again.devices[name].same_as(spec)
    for name, spec in config.endpoints.items():
        assert again.endpoints[name].same_as(spec)
