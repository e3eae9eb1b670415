"""Lag processing (an XF correlator's back half): normalize, FFT, integrate; and isolation.

``widar.lagset -> lag_normalize -> widar.lagset_norm -> lag_fft -> widar.spectrum ->
integrate -> widar.spectrum_int``; each step is an endpoint that publishes on a derived topic,
batches its numpy math over the lag sets waiting in its inbox, and idles when nothing
subscribes to its output.  ``isolated`` runs a group of them in a child process.
"""
