"""Benchmarks: each script prints its figure next to a baseline measured in the same run.

Run from the repo root as ``python -m bench.bench_<name>``. No timing assertions live in tests.
"""
