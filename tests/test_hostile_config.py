"""A broken configuration is one clear line and exit 2: NaN and infinity are refused everywhere
a float is read, and -c pointing at a directory or a device file does not hang or print usage."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_helpers import run_cli, write_ini

from radlogger.devices.synthetic import SyntheticDevice
from radlogger.options import OptionError


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_non_finite_floats_are_refused_in_plugin_options(value: str) -> None:
    with pytest.raises(OptionError, match="finite"):
        SyntheticDevice("d", backoff_initial=value)


@pytest.mark.parametrize(("section", "key"), [("radlogger", "shutdown_deadline"),
                                              ("radlogger", "block_timeout"),
                                              ("device:a", "backoff_initial")])
def test_non_finite_floats_in_a_file_are_one_line_and_exit_2(tmp_path: Path, section: str,
                                                             key: str) -> None:
    body = {"radlogger": "", "device:a": "driver = synthetic\n"}
    body[section] += f"{key} = nan\n"
    ini = write_ini(tmp_path / "nan.ini", f"""
[radlogger]
{body["radlogger"]}
[device:a]
{body["device:a"]}
[endpoint:n]
type = null
subscribe = a
""")
    for command in ("check", "run"):
        out = run_cli(command, "-c", str(ini), timeout=30)
        assert out.returncode == 2, out.stderr
        assert f"{key} = 'nan'" in out.stderr and "finite" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("target", ["dir", "/dev/zero", "/dev/null"])
def test_config_that_is_not_a_file_is_one_line_and_exit_2(tmp_path: Path, target: str) -> None:
    path = str(tmp_path) if target == "dir" else target
    out = run_cli("run", "-c", path, timeout=30)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("radloggerd: error:"), out.stderr
