"""Baseline references from stored runs: which runs are the baseline (the selection rule), and the
golden-batch envelopes and batch MSPC model built from their stored series, ready to store
(storage/references.py) so live runs and pages use them without computing them again.

The selection rule (`select_baseline_runs`, shared with the trial charter's [baseline] rule,
biopilot.charter.BaselineRule): the closed runs of one equipment, of one product, of kind "baseline", that
started in [since, until). A charter's rule is `select_baseline_runs(catalog.runs(rule.equipment),
equipment=rule.equipment, product=rule.product, kind=rule.kind, since=rule.start, until=rule.end)`.

Reading (`run_on_grid`): each run's series comes from the store already downsampled — TimeSeriesStore.
read_buckets with BUCKETS_PER_STEP buckets per grid step (5 min buckets on the 15 min grid), anchored at the
run's start; each bucket's mean is one sample at the middle of its first and last sample, so no more points
leave the store than the grid needs. Bad samples are left out by the store; empty buckets are gaps (a grid
point is not interpolated across more than processing.energy.gap_limits_h allows). Baseline runs and the live
run are read the same way. The
buckets carry no status: an uncertain sample counts as a good one here (the KPIs still flag it).

Alignment: phase landmarks by default — the phases after inoculation that every baseline run reached, up to
and including the harvest phase ([[process]] harvest_phase), with reference times the baseline runs' medians
(processing.alignment.reference_landmarks); `time_since_inoculation` on request. The grid runs from
inoculation to one step before the reference harvest start (or the baseline runs' median end when the
harvest is no landmark), GRID_STEP_H apart. A maturity axis needs the integrated rate of every run and is
not offered for stored references yet.

Variables: the equipment's numeric, non-lab tags of DEFAULT_ROLES (the ten fermenter signals part A checked
on simulated runs: temperature, pH, DO, agitation, air flow, feed, base, volume, off-gas O2 and CO2), or the
tags asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from biopilot.config import Role, SiteConfig, Tag, process_spec
from biopilot.errors import BioPilotError
from biopilot.records import Buckets, Phase, Run, RunKind, SeriesData
from biopilot.samples import GOOD, to_us, utcnow
from processing import envelope as env_mod
from processing import mspc as mspc_mod
from processing.alignment import (
    US_PER_H,
    Alignment,
    AlignmentError,
    Axis,
    GridSeries,
    align_series,
    grid,
    landmark_times_h,
    reference_landmarks,
    resample,
    warp_for,
)
from processing.envelope import Envelope, EnvelopeError, golden_envelope
from processing.mspc import MspcError, MspcModel, fit_mspc, run_array
from storage.references import References, StoredEnvelope, StoredModel

GRID_STEP_H = 0.25  # the aligned grid [h]: part A's figures are on 15 min
BUCKETS_PER_STEP = 3  # store buckets per grid step (5 min on the 15 min grid)
DEFAULT_ROLES: tuple[Role, ...] = (
    Role.TEMPERATURE,
    Role.PH,
    Role.DISSOLVED_OXYGEN,
    Role.AGITATION_SPEED,
    Role.AIR_FLOW,
    Role.FEED_RATE,
    Role.BASE_FLOW,
    Role.VOLUME,
    Role.OFFGAS_O2,
    Role.OFFGAS_CO2,
)
AUTO_BY = "processing (automatic)"

ReadBuckets = Callable[[str, datetime, datetime, int], Buckets]


class BaselineError(BioPilotError):
    """Baseline references cannot be built as asked (too few runs, unknown tags, an alignment that does not
    fit the runs); the message says why."""


# -- the selection rule ---------------------------------------------------------------------------------
def select_baseline_runs(
    runs: Iterable[Run],
    *,
    equipment: str,
    product: str | None = None,
    kind: str = RunKind.BASELINE.value,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Run]:
    """The baseline runs by rule, oldest first: closed runs of `equipment` of kind `kind` that started at or
    after `since` and before `until`, of `product` (None: any product; "": runs without one).

    The same rule as a trial charter's [baseline] (equipment, product, kind = "baseline", start, end)."""
    out = []
    for r in runs:
        if r.equipment != equipment or r.kind != kind or r.end is None:
            continue
        if product is not None and (r.product or "") != product:
            continue
        if since is not None and r.start < since:
            continue
        if until is not None and r.start >= until:
            continue
        out.append(r)
    return sorted(out, key=lambda r: (r.start, r.id))


