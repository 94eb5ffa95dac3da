"""Benchmarks of the node runtime, each printing its figures as ratios against a named peer measured in the same
run. `python -m bench` (or `scripts/bench`) runs them all; see `python -m bench --help`."""
