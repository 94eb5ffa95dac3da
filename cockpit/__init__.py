"""The control-node cockpit: nodes, jobs, experiments and the Textual app. Never imports torch."""

__version__ = "0.1.0"
