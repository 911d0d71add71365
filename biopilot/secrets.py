"""Secrets: where passwords come from, and keeping them out of logs and health reports.

A password or key is never written in the site config. The config names an environment variable
(`password_env = "PLANT_MQTT_PASSWORD"`), and `read_secret` takes the secret from
  - the variable itself ($PLANT_MQTT_PASSWORD), or
  - the file named by the variable with `_FILE` appended ($PLANT_MQTT_PASSWORD_FILE=/run/secrets/mqtt), the
    convention of Docker and systemd credentials. The file must belong to the user BioPilot runs as and be
    readable by it alone (0600 or 0400); anything looser is refused, naming the file and the fix.

Every secret read is remembered by the process's `SECRETS` registry, and `RedactingFilter` (installed on the
log handlers by the CLI) blanks it, the credentials of a URL (scheme://user:password@host) and the
`Password=b'…'` that asyncua's debug logging prints of a user identity token. `redact` does the same for a
text that leaves the process another way (a connection's last_error in the health report).

The registry is the one piece of process-wide state here: a logging filter cannot be handed the secrets of a
config that is read after logging is set up.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from pathlib import Path

from biopilot.errors import ConfigError

MASK = "***"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# secrets shorter than this are not searched for in text (a 2-letter password would blank half the log)
_MIN_LEN = 4
_PATTERNS = [
    # asyncua's UserNameIdentityToken repr, and any bytes/str password=… field
    (re.compile(r"(?i)(password\s*[=:]\s*)b?(['\"]).*?(?<!\\)\2"), r"\1\2" + MASK + r"\2"),
    # credentials in a URL: scheme://user:password@host
    (re.compile(r"([a-z][a-z0-9+.\-]*://[^\s/:@'\"]*:)[^\s/@'\"]+@", re.IGNORECASE), r"\1" + MASK + "@"),
]


class SecretRegistry:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        if value and len(value) >= _MIN_LEN:
            with self._lock:
                self._values.add(value)

    def redact(self, text: str) -> str:
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, MASK)
        return text


SECRETS = SecretRegistry()


def redact(text: str) -> str:
    """The text without any secret this process read, URL credentials or password fields."""
    return SECRETS.redact(text)


def read_secret(env: str, *, what: str) -> str | None:
    """The secret in $env, else in the file named by $env_FILE (0600, ours); None when neither is set.
    `what` names the config key for messages ("mqtt.brokers.plant.password_env")."""
    if not ENV_NAME.fullmatch(env):
        raise ConfigError(
            f"{what}: names the environment variable that holds the password (letters, digits and _), "
            "not the password itself"
        )
    value = os.environ.get(env)
    if value is None:
        file = os.environ.get(f"{env}_FILE")
        if file is None:
            return None
        value = _read_private_file(Path(file), f"{what} (${env}_FILE)")
    SECRETS.add(value)
    return value


def _read_private_file(path: Path, what: str) -> str:
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path} ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what}: {path} is not a file")
    if st.st_uid != os.getuid():
        raise ConfigError(f"{what}: {path} belongs to another user; a secret file must be BioPilot's own")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{what}: {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"make it private with `chmod 600 {path}`"
        )
    return path.read_text(encoding="utf-8").rstrip("\r\n")


class RedactingFilter(logging.Filter):
    """Blanks secrets in every record a handler emits (message, arguments and traceback text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = SECRETS.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = SECRETS.redact(record.exc_text)
        return True
