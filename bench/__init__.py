"""Benchmarks: each prints its figures and writes JSON and a plot to bench/results/."""
