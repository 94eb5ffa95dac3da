"""The control-node cockpit: nodes, jobs, sweeps, their analysis, and the Textual app. Never imports torch."""

__version__ = "0.1.0"