# -- alignment ------------------------------------------------------------------------------------------
def alignment_key(alignment: Alignment) -> str:
    """The stored key of an alignment: its axis, with the landmark phases or the maturity variable."""
    if alignment.axis == Axis.LANDMARKS:
        return f"{Axis.LANDMARKS.value}:{','.join(alignment.landmarks)}"
    if alignment.axis == Axis.MATURITY:
        return f"{Axis.MATURITY.value}:{alignment.maturity}"
    return alignment.axis


def parse_alignment(text: str | None) -> tuple[str, tuple[str, ...] | None]:
    """A command line's alignment: "landmarks" (default; the phases every run reached), "landmarks:P1,P2"
    (these phases' starts), or "inoculation" (time since inoculation). Returns (axis, landmarks or None for
    automatic)."""
    value = (text or "landmarks").strip()
    name, _, rest = value.partition(":")
    if name in ("landmarks", Axis.LANDMARKS.value):
        phases = tuple(p.strip() for p in rest.split(",") if p.strip())
        return Axis.LANDMARKS.value, (phases or None)
    if name in ("inoculation", Axis.INOCULATION.value) and not rest:
        return Axis.INOCULATION.value, ()
    if name in ("maturity", Axis.MATURITY.value):
        raise BaselineError(
            "a maturity alignment is not offered for stored references yet; use landmarks or inoculation"
        )
    raise BaselineError(f"alignment {value!r}: expected landmarks, landmarks:PHASE,PHASE… or inoculation")


def common_landmarks(
    runs_phases: Sequence[Sequence[Phase]], inoculation_phase: str, harvest_phase: str
) -> tuple[str, ...]:
    """The phases after inoculation that every run reached in the same order, up to and including the
    harvest phase, in the order of the first run."""
    if not runs_phases:
        return ()
    first = sorted(runs_phases[0], key=lambda p: p.start)
    inoc = next((p.start for p in first if p.name == inoculation_phase), None)
    if inoc is None:
        return ()
    candidates: list[str] = []
    for p in first:
        if p.start > inoc and p.name not in candidates and p.name != inoculation_phase:
            candidates.append(p.name)
            if p.name == harvest_phase:
                break
    chosen: list[str] = []
    for name in candidates:
        trial = [*chosen, name]
        if all(landmark_times_h(ph, trial, inoculation_phase)[-1] is not None for ph in runs_phases):
            chosen = trial
    return tuple(chosen)


def baseline_alignment(
    runs_phases: Sequence[Sequence[Phase]],
    axis: str,
    landmarks: tuple[str, ...] | None,
    *,
    inoculation_phase: str,
    harvest_phase: str,
) -> Alignment:
    """The alignment of a set of baseline runs: landmark reference times are the runs' medians."""
    if axis == Axis.INOCULATION:
        return Alignment(axis=axis, inoculation_phase=inoculation_phase)
    names = (
        landmarks
        if landmarks is not None
        else common_landmarks(runs_phases, inoculation_phase, harvest_phase)
    )
    if not names:
        raise BaselineError(
            f"no phase after {inoculation_phase!r} is in every baseline run, so there are no landmarks;"
            " use --alignment inoculation"
        )
    try:
        ref = reference_landmarks(runs_phases, names, inoculation_phase)
        return Alignment(axis=axis, inoculation_phase=inoculation_phase, landmarks=names, reference_h=ref)
    except AlignmentError as exc:
        raise BaselineError(str(exc)) from None


def reference_grid(
    alignment: Alignment,
    runs: Sequence[Run],
    runs_phases: Sequence[Sequence[Phase]],
    harvest_phase: str,
    step_h: float = GRID_STEP_H,
) -> np.ndarray:
    """The aligned grid [h] from inoculation to one step before the reference harvest start (a landmark), or
    before the runs' median aligned harvest start (their end where they have none)."""
    if alignment.axis == Axis.LANDMARKS and harvest_phase in alignment.landmarks:
        end = alignment.reference_h[alignment.landmarks.index(harvest_phase)]
    else:
        ends = []
        for run, phases in zip(runs, runs_phases, strict=True):
            harvest = [p.start for p in phases if p.name == harvest_phase]
            stop = min(harvest) if harvest else run.end
            if stop is None:
                continue
            warp, _, _ = warp_for(phases, alignment, run_start=run.start)
            ends.append(float(warp.forward(np.array([to_us(stop)], dtype=np.float64))[0]))
        if not ends:
            raise BaselineError("the baseline runs have no end to build a grid to")
        end = float(np.median(ends))
    try:
        return grid(end - step_h, step_h)
    except AlignmentError as exc:
        raise BaselineError(f"the baseline runs are too short for a {step_h:g} h grid ({exc})") from None


