"""A longer fuzz run of every decoder of outside data (issue 14), and the table it reports.

Each decoder gets random bytes, mutated valid encodings and hand-made hostile inputs (deep
nesting, 5,000-digit numbers, non-UTF-8, truncations); an *escape* is any exception other than
the decoder's own error type.  The normal suite runs a few hundred cases per decoder
(tests/test_decoders_fuzz.py); this runs as many as a time budget allows::

    python -m benchmarks.fuzz_decoders [seconds per decoder, default 20]

It prints cases, cases/s and escapes per decoder (escapes with a reproducer).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from typing import Any

from radlogger.errors import RadloggerError
from radlogger.measurement import Measurement
from radlogger.options import Option, resolve_options
from radlogger.payload import decode_payload
from radlogger.wire import WireError, decode, decode_frames, encode, encode_frames, join


def _join(data: bytes) -> Any:
    cut = len(data) // 2
    return join(data[:cut], data[cut:])


_OPTIONS = (Option("f", float, 1.0, "", min=0, max=1e6), Option("i", int, 1, "", min=0),
            Option("b", bool, False, ""), Option("l", list, [], ""),
            Option("c", str, "a", "", choices=("a", "b")))


def _ini_values(data: bytes) -> Any:
    text = data.decode("utf-8", "replace")
    for opt in _OPTIONS:
        resolve_options(_OPTIONS, {opt.name: text})


def _farm_arguments(data: bytes) -> Any:
    from radlogger.devices.pico.farm.compat import parse_arguments

    return parse_arguments(data, {"name": str, "amount": int, "serials": list})


#: name -> (decoder, the errors it may raise: counted and answered by its caller)
DECODERS: dict[str, tuple[Callable[[bytes], Any], tuple[type[BaseException], ...]]] = {
    "wire.decode": (decode, (WireError,)),
    "wire.decode_frames": (decode_frames, (WireError,)),
    "wire.join": (_join, (WireError,)),
    "payload.decode_payload": (decode_payload, (WireError,)),
    "ini.values": (_ini_values, (RadloggerError,)),
    "farm.arguments": (_farm_arguments, (RadloggerError,)),
}


def hostile_inputs() -> list[bytes]:
    deep = 100_000
    return [b"[" * deep + b"]" * deep, b"{\"a\":" * deep + b"1" + b"}" * deep, b"[" * deep,
            b"9" * 5000, b"-" + b"9" * 5000, b"1e999999", b"NaN", b"-Infinity", b"\xff\xfe\xfd",
            b'{"topic": "a.b", "value": ' + b"9" * 5000 + b"}", b"", b"\x00" * 64,
            b"RLW1" + b"\xff" * 12, b"RLB1" + b"\xff" * 12, b"RLC1" + b"\x00" * 12,
            encode(Measurement("d", "d.v", 1.5))[:-3],
            encode_frames([Measurement("d", "d.v", i) for i in range(10)])[:-5]]


def mutate(data: bytes, seed: int) -> bytes:
    rng = random.Random(seed)
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif b:
            i = rng.randrange(len(b))
            b[i:i] = b[i:i + rng.randint(1, 64)] * rng.randint(1, 50)
    return bytes(b)


def run(seconds: float) -> list[tuple[str, int, float, list[tuple[str, bytes]]]]:
    seeds = [encode(Measurement("d", "d.v", v)) for v in (1, 2.5, "x", b"\x00", [1, 2])]
    rows = []
    for name, (fn, allowed) in DECODERS.items():
        rng = random.Random(name)
        escapes: list[tuple[str, bytes]] = []
        cases = 0
        t0 = time.perf_counter()
        inputs = iter(hostile_inputs())
        while time.perf_counter() - t0 < seconds:
            data = next(inputs, None)
            if data is None:
                k = rng.randrange(3)
                data = (rng.randbytes(rng.randint(0, 512)) if k == 0
                        else mutate(rng.choice(seeds), rng.randrange(2**32)))
            cases += 1
            try:
                fn(data)
            except allowed:
                pass
            except Exception as exc:  # noqa: BLE001 - an escape: what this run looks for
                escapes.append((f"{type(exc).__name__}: {exc}"[:120], data[:200]))
        rows.append((name, cases, cases / (time.perf_counter() - t0), escapes))
    return rows


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    print("| decoder | cases | cases/s | escapes |\n| --- | ---: | ---: | ---: |")
    failed = False
    for name, cases, rate, escapes in run(seconds):
        print(f"| {name} | {cases:,} | {rate:,.0f} | {len(escapes)} |")
        for what, data in escapes[:3]:
            failed = True
            print(f"  escape: {what}  input: {data!r}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
