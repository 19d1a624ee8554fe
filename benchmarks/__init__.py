"""Benchmarks: timing runs that report medians and p99 against a baseline from the same run."""
