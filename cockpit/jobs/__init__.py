"""Scheduler backends: job assets, and running them on Slurm or on this machine."""
