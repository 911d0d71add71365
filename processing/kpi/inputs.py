"""What the KPI families share: the run's stored data read once (RunData), signals converted to the
engine's units once per tag through biopilot.units, lab series in g/L, and the Kpi values they return.

Engine units: liquid flows [L/h], volumes [L], gas flows [L/min at the meter's reference], gas fractions
[mol/mol], power [kW], energy [kWh], steam [kg/h], utility water [m³/h], concentrations [g/L], time [h since
the run's start].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

import numpy as np

from biopilot import units
from biopilot.config import (
    TITER_ANALYTES,
    EquipmentKind,
    ProcessSpec,
    Role,
    SiteConfig,
    Tag,
    liquid_density,
    process_spec,
)
from biopilot.records import KpiRecord, LabResult, Phase, Run, SeriesData
from biopilot.samples import from_us, to_us
from processing.energy import Integral, gap_limits_h
from processing.kpi.names import unit_of
from processing.signals import Aligned, align, uncertain, usable

Reader = Callable[[str, datetime, datetime], SeriesData]


class Clock:
    """Sample times [h since the run's start] shared by the tags of a run that were read with the same
    timestamps (RunData reads each distinct set once), with their gap limits computed once, on first use."""

    def __init__(self, t: np.ndarray) -> None:
        self.t = t
        self._windows: dict[tuple[float, float], tuple[np.ndarray, Clock]] = {}

    @cached_property
    def gap_limits(self) -> np.ndarray:
        """gap_limits_h of t: per interval, the longest it may be without being a gap [h]."""
        return gap_limits_h(self.t)

    def window(self, t0: float, t1: float) -> tuple[np.ndarray, Clock]:
        """(mask of the times in [t0, t1], the Clock of those times), made once per window."""
        if (t0, t1) not in self._windows:
            keep = (self.t >= t0) & (self.t <= t1)
            self._windows[t0, t1] = (keep, Clock(self.t[keep]))
        return self._windows[t0, t1]


@dataclass(frozen=True)
class Signal:
    """A tag's samples over the run, converted: t [h since run start], values [engine unit], status;
    clock: the run's Clock these times come from (None: t is a window or was made elsewhere)."""

    tag: str
    t: np.ndarray
    v: np.ndarray
    status: np.ndarray
    clock: Clock | None = field(default=None, compare=False, repr=False)

    @property
    def gap_limits(self) -> np.ndarray:
        """Per interval of t, the longest it may be without being a gap [h] (processing.energy.gap_limits_h),
        computed once per clock: the integrals of tags sampled at the same times share it."""
        clock = self._clock
        return clock.gap_limits if clock is not None else gap_limits_h(self.t)

    @property
    def usable_gap_limits(self) -> np.ndarray:
        """The gap limits of the usable samples' times (what align bridges by): the clock's when every
        sample is usable."""
        ok = usable(self.v, self.status)
        return self.gap_limits if ok.all() else gap_limits_h(self.t[ok])

    def at(self, t_target_h: np.ndarray) -> Aligned:
        """The signal interpolated at t_target_h [h], never across a gap (processing.signals.align)."""
        return align(t_target_h, self.t, self.v, self.status, gap_limits=self.usable_gap_limits)

    def window(self, t0: float, t1: float) -> Signal:
        """The samples with t0 ≤ t ≤ t1 [h] (tags on the same clock share the window's clock)."""
        if self._clock is not None:
            keep, clock = self._clock.window(t0, t1)
            return Signal(self.tag, clock.t, self.v[keep], self.status[keep], clock)
        keep = (self.t >= t0) & (self.t <= t1)
        return Signal(self.tag, self.t[keep], self.v[keep], self.status[keep])

    @property
    def _clock(self) -> Clock | None:
        """The clock, when t is its times (not a copy or a selection)."""
        return self.clock if self.clock is not None and self.clock.t is self.t else None

    @property
    def any_uncertain(self) -> bool:
        return bool(np.any(uncertain(self.status) & usable(self.v, self.status)))


@dataclass(frozen=True)
class LabSeries:
    """Lab values of one analyte (and its synonyms) in time order: t [h], value [g/L], sample volume [L];
    `refused`: units of results that could not be converted to g/L (left out)."""

    t: np.ndarray
    v: np.ndarray
    volume: np.ndarray
    refused: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.t)

    def between(self, t0: float, t1: float) -> np.ndarray:
        return (self.t >= t0) & (self.t <= t1)


@dataclass(frozen=True)
class Kpi:
    """A KPI as a family computed it: value in KPI_UNITS' unit (None: unknown), coverage per input, flags."""

    name: str
    value: float | None
    unit: str
    inputs: Mapping[str, float] = field(default_factory=dict)
    flags: tuple[str, ...] = ()

    def flagged(self, *flags: str, drop_value: bool = False) -> Kpi:
        """This KPI with more flags (each once); drop_value: and without its value."""
        new = tuple(f for f in flags if f not in self.flags)
        return Kpi(self.name, None if drop_value else self.value, self.unit, self.inputs, self.flags + new)


