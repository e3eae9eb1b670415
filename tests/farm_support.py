"""Helpers for the farm tests and benchmark (no tests here): daemons as processes, the real
iCEFARM client in its own virtualenv.

``icefarm`` 0.1.16 pins Flask, psycopg and friends we do not want in our environment, so it
lives in a virtualenv made once per machine (``$RADLOGGER_ICEFARM_VENV``, default
``~/.cache/radloggerd/icefarm-0.1.16``) and is driven in a subprocess
(tests/icefarm_driver.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import venv
from pathlib import Path
from typing import Any

from daemon_helpers import DaemonProcess, write_ini

from conftest import free_port, wait_for

ICEFARM = "icefarm==0.1.16"
DRIVER = Path(__file__).with_name("icefarm_driver.py")
TOKEN = "farm-test-token"


def icefarm_python() -> str:
    """The python of a virtualenv holding the real iCEFARM client (made on first use)."""
    default = Path.home() / ".cache" / "radloggerd" / "icefarm-0.1.16"
    root = Path(os.environ.get("RADLOGGER_ICEFARM_VENV", default))
    python = root / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import icefarm.client"],
                                          capture_output=True).returncode == 0:
        return str(python)
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    subprocess.run([str(python), "-m", "pip", "install", "-q", ICEFARM], check=True,
                   capture_output=True, timeout=600)
    return str(python)


def get_json(url: str, timeout: float = 5.0, token: str = "") -> Any:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def boards_ini(prefix: str, n: int, count_window: float, variance: int = 0) -> str:
    out = []
    for i in range(n):
        fw = "variance" if i >= n - variance else "pulsecount"
        out.append(f"[device:{prefix}{i}]\ndriver = pico\nsimulate = yes\nfarm = farm\n"
                   f"firmware = {fw}\ncount_window = {count_window}\n")
    return "\n".join(out)


class Farmd:
    """One farm daemon (``radloggerd run``) as a subprocess on a free port."""

    def __init__(self, tmp: Path, name: str, role: str, boards: int = 0,
                 control_url: str = "", count_window: float = 0.02, variance: int = 0,
                 port: int = 0, extra: str = "") -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        db = ":memory:" if role == "worker" else str(tmp / f"{name}.sqlite")
        text = (f"[radlogger]\nqueue_size = 65536\n\n[device:farm]\ndriver = pico_farm\n"
                f"role = {role}\nworker = {name}\ndb = {db}\nport = {self.port}\n"
                f"token = {TOKEN}\nheartbeat_interval = 0.2\nworker_timeout = 3\n"
                f"tick = 0.02\nboard_grace = 1\n")
        if control_url:
            text += f"control_url = {control_url}\n"
        text += extra + "\n" + boards_ini(f"{name}-", boards, count_window, variance)
        self.ini = write_ini(tmp / f"{name}.ini", text)
        self.proc = DaemonProcess("run", "-c", str(self.ini))

    def wait_up(self) -> None:
        def up() -> bool:
            try:
                get_json(self.url + "/api/health", token=TOKEN)
                return True
            except OSError:
                return self.proc.proc.poll() is not None and _raise(self)
        wait_for(up, 20, message=f"farm daemon at {self.url}")

    def available(self) -> int:
        return int(get_json(self.url + "/available")["amount"])

    def kill(self) -> None:
        self.proc.proc.kill()
        self.proc.proc.wait(10)

    def stop(self) -> int:
        if self.proc.proc.poll() is None:
            self.proc.proc.terminate()
        return self.proc.finish(30)


def _raise(d: Farmd) -> bool:
    raise AssertionError(f"farm daemon ended early; log:\n{d.proc.log()}")


def driver(python: str, *args: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Run the iCEFARM client driver to the end; its JSON lines."""
    out = subprocess.run([python, str(DRIVER), *args], capture_output=True, text=True,
                         timeout=timeout)
    lines = [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert out.returncode == 0 and lines, f"driver failed: {out.stdout}\n{out.stderr}"
    return lines


def hold(python: str, url: str, name: str, amount: int) -> subprocess.Popen[str]:
    return subprocess.Popen([python, str(DRIVER), "hold", url, name, str(amount)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL)


__all__ = ["icefarm_python", "Farmd", "driver", "hold", "get_json", "TOKEN"]
