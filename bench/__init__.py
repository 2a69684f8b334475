"""Benchmarks and latency measurement (imports pareco_runtime and export, never the reverse)."""
