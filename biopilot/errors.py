"""The one small error hierarchy. Every error a user can cause is a BioPilotError with a message
that names the problem; the CLI prints it on one line, without a traceback."""


class BioPilotError(Exception):
    """Base of every error BioPilot raises on purpose."""


class ConfigError(BioPilotError):
    """A site configuration file is unreadable or invalid."""


class StoreError(BioPilotError):
    """The store cannot be opened, read or written."""


class SourceError(BioPilotError):
    """A plant source (OPC UA server, MQTT broker) is misconfigured or unreachable."""
