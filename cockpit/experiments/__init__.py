"""The control-node half of an experiment: prompts, baseline, strategies, sweep, collection, correctness, report."""
