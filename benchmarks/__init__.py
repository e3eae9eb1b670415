"""pytest-benchmark suite comparing radloggerd dataflow designs (not part of the installed package)."""
