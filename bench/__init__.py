"""Benchmarks of training and generation: `python -m bench` (see bench/README.md). Not part of the app."""