# -- reading runs on the grid ------------------------------------------------------------------------------
def bucket_series(
    read_buckets: ReadBuckets, tag: str, start: datetime, end: datetime, bucket_h: float
) -> SeriesData:
    """A series downsampled in the store: buckets of bucket_h hours anchored at `start`, each bucket's mean
    as one good sample at the middle of its first and last sample (empty buckets: no sample)."""
    width_us = max(round(bucket_h * US_PER_H), 1)
    span = max(to_us(end) - to_us(start), 1)
    n = max(math.ceil(span / width_us), 1)
    b = read_buckets(tag, start, start + timedelta(microseconds=n * width_us), n)
    ts = (np.asarray(b.t_first, dtype=np.int64) + np.asarray(b.t_last, dtype=np.int64)) // 2
    values = np.asarray(b.mean, dtype=np.float64)
    keep = ts < to_us(end)
    return SeriesData(tag, ts[keep], values[keep], np.full(int(keep.sum()), GOOD, dtype=np.int64))


def grid_step_h(g: np.ndarray) -> float:
    """The step of a uniform grid [h] (GRID_STEP_H for a one-point grid)."""
    return float(g[1] - g[0]) if len(g) > 1 else GRID_STEP_H


def run_on_grid(
    read_buckets: ReadBuckets,
    run: Run,
    phases: Sequence[Phase],
    tags: Sequence[str],
    alignment: Alignment,
    g: np.ndarray,
    *,
    until: datetime | None = None,
) -> dict[str, GridSeries]:
    """Each tag of one run on the aligned grid (NaN where the run has no value, has not got yet, or has a
    gap), read as bucket means (module doc) up to the run's end, or `until` for a live run."""
    end = run.end or until or utcnow()
    bucket_h = grid_step_h(g) / BUCKETS_PER_STEP
    out = {}
    for tag in tags:
        data = bucket_series(read_buckets, tag, run.start, end, bucket_h)
        aligned = align_series(data, phases, alignment, run_start=run.start)
        out[tag] = resample(aligned, g)
    return out


# -- building ---------------------------------------------------------------------------------------------
def reference_tags(config: SiteConfig, equipment: str, names: Sequence[str] | None = None) -> list[Tag]:
    """The tags compared with the baseline: the named ones (checked), or the equipment's numeric, non-lab
    tags of DEFAULT_ROLES in the config's order."""
    own = config.tags_of(equipment)
    if not names:
        tags = [t for t in own if t.role in DEFAULT_ROLES and not t.is_text and t.lab is None]
        if not tags:
            roles = ", ".join(r.value for r in DEFAULT_ROLES)
            raise BaselineError(
                f"{equipment} has no tag of the roles compared by default ({roles}); use --tags"
            )
        return tags
    by_name = {t.name: t for t in own}
    out = []
    for name in names:
        tag = by_name.get(name)
        if tag is None:
            known = ", ".join(t.name for t in own if not t.is_text) or "none"
            raise BaselineError(f"tag {name!r} is not a tag of {equipment} (its numeric tags: {known})")
        if tag.is_text:
            raise BaselineError(f"tag {name!r} is text ({tag.role.value}); only numbers have an envelope")
        out.append(tag)
    return out


@dataclass(frozen=True)
class BuiltReferences:
    """What a build made: the envelopes that could be computed, the MSPC model (or None), and why anything
    was refused (one sentence each)."""

    equipment: str
    product: str
    alignment: Alignment
    grid: np.ndarray
    runs: tuple[str, ...]
    tags: tuple[str, ...]
    envelopes: tuple[Envelope, ...]
    model: MspcModel | None
    refused: tuple[str, ...] = ()
    computed: datetime = field(default_factory=utcnow)

    def save(self, references: References, by: str) -> None:
        """Store them (one transaction), computed by `by`."""
        key = alignment_key(self.alignment)
        envs = [
            StoredEnvelope(
                e.equipment, e.product, e.tag, key, e.unit, e.runs, len(e.grid), e.computed, by, e.to_json()
            )
            for e in self.envelopes
        ]
        model = None
        if self.model is not None:
            m = self.model
            model = StoredModel(
                m.equipment,
                m.product,
                key,
                m.variables,
                m.runs,
                m.n_components,
                len(m.grid),
                m.computed,
                by,
                m.to_json(),
            )
        references.save(envs, model)


