"""A real Mosquitto broker for tests: free port on 127.0.0.1, temp config, start/stop/restart.

Used as ``with Mosquitto(tmp_path) as broker: ...`` or through the ``broker`` fixture that a
test module defines with :func:`broker_fixture`.  Skips (with the reason) only when the
``mosquitto`` binary is not installed; CI installs the Debian package.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from conftest import free_port, wait_for

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if Path("/usr/sbin/mosquitto").exists() else None)


def require_mosquitto() -> str:
    if MOSQUITTO is None:
        pytest.skip("the mosquitto binary is not installed (apt-get install mosquitto)")
    return MOSQUITTO


class Mosquitto:
    """One broker process; ``persistence`` keeps sessions and queued messages across restarts."""

    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = True,
                 passwords: dict[str, str] | None = None, extra: str = "") -> None:
        self.binary = require_mosquitto()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persistence = persistence
        self.passwords = passwords
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "mosquitto.log"
        self.starts = 0

    def _write_config(self) -> Path:
        # Started as root, mosquitto would switch to user 'mosquitto', who cannot write the
        # test's temp dir (persistence, log): stay the user running the tests.
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1",
                 "log_dest file " + str(self.log_path),
                 "log_type all",
                 "max_queued_messages 100000", "max_inflight_messages 0"]
        if self.passwords:
            pwfile = self.workdir / "passwords"
            pwfile.write_text("")
            for user, password in self.passwords.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password],
                               check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/",
                      "autosave_interval 0"]
        if self.extra:
            lines.append(self.extra)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 10.0) -> Mosquitto:
        conf = self._write_config()
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.starts += 1

        def listening() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                return True  # exited: reported below
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        try:
            wait_for(listening, timeout, message=f"mosquitto listening on {self.port}")
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}{log}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (the broker saves its persistence database), SIGKILL if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc.stderr is not None:
            proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def broker_fixture(tmp_path: Path) -> Iterator[Mosquitto]:
    """Body of a ``broker`` fixture: a started broker, always stopped afterwards."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
