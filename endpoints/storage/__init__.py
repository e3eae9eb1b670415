"""Storage endpoints (csv, jsonl, sqlite, hdf5), their common reader, export and plots.

Each store module keeps its writer (an endpoint) and its reader together, because the two must
agree on one file format; :mod:`radlogger.endpoints.storage.reader` opens any of them.
See README.md.
"""
