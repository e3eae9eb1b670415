"""The ``radloggerd`` command line: exit codes, messages, sample, plugins, ports, simulate.

Most tests run the real command in a subprocess (``python -m radlogger.cli``) with a test
plugin distribution on PYTHONPATH; the full table of configuration errors goes through
``main()`` in-process (same code path, same exit code, much faster).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import (
    ERROR_CASES,
    cli_env,
    expected_message,
    make_test_plugins,
    read_stats,
    run_cli,
    write_case,
    write_ini,
)

from radlogger import __version__
from radlogger.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_plugins(tmp_path_factory.mktemp("plugins"))


@pytest.fixture
def testplug(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(site))
    for key in [k for k in __import__("os").environ if k.startswith("RADLOGGER_")]:
        monkeypatch.delenv(key)
    yield site


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("radloggerd: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0][len("radloggerd: error: "):]


# ------------------------------------------------------------------------------ basics
def test_version_and_help() -> None:
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"radloggerd, version {__version__}"
    helptext = run_cli("--help")
    assert helptext.returncode == 0
    for command in ("run", "check", "config", "plugins", "ports", "simulate"):
        assert re.search(rf"^  {command}\s", helptext.stdout, re.M), helptext.stdout
    for args in (["run", "--help"], ["check", "-h"], ["config", "sample", "--help"]):
        assert run_cli(*args).returncode == 0


def test_help_imports_neither_numpy_nor_plugins() -> None:
    code = ("import sys\nfrom radlogger.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'pubsub', 'serial', 'usb') or "
            "m.startswith(('radlogger.devices', 'radlogger.endpoints')))\n"
            "print('HEAVY', heavy, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30, env=cli_env())
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert run_cli("no-such-command").returncode == 2
    assert run_cli("run", "--duration", "-1").returncode == 2
    # check no longer requires -c (issue 16: it defaults to the packaged configuration, as
    # run does: tests/test_first_hour.py); a usage error of check still exits 2
    assert run_cli("check", "--no-such-option").returncode == 2
    assert run_cli("check", "-c").returncode == 2  # -c without its file


def test_console_script_is_installed() -> None:
    exe = shutil.which("radloggerd")
    assert exe, "the radloggerd console script is not on PATH (pip install -e .)"
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30,
                            env=cli_env())
    assert result.returncode == 0 and __version__ in result.stdout


# ------------------------------------------------------------------------------ config errors
@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_config_error_exits_2_with_one_line(case: tuple, tmp_path: Path, testplug: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    name, files, env, template = case
    main_ini = write_case(tmp_path, files)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as info:
        main(["check", "-c", str(main_ini)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"radloggerd: error: {expected_message(template, tmp_path)}\n"


@pytest.mark.parametrize("command", ["check", "run"])
def test_config_error_in_a_real_process(command: str, tmp_path: Path, site: Path) -> None:
    path = write_ini(tmp_path / "bad.ini", "[device:sine]\ndriver = synthetic\nrate = fast\n")
    result = run_cli(command, "-c", str(path), site=site)
    assert result.returncode == 2
    assert one_error_line(result) == (f"{path}:3: [device:sine] rate = 'fast': expected number "
                                      "(could not convert string to float: 'fast')")


def test_environment_error_in_a_real_process(tmp_path: Path) -> None:
    path = write_ini(tmp_path / "ok.ini", "[device:sine]\ndriver = synthetic\n")
    result = run_cli("run", "-c", str(path), env=cli_env(RADLOGGER_SHUTDOWN_DEADLINE="-3"))
    assert result.returncode == 2
    assert one_error_line(result) == ("environment RADLOGGER_SHUTDOWN_DEADLINE: "
                                      "shutdown_deadline = '-3': must be >= 0")


def test_check_prints_the_graph_and_warnings(tmp_path: Path) -> None:
    path = write_ini(tmp_path / "g.ini", """
        [device:sine]
        driver = synthetic
        [endpoint:log]
        type = log
        subscribe = sine, cosine
        """)
    result = run_cli("check", "-c", str(path), "--resolved")
    assert result.returncode == 0
    assert result.stderr == (f"radloggerd: warning: {path}:5: [endpoint:log] subscribe: "
                             "'cosine' matches no topic any configured device or endpoint "
                             "produces; did you mean 'sine'?\n")
    assert "sine (synthetic)\n`-- sine.value\n    `-- -> log (log)\n" in result.stdout
    assert "cosine (nothing publishes)" in result.stdout
    assert "[device:sine]\ndriver = synthetic\nbackoff_initial = 0.5\n" in result.stdout


def test_example_configuration_checks_clean() -> None:
    result = run_cli("check", "-c", str(ROOT / "etc" / "radlogger" / "radloggerd.ini"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    unit = (ROOT / "etc" / "systemd" / "radloggerd.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit and "KillSignal=SIGTERM" in unit
    stop = int(re.search(r"^TimeoutStopSec=(\d+)", unit, re.M).group(1))
    ini = (ROOT / "etc" / "radlogger" / "radloggerd.ini").read_text()
    deadline = float(re.search(r"^shutdown_deadline = (\S+)", ini, re.M).group(1))
    assert stop > deadline


# ------------------------------------------------------------------------------ sample
def _uncomment_defaults(text: str) -> str:
    """Turn every ``#key = default`` of the active sections into a real setting."""
    out, active = [], False
    for line in text.splitlines():
        if line.startswith("["):
            active = True
        elif line.startswith(("#[", "# [")):
            active = False
        elif active and re.match(r"^#[a-z_][a-z0-9_]* =", line):
            line = line[1:]
        out.append(line)
    return "\n".join(out) + "\n"


