"""The one small error hierarchy. Every error a user can cause is a BioPilotError with a message
that names the problem; the CLI prints it on one line, without a traceback."""

from __future__ import annotations

from collections.abc import Sequence


class BioPilotError(Exception):
    """Base of every error BioPilot raises on purpose."""


class ConfigError(BioPilotError):
    """A site configuration file is unreadable or invalid.

    `problems` holds every problem found, one line each ("file: key: message"); the message is that line
    when there is one, else a summary line followed by them."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)


class StoreError(BioPilotError):
    """The store cannot be opened, read or written."""


class SourceError(BioPilotError):
    """A plant source (OPC UA server, MQTT broker) is misconfigured or unreachable."""


class IdError(BioPilotError, ValueError):
    """An equipment, run, batch, tag or trial id that is not safe to use (see biopilot.ids)."""
