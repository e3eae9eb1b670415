"""``radloggerd simulate wsa4000``: the simulator (simulator.py) standalone, until interrupted."""

from __future__ import annotations

import signal as signals
import threading

import click

from .scpi import DEFAULT_CONTROL_PORT, DEFAULT_DATA_PORT
from .simulator import WSA4000Simulator
from .waveform import parse_tone

__all__ = ["cli"]


@click.command(name="wsa4000")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to bind (loopback unless you mean to expose it)")
@click.option("--control-port", default=DEFAULT_CONTROL_PORT, show_default=True, type=int,
              help="SCPI control port (0 = any free port)")
@click.option("--data-port", default=DEFAULT_DATA_PORT, show_default=True, type=int,
              help="VRT data port (0 = any free port)")
@click.option("--tone", "tones", multiple=True, metavar="OFFSET[:AMPLITUDE]",
              help="tone offset from centre in Hz and amplitude (fraction of full scale, or "
                   "dBm with a dBm suffix), e.g. 1e6:0.5 or -2e6:-40dBm; repeatable")
@click.option("--noise", default=1e-3, show_default=True, type=float,
              help="noise std per I/Q component, fraction of full scale")
@click.option("--seed", default=0, show_default=True, type=int, help="noise seed")
@click.option("--spectral-inversion", is_flag=True, help="send conjugated (inverted) spectra "
              "and set the trailer's spectral-inversion indicator")
@click.option("--reflevel", default=None, type=float,
              help="fixed reference level in dBm (default: from RF/IF gain)")
@click.option("--stream-rate", default=0.0, show_default=True, type=float,
              help="streaming packets/s (0 = as fast as the client reads)")
@click.option("--drop-every", default=0, show_default=True, type=int,
              help="when streaming, lose every Nth data packet (sample-loss test)")
@click.option("--serial", default="SIM00001", show_default=True, help="serial number in *IDN?")
def cli(host: str, control_port: int, data_port: int, tones: tuple[str, ...], noise: float,
        seed: int, spectral_inversion: bool, reflevel: float | None, stream_rate: float,
        drop_every: int, serial: str) -> None:
    """Run a simulated ThinkRF WSA4000 (SCPI + VRT over TCP) until interrupted."""
    try:
        parsed = [parse_tone(t) for t in tones]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tone") from None
    sim = WSA4000Simulator(host, control_port, data_port, parsed, noise, seed,
                           spectral_inversion, reflevel, stream_rate, drop_every, serial=serial)
    done = threading.Event()
    for sig in (signals.SIGINT, signals.SIGTERM):  # before listening: a client may stop us
        signals.signal(sig, lambda *_: done.set())
    try:
        sim.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{control_port}/{data_port}: {exc} "
                                   "(is another simulator running? choose other ports)") \
            from None
    click.echo(f"WSA4000 simulator: control {host}:{sim.control_port}, data {host}:"
               f"{sim.data_port}; Ctrl-C to stop")
    while not done.wait(0.5):
        pass
    sim.stop()
    click.echo(f"served {sim.connections} control connections, {sim.captures} captures, "
               f"{sim.packets_sent} data packets")

