"""Drives the real iCEFARM client (``icefarm`` 0.1.16) in its own virtualenv; prints JSON lines.

Run by tests/test_pico_farm_icefarm.py and benchmarks/bench_farm.py with the icefarm
virtualenv's python (its pins are not ours):

    python icefarm_driver.py evaluate URL NAME KIND AMOUNT NBITSTREAMS [SEED]
    python icefarm_driver.py hold URL NAME AMOUNT      # reserve, then report events until EOF

``evaluate`` prints ``{"reserved": [...]}``, then ``{"results": [[serial, index, value], ...],
"seconds": s}``.  ``hold`` prints ``{"reserved": [...]}`` and each event as ``{"event": ...,
"serial": ...}``, and ends the reservations when stdin closes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import tempfile
import threading
import time

from icefarm.client.drivers import PulseCountClient, VarMaxClient
from icefarm.client.lib import AbstractEventHandler

BITSTREAM_SIZE = 104_090


_lock = threading.Lock()


def say(obj: object) -> None:
    with _lock:  # events arrive on several socket threads
        print(json.dumps(obj), flush=True)


class Report(AbstractEventHandler):
    def handleEvent(self, event):  # noqa: ANN001 - iCEFARM's interface
        if event.event not in ("results", "devices_available", "initialized"):
            say({"event": event.event, "serial": event.serial})


def evaluate(url: str, name: str, kind: str, amount: int, n: int, seed: int) -> None:
    rng = random.Random(seed)
    folder = tempfile.mkdtemp(prefix="icefarm-bits-")
    paths = []
    for i in range(n):
        p = os.path.join(folder, f"{i}.bin")
        with open(p, "wb") as f:
            f.write(rng.randbytes(BITSTREAM_SIZE))
        paths.append(p)
    log = logging.getLogger("icefarm-driver")
    client = (VarMaxClient if kind == "variance" else PulseCountClient)(url, name, log)
    serials = client.reserve(amount, kind=kind)
    say({"reserved": serials})
    t0 = time.monotonic()
    out = []
    for r in client.evaluateBitstreams(paths):
        index = int(os.path.basename(r.evaluation.filepath).split(".")[0])
        value = r.value if isinstance(r.value, (str, int, float)) or r.value is None else "failed"
        out.append([r.serial, index, value])
    say({"results": out, "seconds": time.monotonic() - t0})
    client.stop()


def hold(url: str, name: str, amount: int) -> None:
    client = PulseCountClient(url, name, logging.getLogger("icefarm-driver"))
    client.addEventHandler(Report(client.server))
    say({"reserved": client.reserve(amount)})
    sys.stdin.read()
    client.stop()


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)
    cmd, url, name = sys.argv[1:4]
    if cmd == "evaluate":
        kind, amount, n = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
        evaluate(url, name, kind, amount, n, int(sys.argv[7]) if len(sys.argv) > 7 else 0)
    else:
        hold(url, name, int(sys.argv[4]))
    os._exit(0)  # the client leaves non-daemon socket threads behind


if __name__ == "__main__":
    main()
