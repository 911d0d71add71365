"""Historical mode: N complete runs as fast as the models go, into the store or as historian CSV exports.

`generate` steps the plant (simulators/engine.py) at the scenario's model step and records every
signal once per `sample_interval_s` of plant time (the same signals the live mode publishes, with the
same sensor noise and faults; see simulators/signals.py and simulators/faults.py). It stops when the
last run's turnaround is over and the recovery line is idle. Each run's truth goes to
<truth_dir>/<batch_id>.json (simulators/truth.py).

Outputs (series are named by the site config's tags, so the data looks as if collected):
- `write_store`: arrays through TimeSeriesStore.write_arrays, source timestamps, OPC UA status;
- `write_csv`: historian-style exports, one file per equipment, <out>/historian/<equipment>.csv: a
  `timestamp` column (ISO-8601 UTC, µs, Z) and one column per tag; an empty cell is no sample at that
  time or a sample with bad status (wide files carry no status; the long format `timestamp,tag,value,
  status` does); text tags (batch id, phase) are text;
- lab results delivered as CSV: <lab_dir>/<batch_id>.csv (simulators/lab.py).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from biopilot.ids import inside
from biopilot.samples import GOOD, Sample, from_us, to_us
from biopilot.units import Transform
from simulators import lab as lab_mod
from simulators.engine import (
    Event,
    FermentationEnded,
    LabSample,
    PlantModel,
    RunStarted,
    UnitRunEnded,
    UnitSpec,
)
from simulators.faults import FaultSchedule, message_status
from simulators.fermenter import FermenterState
from simulators.progress import Progress
from simulators.recovery import UnitKind
from simulators.scenario import FaultKind, Scenario
from simulators.signals import FERMENTER_OPCUA, LAB, OFFGAS, RECOVERY_SIGNALS, Signal, measure
from simulators.truth import TruthBook


@dataclass
class Column:
    """The readings of one published signal."""

    equipment: str
    signal: Signal
    source: str  # "opcua" or the MQTT channel "<equipment>/<offgas|state|lab>"
    field: str  # OPC UA variable or JSON field
    t_h: np.ndarray  # plant time [h since the start]
    values: np.ndarray  # float64, or object (str) for text signals
    status: np.ndarray  # int64 OPC UA status codes
    ts_us: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # source timestamps

    @property
    def key(self) -> str:
        return f"{self.equipment}/{self.signal.name}"


@dataclass
class History:
    scenario: Scenario
    start: datetime
    end: datetime
    runs: int
    columns: list[Column]
    truths: dict[str, dict[str, Any]]
    lab: list[LabSample]
    traces: dict[str, list[tuple[float, FermenterState]]]  # per fermenter: (t_h, model state) per sample
    sim_seconds: float  # wall time spent stepping the models and recording

    def column(self, key: str) -> Column:
        for c in self.columns:
            if c.key == key:
                return c
        raise KeyError(key)

    @property
    def n_samples(self) -> int:
        return sum(len(c.t_h) for c in self.columns)


class Recorder:
    """Drives a PlantModel and records its noise-free signals every `every` steps."""

    def __init__(
        self,
        model: PlantModel,
        *,
        truth_dir: Path | None = None,
        lab_dir: Path | None = None,
        keep_traces: bool = False,
    ) -> None:
        self.model = model
        sc = model.scenario.scenario
        self.dt_h = sc.model_step_s / 3600
        self.every = round(sc.sample_interval_s / sc.model_step_s)
        self.faults = FaultSchedule(model.scenario.faults)
        self.book = TruthBook(model.scenario, model.start, self.dt_h, truth_dir)
        self.lab_dir = lab_dir
        self.keep_traces = keep_traces
        self.times: list[float] = []
        self.rows: dict[str, list[dict[str, float | str]]] = {
            eq: [] for eq in (*model.fermenters, *model.units)
        }
        self.traces: dict[str, list[tuple[float, FermenterState]]] = {eq: [] for eq in model.fermenters}
        self.lab: list[LabSample] = []
        self.steps = 0
        self.sim_seconds = 0.0
        self.lab_until_h: float | None = None  # lab results reported after this are not in `columns`
        self.on_event: Callable[[Event], None] | None = None

    def record(self) -> None:
        m = self.model
        self.times.append(m.t_h)
        for eq, f in m.fermenters.items():
            self.rows[eq].append(m.fermenter_signals(eq))
            if self.keep_traces and f.run is not None:
                self.traces[eq].append((m.t_h, f.run.state))
        for eq in m.units:
            self.rows[eq].append(m.unit_signals(eq))

    def handle(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, RunStarted):
                self.faults.run_started(ev.plan.number, ev.t_h)
            elif isinstance(ev, LabSample):
                self.lab.append(ev)
                if self.model.scenario.lab.delivery == "csv" and self.lab_dir is not None:
                    lab_mod.append_csv(
                        self.lab_dir,
                        batch_id=ev.batch_id,
                        sampled_at=self.model.at(ev.t_h),
                        volume_l=ev.volume_l,
                        values=ev.measured,
                    )
            elif isinstance(ev, FermentationEnded):
                self.book.fermentation(ev)
            elif isinstance(ev, UnitRunEnded):
                self.book.unit(ev)
            if self.on_event is not None:
                self.on_event(ev)

    def run(self, done: Callable[[], bool]) -> None:
        """Step and record until done() (checked at each recording), then record once more."""
        t0 = time.perf_counter()
        m, every, dt = self.model, self.every, self.dt_h
        while True:
            if self.steps % every == 0:
                self.record()
                if done():
                    break
            events = m.step(dt)
            self.steps += 1
            if events:
                self.handle(events)
        self.sim_seconds += time.perf_counter() - t0

    # -- readings -------------------------------------------------------------------------------------
    def columns(self, rng: np.random.Generator) -> list[Column]:
        """Readings of everything recorded: sensor noise, signal faults, message status, protocol faults,
        source timestamps (with clock skew)."""
        t = np.asarray(self.times)
        cols: list[Column] = []
        m = self.model
        for eq in m.fermenters:
            rows = self.rows[eq]
            for sig in FERMENTER_OPCUA:
                cols.append(self._column(eq, sig, "opcua", sig.name, t, [r[sig.name] for r in rows], rng))
            for sig, fld in OFFGAS:
                cols.append(self._column(eq, sig, f"{eq}/offgas", fld, t, [r[sig.name] for r in rows], rng))
        for eq, u in m.units.items():
            rows = self.rows[eq]
            for sig in RECOVERY_SIGNALS[UnitKind(u.kind)]:
                cols.append(
                    self._column(eq, sig, f"{eq}/state", sig.name, t, [r[sig.name] for r in rows], rng)
                )
        if m.scenario.lab.delivery == "mqtt":
            for eq in m.fermenters:
                until = self.lab_until_h
                mine = [s for s in self.lab if s.equipment == eq and (until is None or s.report_t_h <= until)]
                tl = np.asarray([s.t_h for s in mine])
                for sig in LAB:
                    values = np.asarray([s.measured[sig.name] for s in mine], dtype=float)
                    cols.append(
                        Column(
                            eq, sig, f"{eq}/lab", sig.name, tl, values, np.full(len(tl), GOOD, dtype=np.int64)
                        )
                    )
        for c in cols:
            if not c.signal.text:
                self.faults.apply(c.key, c.t_h, c.values, c.status)
        by_source: dict[str, list[Column]] = {}
        for c in cols:
            if c.source != "opcua":
                by_source.setdefault(c.source, []).append(c)
        for group in by_source.values():
            status = message_status([c.status for c in group])
            for c in group:
                c.status = status.copy()
        start_us = to_us(m.start)
        out = []
        for c in cols:
            if c.source == "opcua":
                drop = self.faults.down(FaultKind.OPCUA_RESTART, c.t_h)
            else:
                drop = self.faults.down(FaultKind.MQTT_DISCONNECT, c.t_h, buffered=False)
            if drop.any():
                keep = ~drop
                c.t_h, c.values, c.status = c.t_h[keep], c.values[keep], c.status[keep]
            skew = self.faults.skew_array(c.source, c.t_h)
            c.ts_us = (
                start_us + np.round(c.t_h * 3.6e9).astype(np.int64) + np.round(skew * 1e6).astype(np.int64)
            )
            out.append(c)
        return out

    @staticmethod
    def _column(
        eq: str, sig: Signal, source: str, fld: str, t: np.ndarray, raw: list[Any], rng: np.random.Generator
    ) -> Column:
        status = np.full(len(t), GOOD, dtype=np.int64)
        if sig.text:
            return Column(eq, sig, source, fld, t, np.asarray(raw, dtype=object), status)
        return Column(eq, sig, source, fld, t, measure(sig, np.asarray(raw, dtype=float), rng), status)

    def history(self, runs: int, rng: np.random.Generator | None = None) -> History:
        rng = rng if rng is not None else np.random.default_rng([self.model.scenario.seed, 2])
        return History(
            self.model.scenario,
            self.model.start,
            self.model.now(),
            runs,
            self.columns(rng),
            self.book.docs,
            self.lab,
            self.traces,
            self.sim_seconds,
        )


def generate(
    scenario: Scenario,
    units: list[UnitSpec],
    *,
    runs: int,
    start: datetime | None = None,
    truth_dir: Path | None = None,
    lab_dir: Path | None = None,
    progress: Progress | None = None,
    keep_traces: bool = False,
) -> History:
    """Simulate `runs` complete runs (and their recovery) from `start` (default: the scenario's)."""
    model = PlantModel(scenario, units, start or scenario.scenario.start, max_runs=runs)
    rec = Recorder(model, truth_dir=truth_dir, lab_dir=lab_dir, keep_traces=keep_traces)
    if progress is not None:
        progress.total = runs

        def tick(ev: Event) -> None:
            if isinstance(ev, FermentationEnded):
                progress.advance(1, ev.batch_id)

        rec.on_event = tick
    rec.run(lambda: model.next_run > runs and not model.busy())
    t0 = time.perf_counter()
    history = rec.history(runs)
    history.sim_seconds += time.perf_counter() - t0
    if progress is not None:
        progress.finish()
    return history


# -- outputs ------------------------------------------------------------------------------------------
def to_samples(history: History, tags: dict[tuple[str, str], str]) -> Iterator[Sample]:
    """Samples of every column a tag collects, series named by the tag."""
    times: dict[int, datetime] = {}
    for c in history.columns:
        name = tags.get((c.equipment, c.signal.name))
        if name is None:
            continue
        values = c.values.tolist()
        for us, value, status in zip(c.ts_us.tolist(), values, c.status.tolist(), strict=True):
            ts = times.get(us)
            if ts is None:
                ts = times[us] = from_us(us)
            yield Sample(name, ts, value, status)


def write_store(
    history: History,
    store: Any,
    tags: dict[tuple[str, str], str],
    batch: int | None = 200_000,
    transforms: Mapping[str, Transform] | None = None,
) -> int:
    """Write every tagged column into the store through TimeSeriesStore.write_arrays (arrays in, no Sample
    objects), as the collectors would store them: with the tags' transforms (tag → scale, offset) applied
    to numeric columns. `batch`: samples per write_arrays call (None: a column per call; the store commits
    long columns in chunks of its own)."""
    n = 0
    for c in history.columns:
        name = tags.get((c.equipment, c.signal.name))
        if name is None or len(c.ts_us) == 0:
            continue
        values = c.values
        transform = (transforms or {}).get(name)
        if transform is not None and values.dtype != object:
            values = transform(values)
        step = len(c.ts_us) if batch is None else batch
        for a in range(0, len(c.ts_us), step):
            b = a + step
            n += store.write_arrays(name, c.ts_us[a:b], values[a:b], c.status[a:b])
    return n


def write_csv(
    history: History, out_dir: Path, tags: dict[tuple[str, str], str], fmt: str = "wide"
) -> list[Path]:
    """Historian exports, one file per equipment: <out_dir>/historian/<equipment>.csv.

    wide: `timestamp` + one column per tag; an empty cell is no sample (a bad-status sample is left
    empty too: a wide export has no room for a status). long: `timestamp,tag,value,status`, one row per
    sample, status the OPC UA code."""
    folder = out_dir / "historian"
    folder.mkdir(parents=True, exist_ok=True)
    by_eq: dict[str, list[tuple[str, Column]]] = {}
    for c in history.columns:
        name = tags.get((c.equipment, c.signal.name))
        if name is not None:
            by_eq.setdefault(c.equipment, []).append((name, c))
    paths = []
    for eq, cols in by_eq.items():
        path = inside(folder, f"{eq}.csv", "equipment id")  # ids are checked at config load too
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            if fmt == "long":
                w.writerow(["timestamp", "tag", "value", "status"])
                for name, c in cols:
                    stamps = _stamps(c.ts_us)
                    w.writerows(
                        (t, name, v, s)
                        for t, v, s in zip(stamps, c.values.tolist(), c.status.tolist(), strict=True)
                    )
            else:
                all_ts = np.unique(np.concatenate([c.ts_us for _, c in cols]))
                cells = []
                for _, c in cols:
                    col = np.full(len(all_ts), "", dtype=object)
                    text = np.asarray([str(v) for v in c.values.tolist()], dtype=object)
                    text[(c.status & 0x80000000) != 0] = ""
                    col[np.searchsorted(all_ts, c.ts_us)] = text
                    cells.append(col)
                w.writerow(["timestamp", *(name for name, _ in cols)])
                w.writerows(zip(_stamps(all_ts), *(col.tolist() for col in cells), strict=True))
        paths.append(path)
    return paths


def _stamps(ts_us: np.ndarray) -> list[str]:
    """ISO-8601 UTC with microseconds and a Z."""
    return np.datetime_as_string(ts_us.astype("datetime64[us]"), unit="us", timezone="UTC").tolist()
