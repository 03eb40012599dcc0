"""Benchmarks: the runner behind `make bench` (bench/run.py) and its pieces."""