def build_references(
    config: SiteConfig,
    read_buckets: ReadBuckets,
    phases_of: Callable[[str], Sequence[Phase]],
    *,
    equipment: str,
    runs: Sequence[Run],
    tags: Sequence[str] | None = None,
    alignment: str | None = None,
    step_h: float = GRID_STEP_H,
    n_components: int | None = None,
    computed: datetime | None = None,
) -> BuiltReferences:
    """Envelopes of each tag and an MSPC model of the tags with data from the baseline `runs` (closed
    runs of one equipment and product). BaselineError with the reason when fewer than envelope.MIN_RUNS runs
    are given (or the runs do not fit the alignment); an MSPC model needs mspc.MIN_RUNS runs, an envelope of
    a tag MIN_RUNS runs with data: what cannot be built is in `refused` with its reason.

    read_buckets: TimeSeriesStore.read_buckets; phases_of: the catalog's phases of a run id."""
    runs = sorted(runs, key=lambda r: (r.start, r.id))
    ids = [r.id for r in runs]
    open_runs = [r.id for r in runs if r.end is None]
    if open_runs:
        raise BaselineError(f"baseline runs must be closed; still open: {', '.join(open_runs)}")
    if any(r.equipment != equipment for r in runs):
        others = ", ".join(r.id for r in runs if r.equipment != equipment)
        raise BaselineError(f"every baseline run must be of {equipment}; not: {others}")
    products = sorted({r.product or "" for r in runs})
    if len(products) > 1:
        raise BaselineError(
            f"the baseline runs are of different products ({', '.join(products)}); choose one"
        )
    product = products[0] if products else ""
    if len(runs) < env_mod.MIN_RUNS:
        named = ", ".join(ids) if ids else "none"
        raise BaselineError(
            f"{len(runs)} baseline run(s) of {equipment} ({named}): an envelope needs at least"
            f" {env_mod.MIN_RUNS} and an MSPC model {mspc_mod.MIN_RUNS}"
        )
    spec = process_spec(config, equipment)
    chosen = reference_tags(config, equipment, tags)
    names = [t.name for t in chosen]
    runs_phases = [list(phases_of(r.id)) for r in runs]
    axis, landmarks = parse_alignment(alignment)
    align = baseline_alignment(
        runs_phases,
        axis,
        landmarks,
        inoculation_phase=spec.inoculation_phase,
        harvest_phase=spec.harvest_phase,
    )
    g = reference_grid(align, runs, runs_phases, spec.harvest_phase, step_h)
    x = np.stack(
        [
            run_array(run_on_grid(read_buckets, r, p, names, align, g), names)
            for r, p in zip(runs, runs_phases, strict=True)
        ]
    )
    when = computed or utcnow()
    envelopes, refused = [], []
    for j, tag in enumerate(chosen):
        try:
            envelopes.append(
                golden_envelope(
                    g,
                    x[:, :, j],
                    ids,
                    equipment=equipment,
                    product=product,
                    tag=tag.name,
                    unit=tag.unit,
                    alignment=align,
                    computed=when,
                )
            )
        except EnvelopeError as exc:
            refused.append(exc.reason)
    model = None
    with_data = [j for j in range(len(chosen)) if np.isfinite(x[:, :, j]).any()]
    try:
        if not with_data:
            raise MspcError(f"no MSPC model for {equipment}: no tag has data in the baseline runs")
        model = fit_mspc(
            x[:, :, with_data],
            variables=[names[j] for j in with_data],
            units=[chosen[j].unit for j in with_data],
            grid=g,
            alignment=align,
            runs=ids,
            equipment=equipment,
            product=product,
            n_components=n_components,
            computed=when,
        )
    except MspcError as exc:
        refused.append(exc.reason)
    return BuiltReferences(
        equipment, product, align, g, tuple(ids), tuple(names), tuple(envelopes), model, tuple(refused), when
    )
