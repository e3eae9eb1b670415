"""Start-up time of the command line: ``radloggerd --help`` and ``radloggerd check``.

Issue 3 sets ``radloggerd --help`` under 150 ms on the 2-core reference machine; it must not
import numpy or any plugin (``tests/test_cli.py`` checks the imports, this measures the time).
The installed console script is timed when it sits next to the interpreter (a pyenv shim in
front of it would add a bash start-up); otherwise ``python -m radlogger.cli``.

Run: ``python -m pytest benchmarks/bench_cli.py --benchmark-enable --benchmark-only``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import benchutil

SCRIPT = Path(sys.executable).with_name("radloggerd")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "radlogger.cli"]
DEFAULT_INI = Path(__file__).resolve().parent.parent / "radlogger" / "default.ini"


@pytest.mark.parametrize("args,expect", [
    (["--help"], b"Commands:"),
    (["check", "-c", str(DEFAULT_INI)], b"wsa1 (wsa4000)"),
], ids=["help", "check"])
def test_cli_startup(benchmark, args: list[str], expect: bytes) -> None:  # type: ignore[no-untyped-def]
    def run() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*COMMAND, *args], capture_output=True, timeout=60)

    result = benchmark.pedantic(run, rounds=1 if benchutil.QUICK else 20, iterations=1,
                                warmup_rounds=0 if benchutil.QUICK else 2)
    assert result.returncode == 0, result.stderr
    assert expect in result.stdout
    benchmark.extra_info["command"] = " ".join([Path(COMMAND[0]).name, *COMMAND[1:], *args])
