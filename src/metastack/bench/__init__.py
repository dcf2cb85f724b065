"""Benchmarks run through the CLI: `metastack bench bootstorm`."""
