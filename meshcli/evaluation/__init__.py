"""Benchmarks' official metrics, for checking a run against ground truth."""
