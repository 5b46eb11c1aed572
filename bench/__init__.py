"""Benchmarks (not tests): GPU throughput and CPU orchestration overhead."""
