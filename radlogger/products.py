"""What tells a correlator's output products apart: one home for the metadata names that the lag
processing groups by, the dashboard keeps one spectrum per, and the stores index.

WIDAR lag sets and spectra of one topic mix every baseline, baseband, subband, polarization and
phase bin; the meta fields below identify one product.  Stores index ``baseline`` (the station
pair, ``"1-2"``) rather than the two station numbers, so a user selects ``--where baseline=1-2``.
"""

from __future__ import annotations

__all__ = ["PRODUCT_FIELDS", "PRODUCT_KEYS"]

#: meta fields that identify one product of a topic (as the WIDAR device writes them)
PRODUCT_FIELDS = ("station_x", "station_y", "baseband", "subband", "polarization", "phase_bin")

#: the store-level keys: the station pair as one ``baseline``, then the rest
PRODUCT_KEYS = ("baseline", "baseband", "subband", "polarization", "phase_bin")
