"""Benchmarks: the reproduction harness (``python -m benchmarks.reproduce``) and speed measurements."""
