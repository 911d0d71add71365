"""Faults, scripted by simulated time in the scenario ([[faults]], simulators/scenario.py).

Each fault is active from `at_h` hours after the start (fill) of run `run`, or after the simulation
start without `run`, for `duration_h` hours: the window [start, end). What each kind does to the data:

Signal faults (signal = "<equipment>/<signal>", the simulator's signal name):
- dropout: every sample in the window carries `status` (default Bad_SensorFailure 0x808C0000); the value
  is the reading as usual (meaningless: a bad value must not be used).
- flatline: every sample in the window repeats the last reading before the window, with good status
  (a stuck sensor).
- drift: the reading is offset by rate_per_h × (t − start) [signal unit] in the window, good status.
- spikes: `count` single samples get `magnitude` added: the first sample at or after
  start + i·duration_h/count, i = 0 … count − 1.
For a field of a JSON message (off-gas o2/co2, lab, recovery fields) the status is the message's: a
dropout of one field marks the whole message bad.

Process faults (equipment = "<fermenter>"; the plant itself misbehaves, every sensor tells the truth):
- feed_pump: the feed pump delivers `factor` × its set flow (0: stopped); FeedRate reads what is delivered,
  and the culture, short of substrate, respires less (DO up, agitation and off-gas CO2 down).
- oxygen_transfer: kLa is multiplied by `factor` (foaming, an antifoam overdose); the DO cascade raises the
  agitator speed to make up for it and, at its maximum, the air flow: DO dips until they catch up.
They act in the model (simulators/engine.py sets FermenterParams.feed_pump_factor / kla_factor for the
window), in live and historical mode alike. The run's truth JSON lists every fault of the run with its
window and the signals it shows on (simulators/truth.py).

Protocol faults:
- opcua_restart: the OPC UA server stops at the start of the window and serves again (a fresh server on
  the same endpoint, same namespace and browse paths) at its end; values of the window are never served.
- mqtt_disconnect: the MQTT publisher disconnects for the window; with buffer = false the messages of the
  window are dropped (not published), with buffer = true they are kept and published after the
  reconnect, in order, with their source timestamps.
- clock_skew: source timestamps of `source` ("opcua" or an MQTT channel "<equipment>/<channel>") are
  shifted by skew_s seconds in the window (duration_h = 0: to the end).
- malformed: at the start of the window, `count` malformed payloads are published on the channel's
  topic, cycling through MALFORMED_PAYLOADS; they are counted apart (`malformed`) and never as values.
In historical mode the protocol faults shape the data as a collector would have stored it: the window of
an OPC UA restart or of an unbuffered MQTT disconnect has no samples of that protocol; skewed sources
have shifted timestamps; malformed payloads do not exist (there is no payload).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biopilot.samples import GOOD
from simulators.scenario import Fault, FaultKind

MALFORMED_PAYLOADS: tuple[bytes, ...] = (
    b'{"ts": "2025-01-01T00:00:00Z", "o2": 20.9',  # truncated JSON
    b"not json at all",
    b'["a", "list"]',  # JSON, not an object
    b'{"ts": "yesterday", "status": 0, "o2": 20.9, "co2": 0.04}',  # bad timestamp
    b'{"ts": "2025-01-01T00:00:00Z", "status": "maybe", "o2": 20.9}',  # bad status
    b'{"ts": "2025-01-01T00:00:00Z", "status": 0, "o2": "twenty", "co2": null}',  # wrong types
    b'{"ts": "2025-01-01T00:00:00Z", "status": 0, "o2": 1e999}',  # not finite
    b"\xff\xfe\x00garbage",  # not UTF-8
)


@dataclass(frozen=True)
class Window:
    start_h: float
    end_h: float  # inf for a skew without duration

    def contains(self, t_h: float) -> bool:
        """start ≤ t < end, with a tolerance for the rounding of plant time summed over many steps."""
        return self.start_h - 1e-9 <= t_h < self.end_h - 1e-9


class FaultSchedule:
    """The scenario's faults with their windows in plant time [h since the simulation start]. Windows
    of faults tied to a run are known once the run has started (`run_started`)."""

    def __init__(self, faults: list[Fault]) -> None:
        self.faults = list(faults)
        self.windows: dict[int, Window] = {}
        self._memory: dict[int, float] = {}  # flatline: the held reading
        self._spikes_done: dict[int, set[int]] = {}
        self._last: dict[str, float] = {}  # last reading per signal (before faults)
        for i, f in enumerate(self.faults):
            if f.run is None:
                self.windows[i] = self._window(f, 0.0)

    @staticmethod
    def _window(f: Fault, origin_h: float) -> Window:
        start = origin_h + f.at_h
        if f.kind == FaultKind.CLOCK_SKEW and f.duration_h == 0:
            return Window(start, float("inf"))
        return Window(start, start + f.duration_h)

    def run_started(self, number: int, t_h: float) -> None:
        for i, f in enumerate(self.faults):
            if f.run == number:
                self.windows[i] = self._window(f, t_h)

    def of_kind(self, *kinds: FaultKind) -> list[tuple[Fault, Window]]:
        return [
            (f, self.windows[i]) for i, f in enumerate(self.faults) if f.kind in kinds and i in self.windows
        ]

    def signal_keys(self) -> set[str]:
        return {f.signal for f in self.faults if f.signal}

    # -- signal faults --------------------------------------------------------------------------------
    def apply(self, key: str, t_h: np.ndarray, values: np.ndarray, status: np.ndarray) -> None:
        """Apply the signal faults of `key` ("<equipment>/<signal>") in place to readings at plant times
        t_h (in time order). Called on a whole history at once, or tick by tick in live mode."""
        if len(t_h) == 0:
            return
        raw_last = float(values[-1])
        for i, f in enumerate(self.faults):
            if f.signal != key or i not in self.windows:
                continue
            w = self.windows[i]
            if f.kind == FaultKind.SPIKES:
                done = self._spikes_done.setdefault(i, set())
                for k in range(f.count):
                    if k in done:
                        continue
                    at = w.start_h + k * f.duration_h / f.count
                    j = int(np.searchsorted(t_h, at - 1e-9))
                    if j < len(t_h):
                        values[j] += f.magnitude
                        done.add(k)
                continue
            mask = (t_h >= w.start_h - 1e-9) & (t_h < w.end_h - 1e-9)
            if not mask.any():
                continue
            if f.kind == FaultKind.DROPOUT:
                status[mask] = f.status
            elif f.kind == FaultKind.FLATLINE:
                held = self._memory.get(i)
                if held is None:
                    j = int(np.argmax(mask))
                    held = float(values[j - 1]) if j > 0 else self._last.get(key, float(values[j]))
                    self._memory[i] = held
                values[mask] = held
            elif f.kind == FaultKind.DRIFT:
                values[mask] += f.rate_per_h * (t_h[mask] - w.start_h)
        self._last[key] = raw_last

    # -- protocol faults --------------------------------------------------------------------------------
    def skew_s(self, source: str, t_h: float) -> float:
        """Clock skew [s] of a source at plant time t_h."""
        return sum(
            f.skew_s for f, w in self.of_kind(FaultKind.CLOCK_SKEW) if f.source == source and w.contains(t_h)
        )

    def skew_array(self, source: str, t_h: np.ndarray) -> np.ndarray:
        out = np.zeros(len(t_h))
        for f, w in self.of_kind(FaultKind.CLOCK_SKEW):
            if f.source == source:
                out[(t_h >= w.start_h - 1e-9) & (t_h < w.end_h - 1e-9)] += f.skew_s
        return out

    def down(self, kind: FaultKind, t_h: np.ndarray, *, buffered: bool | None = None) -> np.ndarray:
        """Mask of times inside a window of `kind` (mqtt_disconnect: only unbuffered with buffered=False)."""
        out = np.zeros(len(t_h), dtype=bool)
        for f, w in self.of_kind(kind):
            if buffered is not None and f.buffer != buffered:
                continue
            out |= (t_h >= w.start_h - 1e-9) & (t_h < w.end_h - 1e-9)
        return out


def message_status(statuses: list[np.ndarray]) -> np.ndarray:
    """One status per JSON message from the statuses of its fields: the first field's non-good status
    (bad codes are the largest, so the maximum is taken)."""
    if not statuses:
        return np.zeros(0, dtype=np.int64)
    out = np.full_like(statuses[0], GOOD)
    for s in statuses:
        out = np.maximum(out, s)
    return out
