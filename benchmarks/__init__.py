"""Benchmarks of the pipeline: `python -m benchmarks --help` (see benchmarks/README.md)."""
