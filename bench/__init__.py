"""Benchmarks of flac2all: ``python -m bench --help``."""
