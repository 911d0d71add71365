"""The evidence pack's error (its own module so that verifying a pack imports nothing heavy)."""

from biopilot.errors import BioPilotError


class EvidenceError(BioPilotError):
    """An evidence pack cannot be built (inconsistent inputs, an output directory in use) or read."""
