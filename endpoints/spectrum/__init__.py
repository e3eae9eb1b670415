"""Spectrum processing: ``fft`` (I/Q -> dBFS), ``calibrate`` (dBFS -> dBm) and the ``spectrum``
sink (store, latest + waterfall PNG).  Chained by subscriptions only:
``wsa1.iq -> fft -> wsa1.spectrum -> calibrate -> wsa1.spectrum_dbm -> spectrum``.
See README.md in this folder.
"""
