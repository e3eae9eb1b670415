"""WIDAR correlator lag frames: the input stage of a correlator backend.

``frames`` (radloggerd's frame layout, vectorised encode/validate/decode), ``assembler``
(frames in any order -> lag sets), ``driver`` (``widar``: UDP input), ``recording`` (pcap,
rotated), ``replay`` (``widar_replay``; replay to UDP), ``simulator`` (``radloggerd simulate
widar``).  See README.md.
"""
