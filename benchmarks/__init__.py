"""pytest-benchmark suite comparing radloggerd dataflow designs (not installed)."""
