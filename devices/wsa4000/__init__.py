"""ThinkRF WSA4000 plugin: SCPI + VITA-49 driver, VRT codec, and a protocol-level simulator.

Modules: ``scpi`` (command table and client), ``vrt`` (packet encoder and streaming parser),
``waveform`` (the simulator's tones and noise), ``instrument`` (the simulated instrument's
behaviour), ``simulator`` (its TCP servers and ``cli``),
``driver`` (:class:`WSA4000Device`).  See README.md in this folder.
"""