def kpi(
    name: str,
    value: float | None,
    inputs: Mapping[str, float] | None = None,
    flags: Sequence[str] = (),
) -> Kpi:
    """A Kpi in its unit (processing.kpi.names.KPI_UNITS); a value that is not finite (NaN from a missing
    input) becomes None."""
    if value is not None and not math.isfinite(value):
        value = None
    return Kpi(name, value, unit_of(name), dict(inputs or {}), tuple(dict.fromkeys(flags)))


@dataclass(frozen=True)
class Times:
    """The run's landmarks [h since its start]; `assumed`: flags for the ones no phase gave."""

    run_h: float
    inoculation: float
    harvest: float  # start of the harvest phase: growth ends
    harvest_end: float
    assumed: tuple[str, ...] = ()

    @property
    def growth_h(self) -> float:
        return max(self.harvest - self.inoculation, 0.0)


class RunData:
    """The stored data of one run: each tag read once, converted once (one factor per array).

    `read(tag, start, end)` returns stored samples (start ≤ ts < end). Lab results are the catalog's plus
    the samples of tags with a `lab` table; titer series add the samples of `titer` tags (an online product
    analyser: titer, no sample volume)."""

    def __init__(
        self,
        config: SiteConfig,
        run: Run,
        end: datetime,
        read: Reader,
        *,
        phases: Sequence[Phase] = (),
        lab: Sequence[LabResult] = (),
        upstream: Mapping[str, KpiRecord] | None = None,
        harvested: KpiRecord | None = None,
    ) -> None:
        self.config = config
        self.run = run
        self.end = end
        self._read = read
        self.phases = tuple(phases)
        self.upstream: Mapping[str, KpiRecord] = upstream or {}
        self.harvested = harvested
        self.spec: ProcessSpec = process_spec(config, run.equipment)
        self.kind: EquipmentKind = config.equipment_by_id(run.equipment).kind
        self.run_h = max((end - run.start).total_seconds() / 3600, 0.0)
        self._raw: dict[str, tuple[np.ndarray, Clock, np.ndarray, np.ndarray]] = {}
        self._clocks: list[tuple[np.ndarray, Clock]] = []  # (timestamps [µs], their Clock)
        self.lab = _merge_lab(lab, self._lab_from_tags())

    # -- signals ---------------------------------------------------------------------------------------
    def tags(self, role: Role) -> list[Tag]:
        return self.config.role_tags(self.run.equipment, role)

    def _samples(self, tag: Tag) -> tuple[np.ndarray, Clock, np.ndarray, np.ndarray]:
        """(ts [µs], their Clock, values as stored, status) of a tag in the run, read once."""
        if tag.name not in self._raw:
            data = self._read(tag.name, self.run.start, self.end + timedelta(microseconds=1))
            values = data.values
            values = _floats(values) if values.dtype == object else np.asarray(values, np.float64)  # no copy
            self._raw[tag.name] = (data.ts, self._clock(data), values, data.status)
        return self._raw[tag.name]

    def _clock(self, data: SeriesData) -> Clock:
        """The Clock of these timestamps: the one of a tag read before with the same timestamps, else new."""
        ts = data.ts
        for known, clock in self._clocks:
            if len(known) == len(ts) and (len(ts) == 0 or known[0] == ts[0]) and np.array_equal(known, ts):
                return clock
        clock = Clock(data.hours(to_us(self.run.start)))
        self._clocks.append((ts, clock))
        return clock

    def signal(self, tag: Tag, conversion: units.Conversion) -> Signal:
        """The tag's samples in the run, converted with one factor for the whole array."""
        _, clock, v, status = self._samples(tag)
        return Signal(tag.name, clock.t, conversion(v), status, clock)

    def quantity(self, tag: Tag, to_unit: str) -> Signal:
        """The tag's samples in `to_unit` (its unit was checked against its role when the config loaded)."""
        return self.signal(tag, units.conversion(tag.unit, to_unit))

    def liquid_flow_conversion(self, tag: Tag) -> units.Conversion:
        """A liquid flow tag's unit to L/h (a mass flow through its density: config.liquid_density)."""
        return units.liquid_flow_l_per_h(tag.unit, liquid_density(self.config, tag))

    def liquid_flow(self, tag: Tag) -> Signal:
        """A liquid flow tag in L/h."""
        return self.signal(tag, self.liquid_flow_conversion(tag))

    def volume(self) -> Signal | None:
        """Broth volume [L]: a volume tag, else a weight tag / broth density."""
        for tag in self.tags(Role.VOLUME):
            return self.quantity(tag, "L")
        for tag in self.tags(Role.WEIGHT):
            return self.signal(tag, units.Conversion(units.factor(tag.unit, "kg") / self.spec.broth_density))
        return None

    def stored(self, tag: Tag) -> tuple[np.ndarray, np.ndarray]:
        """(values as stored, status) of a tag in the run: for checks in the tag's own unit."""
        _, _, v, status = self._samples(tag)
        return v, status

    @property
    def read_tags(self) -> list[str]:
        """Names of the tags read so far."""
        return list(self._raw)

    # -- lab results -----------------------------------------------------------------------------------
    def _lab_from_tags(self) -> list[LabResult]:
        """Lab results carried by tags with a `lab` table (biopilot.config.LabTag): each usable sample is one
        result of its analyte at its source timestamp (the sampling time)."""
        out: list[LabResult] = []
        for tag in self.config.tags_of(self.run.equipment):
            if tag.lab is None:
                continue
            ts, _, values, status = self._samples(tag)
            ok = usable(values, status)
            for us, value in zip(ts[ok].tolist(), values[ok].tolist(), strict=True):
                out.append(
                    LabResult(
                        self.run.equipment,
                        from_us(us),
                        tag.lab.analyte,
                        value,
                        tag.unit,
                        tag.lab.sample_volume_l,
                        f"tag:{tag.name}",
                    )
                )
        return out

    def lab_series(self, analytes: Sequence[str]) -> LabSeries:
        """Lab results of these analytes (case-insensitive) in g/L, converted per unit with one factor; for
        titer also the usable samples of `titer` tags (an online analyser: no sample volume), except where a
        lab result of the same time exists."""
        names = {a.lower() for a in analytes}
        rows = [r for r in self.lab if r.analyte.lower() in names]
        refused: list[str] = []
        keep: list[LabResult] = []
        for r in rows:
            if units.CONCENTRATION.fits(r.unit):
                keep.append(r)
            elif r.unit not in refused:
                refused.append(r.unit)
        t = np.array([(r.ts - self.run.start).total_seconds() / 3600 for r in keep], dtype=np.float64)
        raw = np.array([r.value for r in keep], dtype=np.float64)
        v = np.empty(len(keep))
        unit_of = np.array([r.unit for r in keep], dtype=object)
        for unit in set(unit_of.tolist()):
            at = unit_of == unit
            v[at] = units.convert(raw[at], unit, "g/L")
        vol = np.array([r.sample_volume_l for r in keep], dtype=np.float64)
        if names & set(TITER_ANALYTES):
            for tag in self.tags(Role.TITER):
                online = self.quantity(tag, "g/L")
                ok = usable(online.v, online.status) & ~np.isin(online.t, t)
                t = np.concatenate([t, online.t[ok]])
                v = np.concatenate([v, online.v[ok]])
                vol = np.concatenate([vol, np.zeros(int(ok.sum()))])
            order = np.argsort(t, kind="stable")
            t, v, vol = t[order], v[order], vol[order]
        return LabSeries(t, v, vol, tuple(refused))

    def sample_volumes(self, t0: float, t1: float) -> float:
        """Broth removed by lab samples in [t0, t1] [L]: per sampling time the largest volume any of its
        results states (one sample analysed for several analytes is one sample)."""
        by_time: dict[datetime, float] = {}
        for r in self.lab:
            h = (r.ts - self.run.start).total_seconds() / 3600
            if t0 <= h <= t1 and r.sample_volume_l > 0:
                by_time[r.ts] = max(by_time.get(r.ts, 0.0), r.sample_volume_l)
        return float(sum(by_time.values()))

    # -- time ------------------------------------------------------------------------------------------
    def phase_start(self, name: str) -> float | None:
        for p in self.phases:
            if p.name == name:
                return (p.start - self.run.start).total_seconds() / 3600
        return None

    def phase_end(self, name: str) -> float | None:
        for p in self.phases:
            if p.name == name:
                return (p.end - self.run.start).total_seconds() / 3600 if p.end is not None else None
        return None

    def times(self) -> Times:
        """Inoculation (start of [[process]] inoculation_phase), harvest start and end; the run's start and
        end where no phase says, with assumed:… flags."""
        t_inoc = self.phase_start(self.spec.inoculation_phase)
        t_harv = self.phase_start(self.spec.harvest_phase)
        t_harv_end = self.phase_end(self.spec.harvest_phase)
        assumed = []
        if t_inoc is None:
            t_inoc = 0.0
            assumed.append("assumed:inoculation=run_start")
        if t_harv is None:
            t_harv = self.run_h
            assumed.append("assumed:harvest=run_end")
        return Times(
            self.run_h, t_inoc, t_harv, self.run_h if t_harv_end is None else t_harv_end, tuple(assumed)
        )

    def coverage(self, integral: Integral | float, window_h: float | None = None) -> float:
        """Share [0..1] of the window (default: the run) that an integral covered (or covered hours)."""
        window = self.run_h if window_h is None else window_h
        covered = integral.covered_h if isinstance(integral, Integral) else integral
        return min(covered / window, 1.0) if window > 0 else 0.0


def _merge_lab(catalog: Sequence[LabResult], from_tags: Sequence[LabResult]) -> list[LabResult]:
    """Catalog results and tag results in time order; a catalog result of the same analyte at the same
    time replaces the tag's (the same sample entered twice is counted once)."""
    have = {(r.analyte.lower(), r.ts) for r in catalog}
    merged = [*catalog, *(r for r in from_tags if (r.analyte.lower(), r.ts) not in have)]
    return sorted(merged, key=lambda r: r.ts)


def _floats(values: np.ndarray) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if isinstance(v, int | float):
            out[i] = float(v)
    return out
