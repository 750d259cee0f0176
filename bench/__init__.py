"""Reproducible benchmarks: each prints a short table and writes JSON (bench/results/)."""
