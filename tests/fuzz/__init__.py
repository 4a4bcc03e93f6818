"""Fuzz targets shared by the CI property tests (tests/fuzz/test_*.py) and the long runs (``make fuzz``)."""
