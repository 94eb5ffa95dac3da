"""What a sweep's collected rows say: `correctness` against the reference and the baseline, the
`performance_model` and the `bottlenecks` it names per strategy, the `summary` table and plots, the `report`
that writes them, and the `results` the cockpit's results screen shows."""
