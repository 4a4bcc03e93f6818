"""Fuzz targets shared by the CI property tests (tests/test_fuzz_*.py) and the long runs (``make fuzz``)."""