def test_sample_round_trips_through_check(tmp_path: Path, site: Path) -> None:
    sample = run_cli("config", "sample", site=site)
    assert sample.returncode == 0, sample.stderr
    text = sample.stdout
    assert "[device:synthetic1]\n" in text and "[endpoint:null1]\n" in text
    assert "# [device:ghost_dev1] driver 'ghost_dev' is unavailable: " in text
    path = write_ini(tmp_path / "sample.ini", text)
    checked = run_cli("check", "-c", str(path), site=site)
    assert checked.returncode == 0, checked.stderr
    assert "synthetic1 (synthetic)\n`-- synthetic1.value\n" in checked.stdout
    # every documented default is a valid value
    explicit = write_ini(tmp_path / "explicit.ini", _uncomment_defaults(text))
    assert explicit.read_text().count("\nrate = 10.0\n") >= 1
    checked = run_cli("check", "-c", str(explicit), site=site)
    assert checked.returncode == 0, checked.stderr


def test_sample_of_a_plugin_with_required_keys(tmp_path: Path, site: Path) -> None:
    sample = run_cli("config", "sample", "--plugin", "needs_host", site=site)
    assert sample.returncode == 0
    lines = sample.stdout.splitlines()
    note = next(i for i, ln in enumerate(lines) if ln.startswith("# [device:needs_host1] needs"))
    assert "(REQUIRED: host)" in lines[note]
    # follow the note's instructions: remove one leading '#', fill the REQUIRED key
    block = [ln[1:] for ln in lines[note + 1:]]
    block = [ln.replace("host =  # REQUIRED", "host = 127.0.0.1") for ln in block]
    path = write_ini(tmp_path / "host.ini", "\n".join(block) + "\n")
    checked = run_cli("check", "-c", str(path), site=site)
    assert checked.returncode == 0, checked.stderr
    assert "needs_host1.x" in checked.stdout


def test_sample_of_one_plugin_and_of_an_unknown_one(tmp_path: Path) -> None:
    sample = run_cli("config", "sample", "--plugin", "synthetic")
    assert sample.returncode == 0
    assert "\n[radlogger]\n" not in sample.stdout and sample.stdout.count("\n[") == 1
    checked = run_cli("check", "-c", str(write_ini(tmp_path / "s.ini", sample.stdout)))
    assert checked.returncode == 0, checked.stderr
    unknown = run_cli("config", "sample", "--plugin", "synthetik")
    assert unknown.returncode == 2
    assert one_error_line(unknown).startswith("unknown plugin 'synthetik'; known: ")


# ------------------------------------------------------------------------------ plugins, ports
def test_plugins_lists_options_and_unavailable_ones(site: Path) -> None:
    result = run_cli("plugins", site=site)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "devices (entry points radlogger.devices):" in out
    assert "  synthetic: measurements at a set rate" in out
    assert re.search(r"^      rate\s+measurements per second", out, re.M)
    assert ("rate measurements per second (0 = as fast as possible) (number; range [0, ]; "
            "default 10.0)") in " ".join(out.split())  # wrapped at 100 columns
    assert "  ghost_dev: unavailable: driver 'ghost_dev' cannot be loaded: No module named " \
           "'rl_testplug_missing'" in out
    assert "  ghost_ep: unavailable: AttributeError: module 'rl_testplug' has no attribute " \
           "'DoesNotExist'" in out
    assert "options every endpoint has:" in out and re.search(r"^      subscribe\s", out, re.M)
    one = run_cli("plugins", "null", site=site)
    assert one.returncode == 0 and "  null: counts measurements" in one.stdout
    assert "synthetic" not in one.stdout
    assert run_cli("plugins", "nope").returncode == 2


