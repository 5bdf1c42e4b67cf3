"""Benchmarks, each runnable as `python -m loadtests.bench.<name>` from the repository root."""
