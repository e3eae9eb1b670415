"""Storage endpoints (csv, jsonl, sqlite, hdf5), export and plots.

The writers are here; each format's reader and layout names are in the core,
:mod:`radlogger.store` (the replay device reads stores too), and every writer imports its
format's names from there, so one definition keeps writer and reader in agreement.
:mod:`radlogger.store.reader` opens any store.  See README.md.
"""
