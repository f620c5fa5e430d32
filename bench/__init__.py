"""Benchmarks of happydial against its peers; ``python bench/run.py`` (see bench/README.md)."""
