"""BioPilot: the shared data record for biotech pilot trials."""

__version__ = "0.1.0"