def test_ports_lists_hardware_and_survives_broken_drivers(site: Path) -> None:
    result = run_cli("ports", site=site)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("serial ports:\n")
    assert "USB devices:" in out
    assert "  needs_host: a plain description" in out
    assert "  broken_discovery: discovery failed: PermissionError: no access to the bus" in out
    assert "  ghost_dev: unavailable: driver 'ghost_dev' cannot be loaded" in out
    from serial.tools import list_ports

    ports = sorted(p.device for p in list_ports.comports())
    if ports:  # the test driver claims the first serial port: it must be marked
        assert re.search(rf"^  {re.escape(ports[0])} .*\[needs_host\]$", out, re.M), out


# ------------------------------------------------------------------------------ simulate, commands
def test_simulate_runs_the_named_simulator(site: Path) -> None:
    result = run_cli("simulate", "echo_sim", "--port", "5", "a", "b", site=site)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "echo_sim port=5 rest=a b\n"
    helptext = run_cli("simulate", "echo_sim", "--help", site=site)
    assert helptext.returncode == 0
    assert "Usage: radloggerd simulate echo_sim" in helptext.stdout
    assert "A test simulator that prints its arguments." in helptext.stdout


def test_simulate_errors(site: Path) -> None:
    unknown = run_cli("simulate", "nosuch", site=site)
    assert unknown.returncode == 2
    message = one_error_line(unknown)
    assert message.startswith("unknown simulator 'nosuch'; known: ") and "echo_sim" in message
    broken = run_cli("simulate", "ghost_sim", site=site)
    assert broken.returncode == 1
    assert one_error_line(broken) == ("simulator 'ghost_sim' is not available: "
                                      "ModuleNotFoundError: No module named 'rl_testplug_missing'")
    assert run_cli("simulate", site=site).returncode == 2


def test_plugin_commands_are_offered(site: Path) -> None:
    helptext = run_cli("--help", site=site)
    assert re.search(r"^  hello\s+\(plugin command from rl_testplug\)$", helptext.stdout, re.M)
    result = run_cli("hello", "bob", site=site)
    assert result.returncode == 0 and result.stdout == "hello bob from a plugin\n"
    broken = run_cli("ghost_cmd", "x", site=site)
    assert broken.returncode == 1
    assert one_error_line(broken) == ("command 'ghost_cmd' is not available: "
                                      "ModuleNotFoundError: No module named 'rl_testplug_missing'")


# ------------------------------------------------------------------------------ run
def test_default_run_produces_data(tmp_path: Path) -> None:
    """The packaged default runs the simulated instruments (tests/test_simulated.py checks
    their chains in depth); its files go under the current directory."""
    stats_file = tmp_path / "stats.json"
    result = run_cli("run", "--duration", "1", "--stats-json", str(stats_file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wsa1.spectrum_dbm" in result.stderr  # the log endpoint's lines
    assert "final stats: " in result.stderr
    stats = read_stats(stats_file)
    producers = stats["producers"]
    assert all(producers[d]["produced"] > 0 for d in ("wsa1", "pico1", "widar")), producers
    assert stats["endpoints"]["log"]["handled"] > 0
    assert stats["balanced"] and stats["drained"]
    assert (tmp_path / "radlogger-data" / "pico.sqlite").is_file()


def test_once_refuses_when_nothing_is_finite(tmp_path: Path, site: Path) -> None:
    path = write_ini(tmp_path / "inf.ini", "[device:box]\ndriver = needs_host\nhost = h\n")
    result = run_cli("run", "-c", str(path), "--once", site=site)
    assert result.returncode == 2
    assert one_error_line(result).startswith("--once needs at least one finite device")


def test_log_file_is_used_and_an_unopenable_one_is_a_config_error(tmp_path: Path) -> None:
    log_file = tmp_path / "radloggerd.log"
    path = write_ini(tmp_path / "lf.ini", f"""
        [radlogger]
        log_file = {log_file}
        [device:d]
        driver = synthetic
        rate = 100
        [endpoint:o]
        type = null
        subscribe = d
        """)
    result = run_cli("run", "-c", str(path), "--duration", "0.3")
    assert result.returncode == 0 and result.stderr == ""
    assert "final stats: " in log_file.read_text()
    bad = write_ini(tmp_path / "bad.ini", f"[radlogger]\nlog_file = {tmp_path}/no/such.log\n")
    result = run_cli("run", "-c", str(bad))
    assert result.returncode == 2
    assert one_error_line(result) == (f"[radlogger] log_file = {tmp_path}/no/such.log: cannot "
                                      "open (No such file or directory); use a writable path, or "
                                      "leave it empty for standard error")


def test_log_level_option_on_the_subcommand(tmp_path: Path) -> None:
    quiet = run_cli("run", "--log-level", "error", "--duration", "0.2", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
    chatty = run_cli("--log-level", "info", "run", "--duration", "0.2", cwd=tmp_path)
    assert chatty.returncode == 0 and "final stats: " in chatty.stderr
