"""Scheduler backends, a leaf that knows nothing of sweeps or strategies: the `factory` renders a plain `JobSpec`
into `exp_config.json` and `job.slurm`, `slurm` and `local` run it, `queue` lists every job, and `backend` is the
one place that chooses among them."""
