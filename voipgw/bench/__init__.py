"""Benchmarks: every figure is a ratio against a baseline measured interleaved in the same run."""
