"""Benchmarks: run by hand, they print figures and never fail on them."""
