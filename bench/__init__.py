"""Benchmarks: `python -m bench <name> [--size small|large]`; results go to docs/benchmarks.md."""
