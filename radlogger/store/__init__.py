"""The store formats: reading back what the storage endpoints wrote (CSV, JSON lines, SQLite,
HDF5), the value codec and file naming they share.

Core, not an endpoint, because readers outside the storage endpoints need them: the replay
device and the export and plot commands (python-can keeps ``can/io`` in ``can`` the same way).
The writers stay plugins in ``radlogger.endpoints.storage`` and import their format's names
from here.  Optional packages are imported on first use: ``radlogger.store.hdf5`` (h5py) only
when an HDF5 file is read.
"""
