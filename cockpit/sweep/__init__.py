"""A sweep of the parallelism strategies, from plan to collected rows: `plan` makes the run folder, `execute` runs
it through the `pipeline` (one job per strategy, `retry` after a failure, the `manifest` rewritten after every
change), `progress` follows the ranks live, `collect` turns their shards into the run's tables, and `baseline`
fills in reference completions from an endpoint."""
