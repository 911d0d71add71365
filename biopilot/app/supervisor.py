"""The supervisor: starts the stages as child processes, watches them, stops them together.

Every child runs in its own session (so a terminal's Ctrl-C reaches the supervisor only, which then stops
the children in order) and, on Linux, is told to exit if the supervisor dies (PR_SET_PDEATHSIG).
A child that exits unexpectedly is restarted with backoff; its log is in <data-dir>/logs/<stage>.log.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

STOP_GRACE_S = 3.5  # after SIGTERM, children get this long before SIGKILL (the demo must be gone in 5 s)
MAX_RESTARTS = 5


def die_with_parent() -> None:
    """preexec_fn: on Linux, SIGTERM this child when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    restart: bool = True
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


class Supervisor:
    def __init__(self, say: callable = print) -> None:  # type: ignore[valid-type]
        self.children: list[Child] = []
        self._stopping = False
        self.say = say

    def add(self, child: Child) -> Child:
        self.children.append(child)
        child.start()
        return child

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def watch(self, poll_s: float = 0.2) -> None:
        """Block until a stop is requested, restarting children that die on their own."""
        while not self._stopping:
            for child in self.children:
                if child.alive() or self._stopping:
                    continue
                code = child.proc.returncode if child.proc else None
                if not child.restart or child.restarts >= MAX_RESTARTS:
                    self.say(
                        f"biopilot: {child.name} exited with code {code}; stopping (log: {child.log_path})"
                    )
                    self.say(child.tail())
                    self._stopping = True
                    break
                child.restarts += 1
                delay = min(2**child.restarts * 0.25, 5.0)
                self.say(
                    f"biopilot: {child.name} exited with code {code}; restarting in {delay:.1f} s "
                    f"(log: {child.log_path})"
                )
                time.sleep(delay)
                child.start()
            time.sleep(poll_s)

    def stop(self) -> None:
        """SIGTERM every child (in reverse start order), then SIGKILL what is left after the grace period."""
        for child in reversed(self.children):
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in reversed(self.children):
            if child.proc is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        for child in self.children:
            if child.alive():
                log.warning("%s did not stop within %.1f s; killing it", child.name, STOP_GRACE_S)
                child.signal(signal.SIGKILL)
                if child.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.proc.wait(timeout=1.0)
            child.close_log()


def wait_http_ok(url: str, timeout: float, is_alive: callable) -> bool:  # type: ignore[valid-type]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_alive():
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False
