"""Benchmarks (``make bench-…``): figures printed against a baseline measured in the same run."""
