"""The query layer: every read the dashboard, the CLI and the exports make, filtered for one viewer.

`open_query(viewer, config, catalog, store, health)` returns a `Query`. The Query has no store, catalog or
health attribute: its one attribute besides `viewer` is a function that hands each call to the backend with
the viewer, so code that receives a Query (the dashboard's views, a command) can only ask what the viewer may
see. Filtering happens in the catalog queries (runs by equipment or trial) and in the store reads (series
clipped to the time windows of the runs the viewer may see), never by hiding a widget.

Who sees what (the viewer's role; `biopilot.access`):
  admin     everything
  operator  runs, series, lab results, health and trials of its equipment (every equipment when none named)
  startup   its tenant's trials; the runs in them (not baseline runs); their series only inside those runs'
            time windows and on their equipment; the baseline only as aggregates
  partner   the trials it is invited to, their trial runs with KPIs and phases (the evidence); no series and
            no lab results; the baseline only as aggregates
Something a viewer may not see reads as absent (None, an empty list): the answer does not tell "forbidden"
from "does not exist", so no name leaks.

Run review and live (issue 11): a run's series on an aligned axis (`aligned`, read as bucket means in the
store, never raw) and its warp, for whoever may see the run; the stored golden-batch envelopes of the run's
equipment + product for whoever may see the run (startups and partners without the baseline run ids, and only
envelopes of at least MIN_BASELINE_RUNS runs); deviation alarms of the runs the viewer may see (none for a
partner); acknowledging an alarm: an operator of its equipment or an admin, stored with who and when, and
written to the audit log.

Baseline aggregates (`baseline`, `baseline_envelope`) are computed here from runs the viewer never receives;
with fewer than MIN_BASELINE_RUNS runs a startup or partner gets no numbers (one run's mean is that run).

Adding a read: a public method on Query that calls `self._call("name", …)`, and the method `name(viewer, …)`
on _Backend that filters for the viewer. Views never import storage (an import contract checks it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from biopilot.access import AuditEntry, Trial, TrialInvitation, User, UserRole, Viewer
from biopilot.config import Equipment, Role, SiteConfig, Tag, process_spec
from biopilot.records import Buckets, KpiRecord, LabResult, Latest, Phase, Run, RunKind, SeriesData
from biopilot.samples import Sample, from_us, to_us, utcnow
from processing.aggregates import envelope, mean_ci
from processing.alignment import AlignedSeries, Alignment, AlignmentError, Axis, Warp, align_series, warp_for
from processing.baseline import bucket_series
from processing.envelope import Envelope
from processing.evidence.inputs import CharterVersion, EvidenceInputs, RunSource
from processing.quality import SignalQuality, assess
from processing.trial_inputs import Exclusion, RunRecord
from processing.verdict import Verdict, hide_runs, judge, verdict_to_json
from storage.alarms import Alarm, Alarms
from storage.base import TimeSeriesStore
from storage.catalog import Catalog
from storage.charters import BASELINE, TRIAL, CharterRecord, ExclusionRecord, TrialMember
from storage.health import HealthStore
from storage.health import TagHealth as CollectedTag
from storage.references import References

if TYPE_CHECKING:
    from processing.evidence.manifest import Manifest

MIN_BASELINE_RUNS = 3
_FOREVER_US = 2**62
_REPRESENTABLE_US = 2**55  # ±1142 years around 1970: inside what datetime can hold


class Forbidden(Exception):  # noqa: N818 - a BioPilotError is raised from it by the callers that write
    """An action the viewer's role does not allow (writes and admin reads; reads of data return nothing)."""


@dataclass(frozen=True)
class SiteInfo:
    name: str
    timezone: str
    simulated: bool


@dataclass(frozen=True)
class KpiAggregate:
    name: str
    unit: str
    n: int
    mean: float | None
    sd: float | None
    ci_low: float | None
    ci_high: float | None
    level: float = 0.95
    flags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "n": self.n,
            "mean": self.mean,
            "sd": self.sd,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "level": self.level,
            "flags": list(self.flags),
        }


@dataclass(frozen=True)
class BaselineSummary:
    trial_id: str
    equipment: tuple[str, ...]
    product: str | None
    n_runs: int
    kpis: list[KpiAggregate]

    def to_json(self) -> dict[str, Any]:
        return {
            "trial": self.trial_id,
            "equipment": list(self.equipment),
            "product": self.product,
            "n_runs": self.n_runs,
            "kpis": [k.to_json() for k in self.kpis],
        }


@dataclass(frozen=True)
class BaselineEnvelope:
    trial_id: str
    role: str
    unit: str
    n_runs: int
    hours: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray


@dataclass(frozen=True)
class JudgedTrial:
    """A trial judged by its charter in force, with its inputs (for `biopilot report` and the pack)."""

    trial: Trial
    versions: tuple[CharterRecord, ...]  # locked versions, oldest first
    verdict: Verdict
    trial_runs: tuple[RunRecord, ...]
    baseline_runs: tuple[RunRecord, ...]
    origins: dict[str, str]  # run id -> origin ("live", "import", "manual"); absent when not in the catalog
    imports: dict[str, list[Any]]  # run id -> its ImportRecords

    def evidence_inputs(self, site: str, hidden: dict[str, str] | None = None) -> EvidenceInputs:
        """What the evidence pack shows (processing.evidence.inputs.EvidenceInputs); `hidden`: runs the
        reader may not see, by the name they are shown by."""
        return EvidenceInputs(
            self.trial.id,
            tuple(
                CharterVersion(v.version, v.canonical_json, v.sha256, v.reason, v.by, v.at)
                for v in self.versions
            ),
            self.verdict,
            self.trial_runs,
            self.baseline_runs,
            tuple(
                RunSource(run_id, origin, tuple(self.imports.get(run_id, ())))
                for run_id, origin in self.origins.items()
            ),
            site,
            hidden or {},
        )


@dataclass(frozen=True)
class TagHealth:
    tag: str
    equipment: str
    source: str


@dataclass(frozen=True)
class HealthView:
    """What the collectors reported, for the viewer: connections (name -> (doc, updated)), the tags, and
    what the collectors last said of each of those tags."""

    components: dict[str, tuple[dict[str, Any], datetime]] = field(default_factory=dict)
    tags: list[Tag] = field(default_factory=list)
    tag_health: dict[str, CollectedTag] = field(default_factory=dict)


# -- ops: data quality (issue 11) ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TagQuality:
    tag: str
    equipment: str
    unit: str
    last_seen: datetime | None  # wall clock: when the collectors last received a value (None: no health)
    last_value: datetime | None  # source time of the newest sample in the window
    quality: SignalQuality  # processing.quality over the window
    rejected: int  # inputs for this tag the collectors rejected (quarantined), since they started


@dataclass(frozen=True)
class ConnectionQuality:
    name: str  # "opcua:<server>", "mqtt:<broker>"
    state: str
    reconnects: int
    outages: int  # source outages the collectors recorded (storage.health gaps)
    open_outage: bool  # the source is gone right now
    quarantined: dict[str, int]  # reason -> inputs in the quarantine (the newest QUARANTINE_KEEP kept)


@dataclass(frozen=True)
class DataQualityView:
    start: datetime
    end: datetime
    tags: list[TagQuality] = field(default_factory=list)
    connections: list[ConnectionQuality] = field(default_factory=list)
    spool_bytes: int | None = None  # not yet stored; None: no report from the collectors
    spool_fill: float | None = None  # share of the spool's capacity [0..1]


class Query:
    """Reads for one viewer (see the module docstring). Immutable; no handle to storage."""

    __slots__ = ("_call", "viewer")

    def __init__(self, viewer: Viewer, call: Callable[..., Any]) -> None:
        object.__setattr__(self, "viewer", viewer)
        object.__setattr__(self, "_call", call)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Query is immutable")

    def __repr__(self) -> str:
        return f"Query(viewer={self.viewer.describe()})"

    # -- site and equipment ------------------------------------------------------------------------------
    def site(self) -> SiteInfo:
        return self._call("site")  # type: ignore[no-any-return]

    def equipment(self) -> list[Equipment]:
        """Equipment whose live data the viewer may see (a startup: where a run of its trials is open)."""
        return self._call("equipment")  # type: ignore[no-any-return]

    def tags(self, equipment: str | None = None) -> list[Tag]:
        """The configured tags of the equipment the viewer may see (of one of them)."""
        return self._call("tags", equipment)  # type: ignore[no-any-return]

    # -- runs ------------------------------------------------------------------------------------------
    def runs(
        self,
        *,
        equipment: str | None = None,
        kind: str | None = None,
        trial_id: str | None = None,
        open_only: bool = False,
    ) -> list[Run]:
        return self._call("runs", equipment=equipment, kind=kind, trial_id=trial_id, open_only=open_only)  # type: ignore[no-any-return]

    def run(self, run_id: str) -> Run | None:
        return self._call("run", run_id)  # type: ignore[no-any-return]

    def kpis(self, run_id: str) -> list[KpiRecord]:
        return self._call("kpis", run_id)  # type: ignore[no-any-return]

    def phases(self, run_id: str) -> list[Phase]:
        return self._call("phases", run_id)  # type: ignore[no-any-return]

    def lab_results(self, run_id: str) -> list[LabResult]:
        return self._call("lab_results", run_id)  # type: ignore[no-any-return]

    def downstream_runs(self, run_id: str) -> list[Run]:
        return self._call("downstream_runs", run_id)  # type: ignore[no-any-return]

    # -- series ------------------------------------------------------------------------------------------
    def latest(self, tags: Sequence[str]) -> dict[str, Latest]:
        """Newest sample per tag inside what the viewer may see (tags it may not see are absent)."""
        return self._call("latest", list(tags))  # type: ignore[no-any-return]

    def buckets(self, tag: str, start: datetime, end: datetime, n: int) -> Buckets:
        """Min/max/mean buckets of [start, end), computed in the store over the viewer's windows only."""
        return self._call("buckets", tag, start, end, n)  # type: ignore[no-any-return]

    def series(self, tag: str, start: datetime, end: datetime) -> SeriesData:
        """Raw samples with start ≤ t < end inside the viewer's windows (none for a partner)."""
        return self._call("series", tag, start, end)  # type: ignore[no-any-return]

    def latest_time(self) -> datetime | None:
        """Source time of the newest sample the viewer may see: the plant's 'now'."""
        return self._call("latest_time")  # type: ignore[no-any-return]

    # -- trials ------------------------------------------------------------------------------------------
    def trials(self) -> list[Trial]:
        return self._call("trials")  # type: ignore[no-any-return]

    def trial(self, trial_id: str) -> Trial | None:
        return self._call("trial", trial_id)  # type: ignore[no-any-return]

    def invitations(self, trial_id: str | None = None) -> list[TrialInvitation]:
        """Invitations to a trial (admin: all; a partner: its own; others: none)."""
        return self._call("invitations", trial_id)  # type: ignore[no-any-return]

    def baseline(self, trial_id: str) -> BaselineSummary | None:
        """Mean and 95 % CI of each final KPI over the trial's baseline runs (kind baseline, on its
        equipment, of its product when both name one). None when the trial is not visible."""
        return self._call("baseline", trial_id)  # type: ignore[no-any-return]

    def baseline_envelope(self, trial_id: str, role: str, points: int = 120) -> BaselineEnvelope | None:
        """Mean ± 2 sd of a signal (by role) over hours since start across the trial's baseline runs."""
        return self._call("baseline_envelope", trial_id, role, points)  # type: ignore[no-any-return]

    def charter(self, trial_id: str) -> CharterRecord | None:
        """The charter in force (the newest locked version, else the draft); None when there is none or the
        trial is not visible."""
        return self._call("charter", trial_id)  # type: ignore[no-any-return]

    def charter_versions(self, trial_id: str) -> list[CharterRecord]:
        """Every stored version of the trial's charter, oldest first (version 0: an unlocked draft)."""
        return self._call("charter_versions", trial_id)  # type: ignore[no-any-return]

    def trial_members(self, trial_id: str) -> list[TrialMember]:
        """The trial runs and the frozen baseline runs (only the trial runs for a viewer who may not see
        every baseline run: startup, partner, an operator of other equipment)."""
        return self._call("trial_members", trial_id)  # type: ignore[no-any-return]

    def exclusions(self, trial_id: str) -> list[ExclusionRecord]:
        """The exclusions ledger (for a viewer who may not see every baseline run — startup, partner, an
        operator of other equipment — a baseline run is named "baseline run K", K its place in start order
        among the frozen baseline runs)."""
        return self._call("exclusions", trial_id)  # type: ignore[no-any-return]

    def verdict(self, trial_id: str) -> dict[str, Any] | None:
        """The verdict JSON (processing.verdict.verdict_to_json) by the charter in force, over the KPI records
        of the trial runs and the frozen baseline runs; None when the charter is not locked or the trial is
        not visible. A viewer who may not see every baseline run (startup, partner, an operator of other
        equipment) gets the baseline as aggregates: no baseline run ids (named "baseline run K"), no
        per-baseline-run values (`aggregate_only_verdict`)."""
        return self._call("verdict", trial_id)  # type: ignore[no-any-return]

    def evidence_pack(self, trial_id: str, out_dir: Path) -> Manifest | None:
        """Write the trial's evidence pack (processing.evidence) into out_dir, judged as `verdict` judges it,
        for the viewer: runs it may not see are named by their place and left out, so a startup or a partner
        gets the baseline as aggregates. None when the trial is not visible or its charter is not locked."""
        return self._call("evidence_pack", trial_id, out_dir)  # type: ignore[no-any-return]

    def judged(self, trial_id: str) -> JudgedTrial | None:
        """Everything the verdict and the evidence pack rest on, with the baseline run by run: for an admin
        and operators who may see every baseline run (None for others, and when the charter is unlocked)."""
        return self._call("judged", trial_id)  # type: ignore[no-any-return]

    # -- health, users, audit ------------------------------------------------------------------------------
    def health(self) -> HealthView:
        """The collectors' reports (admin, operator: its equipment's tags); empty for others."""
        return self._call("health")  # type: ignore[no-any-return]

    def users(self) -> list[User]:
        """Admin only (Forbidden otherwise)."""
        return self._call("users")  # type: ignore[no-any-return]

    def audit(self, *, since: datetime | None = None, actor: str | None = None) -> list[AuditEntry]:
        """Admin only (Forbidden otherwise)."""
        return self._call("audit", since=since, actor=actor)  # type: ignore[no-any-return]

    # -- run review, compare runs, live envelopes and alarms (issue 11 B2) -------------------------------
    def alarms(
        self, *, run_id: str | None = None, open_only: bool = False, limit: int | None = None
    ) -> list[Alarm]:
        """Deviation alarms of the runs the viewer may see (none for a partner), newest raised first."""
        return self._call("alarms", run_id=run_id, open_only=open_only, limit=limit)  # type: ignore[no-any-return]

    def acknowledge_alarm(self, alarm_id: int, comment: str | None = None) -> Alarm:
        """Acknowledge an alarm as the viewer (operator of its equipment, or admin; Forbidden otherwise),
        now; written to the audit log. StoreError when it was acknowledged already."""
        return self._call("acknowledge_alarm", alarm_id, comment)  # type: ignore[no-any-return]

    def envelopes(self, run_id: str) -> list[Envelope]:
        """The stored golden-batch envelopes of the run's equipment + product (every alignment stored), for
        a viewer who may see the run; the baseline run ids are cut for startups and partners."""
        return self._call("envelopes", run_id)  # type: ignore[no-any-return]

    def run_tags(self, run_id: str) -> list[Tag]:
        """The configured tags of a run's equipment, for a viewer who may see the run's series."""
        return self._call("run_tags", run_id)  # type: ignore[no-any-return]

    def alignments(self, run_id: str) -> list[Alignment]:
        """The alignments a run can be reviewed on: time since inoculation (the equipment's inoculation
        phase), then those of the stored envelopes of its equipment + product."""
        return self._call("alignments", run_id)  # type: ignore[no-any-return]

    def warp(self, run_id: str, alignment: Alignment) -> Warp | None:
        """The run's map from plant time to the aligned axis (from its phases), None if not visible."""
        return self._call("warp", run_id, alignment)  # type: ignore[no-any-return]

    def aligned(self, run_id: str, tag: str, alignment: Alignment, points: int = 600) -> AlignedSeries | None:
        """One tag of one run on an aligned axis, read downsampled in the store (about `points` bucket
        means over the run); None when the viewer may not see the run or the tag is not of its equipment."""
        return self._call("aligned", run_id, tag, alignment, points)  # type: ignore[no-any-return]

    # -- ops: batch chains and data quality (issue 11: Energy, Data quality, Yield waterfall pages) ----------
    def chain(self, run_id: str) -> list[Run]:
        """The run and every run downstream of it (its recovery runs, theirs…) that the viewer may see, in
        processing order (by start); empty when the run is not visible."""
        return self._call("chain", run_id)  # type: ignore[no-any-return]

    def data_quality(self, start: datetime, end: datetime) -> DataQualityView:
        """Per numeric tag the viewer may see: gaps, flatline, spikes, bad and uncertain samples in
        [start, end) of its series (inside the viewer's windows; processing.quality), with what the
        collectors last said of it; per collector connection (admin, operator): state, reconnects,
        outages, quarantined inputs by reason; the spool backlog."""
        return self._call("data_quality", start, end)  # type: ignore[no-any-return]


def open_query(
    viewer: Viewer,
    config: SiteConfig,
    catalog: Catalog,
    store: TimeSeriesStore,
    health: HealthStore | None = None,
) -> Query:
    backend = _Backend(config, catalog, store, health)

    def call(method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(backend, method)(viewer, *args, **kwargs)

    return Query(viewer, call)


# -- the backend: the only code here that touches storage ---------------------------------------------------
Windows = dict[str, list[tuple[int, int]]] | None  # equipment -> [(start µs, end µs)]; None: everything


class _Backend:
    def __init__(
        self, config: SiteConfig, catalog: Catalog, store: TimeSeriesStore, health: HealthStore | None
    ) -> None:
        self._config = config
        self._catalog = catalog
        self._store = store
        self._health = health
        self._alarms = Alarms(catalog.db)
        self._references = References(catalog.db)

    # -- scope -------------------------------------------------------------------------------------------
    def _operator_equipment(self, v: Viewer) -> set[str]:
        return set(v.equipment) if v.equipment else {e.id for e in self._config.equipment}

    def _trials_of(self, v: Viewer) -> list[Trial]:
        if v.role == UserRole.ADMIN:
            return self._catalog.trials()
        if v.role == UserRole.OPERATOR:
            mine = self._operator_equipment(v)
            return [t for t in self._catalog.trials() if mine & set(t.equipment)]
        if v.role == UserRole.STARTUP:
            return self._catalog.trials(startup=v.tenant)
        ids = {i.trial_id for i in self._catalog.invitations(user_name=v.name)}
        return self._catalog.trials(ids=ids)

    def _may_see_run(self, v: Viewer, run: Run, trial_ids: set[str] | None = None) -> bool:
        if v.role == UserRole.ADMIN:
            return True
        if v.role == UserRole.OPERATOR:
            return run.equipment in self._operator_equipment(v)
        if run.trial_id is None or run.kind == RunKind.BASELINE.value:
            return False
        if v.role == UserRole.PARTNER and run.kind != RunKind.TRIAL.value:
            return False
        if trial_ids is None:
            trial_ids = {t.id for t in self._trials_of(v)}
        return run.trial_id in trial_ids

    def _visible_runs(self, v: Viewer) -> list[Run]:
        if v.role == UserRole.ADMIN:
            return self._catalog.runs()
        if v.role == UserRole.OPERATOR:
            mine = self._operator_equipment(v)
            return [r for r in self._catalog.runs() if r.equipment in mine]
        ids = {t.id for t in self._trials_of(v)}
        out: list[Run] = []
        for trial_id in sorted(ids):  # the catalog is asked per trial: other runs never leave it
            out += [r for r in self._catalog.runs(trial_id=trial_id) if self._may_see_run(v, r, ids)]
        out.sort(key=lambda r: (-to_us(r.start), r.id))
        return out

    def _windows(self, v: Viewer) -> Windows:
        """Where and when the viewer may read series."""
        if v.role == UserRole.ADMIN:
            return None
        if v.role == UserRole.OPERATOR:
            return {e: [(-_FOREVER_US, _FOREVER_US)] for e in self._operator_equipment(v)}
        if v.role == UserRole.PARTNER:
            return {}
        out: dict[str, list[tuple[int, int]]] = {}
        for run in self._visible_runs(v):
            end = to_us(run.end) + 1 if run.end is not None else _FOREVER_US
            out.setdefault(run.equipment, []).append((to_us(run.start), end))
        return out

    def _tag_windows(self, v: Viewer, tag: str) -> list[tuple[int, int]] | None:
        """The windows of one tag: None = all of it, [] = none of it."""
        windows = self._windows(v)
        if windows is None:
            return None
        try:
            equipment = self._config.tag(tag).equipment
        except KeyError:
            return []
        return _merge(windows.get(equipment, []))

    def _redact_run(self, v: Viewer, run: Run) -> Run:
        """A run as the viewer may see it: a link to a run it may not see is cut."""
        if run.upstream_id is not None and v.role != UserRole.ADMIN:
            upstream = self._catalog.run(run.upstream_id)
            if upstream is None or not self._may_see_run(v, upstream):
                return replace(run, upstream_id=None)
        return run

    def _run(self, v: Viewer, run_id: str) -> Run | None:
        run = self._catalog.run(run_id)
        return run if run is not None and self._may_see_run(v, run) else None

    # -- site and equipment ------------------------------------------------------------------------------
    def site(self, v: Viewer) -> SiteInfo:
        c = self._config
        return SiteInfo(c.site.name, c.site.timezone, c.simulator is not None)

    def equipment(self, v: Viewer) -> list[Equipment]:
        windows = self._windows(v)
        if windows is None:
            return list(self._config.equipment)
        if v.role == UserRole.STARTUP:
            live = {r.equipment for r in self._visible_runs(v) if r.is_open}
            return [e for e in self._config.equipment if e.id in live]
        return [e for e in self._config.equipment if e.id in windows]

    def tags(self, v: Viewer, equipment: str | None) -> list[Tag]:
        allowed = {e.id for e in self.equipment(v)}
        return [
            t
            for t in self._config.tags
            if t.equipment in allowed and (equipment is None or t.equipment == equipment)
        ]

    # -- runs ------------------------------------------------------------------------------------------
    def runs(
        self, v: Viewer, *, equipment: str | None, kind: str | None, trial_id: str | None, open_only: bool
    ) -> list[Run]:
        if v.role in (UserRole.ADMIN, UserRole.OPERATOR):
            runs = self._catalog.runs(equipment, open_only=open_only, kind=kind, trial_id=trial_id)
            runs = [r for r in runs if self._may_see_run(v, r)]
        else:
            runs = [
                r
                for r in self._visible_runs(v)
                if (equipment is None or r.equipment == equipment)
                and (kind is None or r.kind == kind)
                and (trial_id is None or r.trial_id == trial_id)
                and (not open_only or r.is_open)
            ]
        return [self._redact_run(v, r) for r in runs]

    def run(self, v: Viewer, run_id: str) -> Run | None:
        run = self._run(v, run_id)
        return self._redact_run(v, run) if run is not None else None

    def kpis(self, v: Viewer, run_id: str) -> list[KpiRecord]:
        return self._catalog.kpis(run_id) if self._run(v, run_id) is not None else []

    def phases(self, v: Viewer, run_id: str) -> list[Phase]:
        return self._catalog.phases(run_id) if self._run(v, run_id) is not None else []

    def lab_results(self, v: Viewer, run_id: str) -> list[LabResult]:
        run = self._run(v, run_id)
        if run is None or v.role == UserRole.PARTNER:
            return []
        return self._catalog.run_lab_results(run)

    def downstream_runs(self, v: Viewer, run_id: str) -> list[Run]:
        if self._run(v, run_id) is None:
            return []
        return [
            self._redact_run(v, r) for r in self._catalog.downstream_runs(run_id) if self._may_see_run(v, r)
        ]

    # -- series ------------------------------------------------------------------------------------------
    def latest(self, v: Viewer, tags: list[str]) -> dict[str, Latest]:
        windows = self._windows(v)
        if windows is None:
            return self._store.latest(tags)
        wanted = {t: self._tag_windows(v, t) for t in tags}
        wanted = {t: w for t, w in wanted.items() if w}
        if not wanted:
            return {}
        newest = self._store.latest(list(wanted))
        out: dict[str, Latest] = {}
        for tag, spans in wanted.items():
            found = newest.get(tag)
            if found is not None and _inside(to_us(found.sample.ts), spans):
                out[tag] = found
                continue
            # the newest sample is outside the viewer's windows: the newest inside the last window with data
            for start, end in reversed(spans):
                data = self._read(tag, start, end, tail=True)
                if len(data):
                    value = data.values[-1]
                    sample = Sample(
                        tag,
                        from_us(int(data.ts[-1])),
                        value if isinstance(value, str) else float(value),
                        int(data.status[-1]),
                    )
                    out[tag] = Latest(sample, None)
                    break
        return out

    def _read(self, tag: str, start_us: int, end_us: int, *, tail: bool = False) -> SeriesData:
        start_us = max(start_us, -_REPRESENTABLE_US)
        end_us = min(end_us, _REPRESENTABLE_US)
        if tail:  # the last hour first (the usual case), then the whole window
            recent = self._store.read(tag, from_us(max(start_us, end_us - 3_600_000_000)), from_us(end_us))
            if len(recent) or end_us - start_us <= 3_600_000_000:
                return recent
        return self._store.read(tag, from_us(start_us), from_us(end_us))

    def series(self, v: Viewer, tag: str, start: datetime, end: datetime) -> SeriesData:
        spans = self._tag_windows(v, tag)
        if spans is None:
            return self._store.read(tag, start, end)
        parts = [
            self._read(tag, max(s, to_us(start)), min(e, to_us(end)))
            for s, e in spans
            if max(s, to_us(start)) < min(e, to_us(end))
        ]
        return _concat_series(tag, parts)

    def buckets(self, v: Viewer, tag: str, start: datetime, end: datetime, n: int) -> Buckets:
        spans = self._tag_windows(v, tag)
        if spans is None:
            return self._store.read_buckets(tag, start, end, n)
        t0, t1 = to_us(start), to_us(end)
        clipped = [(max(s, t0), min(e, t1)) for s, e in spans if max(s, t0) < min(e, t1)]
        total = sum(e - s for s, e in clipped)
        parts = [
            self._store.read_buckets(tag, from_us(s), from_us(e), max(1, round(n * (e - s) / total)))
            for s, e in clipped
        ]
        return _concat_buckets(tag, parts)

    def latest_time(self, v: Viewer) -> datetime | None:
        names = [t.name for t in self.tags(v, None)]
        if not names:
            return None
        latest = self.latest(v, names)
        return max((x.sample.ts for x in latest.values()), default=None)

    # -- trials ------------------------------------------------------------------------------------------
    def trials(self, v: Viewer) -> list[Trial]:
        return self._trials_of(v)

    def trial(self, v: Viewer, trial_id: str) -> Trial | None:
        return next((t for t in self._trials_of(v) if t.id == trial_id), None)

    def invitations(self, v: Viewer, trial_id: str | None) -> list[TrialInvitation]:
        if v.role == UserRole.ADMIN:
            return self._catalog.invitations(trial_id=trial_id)
        if v.role == UserRole.PARTNER:
            return self._catalog.invitations(trial_id=trial_id, user_name=v.name)
        return []

    def _baseline_runs(self, trial: Trial) -> list[Run]:
        """The baseline frozen when the charter was locked; before that, every closed baseline run on the
        trial's equipment (of its product when both name one)."""
        record = self._catalog.charter_record(trial.id)
        if record is not None and record.locked:
            frozen = [self._catalog.run(m.run_id) for m in self._catalog.trial_members(trial.id, BASELINE)]
            return [r for r in frozen if r is not None]
        runs = []
        for equipment in trial.equipment:
            for run in self._catalog.runs(equipment, kind=RunKind.BASELINE.value):
                if run.is_open:
                    continue
                if trial.product is not None and run.product not in (None, trial.product):
                    continue
                runs.append(run)
        return runs

    def _aggregates_only(self, v: Viewer) -> bool:
        return v.role in (UserRole.STARTUP, UserRole.PARTNER)

    def baseline(self, v: Viewer, trial_id: str) -> BaselineSummary | None:
        trial = self.trial(v, trial_id)
        if trial is None:
            return None
        runs = self._baseline_runs(trial)
        values: dict[str, list[float]] = {}
        units: dict[str, str] = {}
        for run in runs:
            for k in self._catalog.kpis(run.id):
                if k.final and k.value is not None:
                    values.setdefault(k.name, []).append(float(k.value))
                    units[k.name] = k.unit
        too_few = self._aggregates_only(v) and len(runs) < MIN_BASELINE_RUNS
        out = []
        for name in sorted(values):
            if too_few or (self._aggregates_only(v) and len(values[name]) < MIN_BASELINE_RUNS):
                out.append(
                    KpiAggregate(
                        name,
                        units[name],
                        len(values[name]),
                        None,
                        None,
                        None,
                        None,
                        flags=(f"fewer_than_{MIN_BASELINE_RUNS}_runs",),
                    )
                )
                continue
            ci = mean_ci(np.array(values[name]))
            out.append(
                KpiAggregate(
                    name, units[name], ci.n, ci.mean, _num(ci.sd), _num(ci.low), _num(ci.high), ci.level
                )
            )
        return BaselineSummary(trial.id, trial.equipment, trial.product, len(runs), out)

    def baseline_envelope(self, v: Viewer, trial_id: str, role: str, points: int) -> BaselineEnvelope | None:
        trial = self.trial(v, trial_id)
        if trial is None:
            return None
        try:
            role_ = Role(role)
        except ValueError:
            return None
        curves: list[tuple[np.ndarray, np.ndarray]] = []
        unit = ""
        longest = 0.0
        for run in self._baseline_runs(trial):
            tags = self._config.role_tags(run.equipment, role_)
            if not tags or run.end is None:
                continue
            unit = tags[0].unit
            b = self._store.read_buckets(tags[0].name, run.start, run.end, 200)
            if len(b) < 2:
                continue
            hours = ((b.t_first + b.t_last) / 2 - to_us(run.start)) / 3.6e9
            curves.append((hours, b.mean))
            longest = max(longest, float(hours[-1]))
        grid = np.linspace(0.0, longest, max(points, 2)) if curves else np.empty(0)
        env = envelope(curves, grid, min_runs=MIN_BASELINE_RUNS if self._aggregates_only(v) else 2)
        return BaselineEnvelope(
            trial.id, role_.value, unit, len(curves), env.hours, env.mean, env.lower, env.upper, env.count
        )

    # -- charters and verdicts ----------------------------------------------------------------------------
    def charter(self, v: Viewer, trial_id: str) -> CharterRecord | None:
        versions = self.charter_versions(v, trial_id)
        return versions[-1] if versions else None

    def charter_versions(self, v: Viewer, trial_id: str) -> list[CharterRecord]:
        if self.trial(v, trial_id) is None:
            return []
        out = self._catalog.charter_versions(trial_id)
        hidden = self._hidden_members(v, trial_id)
        if hidden:
            out = [_pseudonymous_charter(r, hidden) for r in out]
        return out

    def _baseline_in_full(self, v: Viewer, trial_id: str) -> bool:
        """May the viewer see the frozen baseline run by run: an admin, or an operator of the equipment of
        every one of those runs (the runs they may see anyway)."""
        if v.role == UserRole.ADMIN:
            return True
        if v.role != UserRole.OPERATOR:
            return False
        for m in self._catalog.trial_members(trial_id, BASELINE):
            run = self._catalog.run(m.run_id)
            if run is None or not self._may_see_run(v, run):
                return False
        return True

    def _hidden_members(self, v: Viewer, trial_id: str) -> dict[str, str]:
        """The trial's runs (trial and frozen baseline) the viewer may not see, each with the name it is
        shown by instead: "baseline run K" / "trial run K", K its place in start order in its group. Every
        baseline run when the viewer may not see all of them (a startup, a partner, an operator of other
        equipment); the trial runs it may not see (an operator of other equipment)."""
        if v.role == UserRole.ADMIN:
            return {}
        members = self._catalog.trial_members(trial_id)
        runs = {m.run_id: self._catalog.run(m.run_id) for m in members}
        full = self._baseline_in_full(v, trial_id)
        names: dict[str, str] = {}
        for group in (BASELINE, TRIAL):
            ids = [m.run_id for m in members if m.group == group]
            ids.sort(key=lambda i: (to_us(runs[i].start) if runs[i] is not None else 0, i))  # type: ignore[union-attr]
            for k, run_id in enumerate(ids, 1):
                run = runs[run_id]
                visible = run is not None and self._may_see_run(v, run)
                if (group == BASELINE and not full) or (group == TRIAL and not visible):
                    names[run_id] = f"{group} run {k}"
        return names

    def trial_members(self, v: Viewer, trial_id: str) -> list[TrialMember]:
        if self.trial(v, trial_id) is None:
            return []
        hidden = self._hidden_members(v, trial_id)
        return [m for m in self._catalog.trial_members(trial_id) if m.run_id not in hidden]

    def exclusions(self, v: Viewer, trial_id: str) -> list[ExclusionRecord]:
        if self.trial(v, trial_id) is None:
            return []
        hidden = self._hidden_members(v, trial_id)
        return [
            replace(e, run_id=hidden.get(e.run_id, e.run_id))
            for e in self._catalog.trial_exclusions(trial_id)
        ]

    def _judge(self, trial: Trial) -> JudgedTrial | None:
        versions = [r for r in self._catalog.charter_versions(trial.id) if r.locked]
        if not versions:
            return None
        record = versions[-1]
        members = self._catalog.trial_members(trial.id)
        groups: dict[str, list[RunRecord]] = {TRIAL: [], BASELINE: []}
        origins: dict[str, str] = {}
        imports: dict[str, list[Any]] = {}
        for m in members:
            run = self._catalog.run(m.run_id)
            if run is None:  # gone from the catalog: no KPIs, so the verdict names it not judgeable
                groups[m.group].append(RunRecord(m.run_id, m.added, {}))
                continue
            kpis = {k.name: k for k in self._catalog.kpis(run.id)}
            groups[m.group].append(RunRecord(run.id, run.start, kpis))
            origins[run.id] = run.origin
            imports[run.id] = self._catalog.imports(run_id=run.id)
        exclusions = [
            Exclusion(e.run_id, e.reason, e.by, e.at) for e in self._catalog.trial_exclusions(trial.id)
        ]
        verdict = judge(
            record.charter,
            groups[TRIAL],
            groups[BASELINE],
            exclusions=exclusions,
            charter_version=record.version,
            charter_changed_after_start=self._catalog.charter_changed_after_start(trial.id),
        )
        return JudgedTrial(
            trial, tuple(versions), verdict, tuple(groups[TRIAL]), tuple(groups[BASELINE]), origins, imports
        )

    def verdict(self, v: Viewer, trial_id: str) -> dict[str, Any] | None:
        trial = self.trial(v, trial_id)
        if trial is None:
            return None
        judged = self._judge(trial)
        if judged is None:
            return None
        doc = verdict_to_json(judged.verdict)
        hidden = self._hidden_members(v, trial_id)
        if hidden:
            doc = hide_runs(doc, hidden)
        return doc

    def evidence_pack(self, v: Viewer, trial_id: str, out_dir: Path) -> Manifest | None:
        trial = self.trial(v, trial_id)
        if trial is None:
            return None
        judged = self._judge(trial)
        if judged is None:
            return None
        from processing.evidence.pack import build_evidence_pack  # fpdf2 and matplotlib: only when asked

        inputs = judged.evidence_inputs(self._config.site.name, self._hidden_members(v, trial_id))
        return build_evidence_pack(inputs, out_dir)

    def judged(self, v: Viewer, trial_id: str) -> JudgedTrial | None:
        trial = self.trial(v, trial_id)
        if trial is None or not self._baseline_in_full(v, trial_id):
            return None
        return self._judge(trial)

    # -- health, users, audit ----------------------------------------------------------------------------
    def health(self, v: Viewer) -> HealthView:
        if v.role not in (UserRole.ADMIN, UserRole.OPERATOR) or self._health is None:
            return HealthView()
        tags = self.tags(v, None)
        components = self._health.components()
        if v.role == UserRole.OPERATOR:
            sources = {_source_of(t) for t in tags}
            components = {
                n: c
                for n, c in components.items()
                if n in sources or c[0].get("kind") not in ("opcua", "mqtt")
            }
        names = {t.name for t in tags}
        tag_health = {n: h for n, h in self._health.tags().items() if n in names}
        return HealthView(components, tags, tag_health)

    def users(self, v: Viewer) -> list[User]:
        if not v.is_admin:
            raise Forbidden(f"{v.name} is a {v.role.value}: only an admin lists users")
        return self._catalog.users()

    def audit(self, v: Viewer, *, since: datetime | None, actor: str | None) -> list[AuditEntry]:
        if not v.is_admin:
            raise Forbidden(f"{v.name} is a {v.role.value}: only an admin reads the audit log")
        return self._catalog.audit.entries(since=since, actor=actor)

    # -- run review, compare runs, live envelopes and alarms (issue 11 B2) -------------------------------
    def alarms(self, v: Viewer, *, run_id: str | None, open_only: bool, limit: int | None) -> list[Alarm]:
        if v.role == UserRole.PARTNER:
            return []
        if run_id is not None:
            if self._run(v, run_id) is None:
                return []
            return self._alarms.alarms(run_id=run_id, open_only=open_only, limit=limit)
        if v.role == UserRole.ADMIN:
            return self._alarms.alarms(open_only=open_only, limit=limit)
        visible = {r.id for r in self._visible_runs(v)}
        out = [a for a in self._alarms.alarms(open_only=open_only) if a.run_id in visible]
        return out[:limit] if limit is not None else out

    def acknowledge_alarm(self, v: Viewer, alarm_id: int, comment: str | None) -> Alarm:
        alarm = self._alarms.alarm(alarm_id)
        may = v.role == UserRole.ADMIN or (
            v.role == UserRole.OPERATOR
            and alarm is not None
            and alarm.equipment in self._operator_equipment(v)
        )
        if not may:
            raise Forbidden(f"{v.name} is a {v.role.value}: only an operator of the equipment acknowledges")
        acked = self._alarms.acknowledge(alarm_id, v.name, utcnow(), comment)
        self._catalog.audit.append(
            v.name, "alarm.ack", str(alarm_id), why=comment or "", run=acked.run_id, tag=acked.tag
        )
        return acked

    def envelopes(self, v: Viewer, run_id: str) -> list[Envelope]:
        run = self._run(v, run_id)
        if run is None:
            return []
        out = []
        for stored in self._references.envelopes(run.equipment, run.product or ""):
            if stored.doc is None:
                continue
            env = Envelope.from_json(stored.doc)
            if self._aggregates_only(v):
                if len(env.runs) < MIN_BASELINE_RUNS:
                    continue
                env = replace(env, runs=())
            out.append(env)
        return out

    def run_tags(self, v: Viewer, run_id: str) -> list[Tag]:
        run = self._run(v, run_id)
        if run is None or v.role == UserRole.PARTNER:
            return []
        return self._config.tags_of(run.equipment)

    def alignments(self, v: Viewer, run_id: str) -> list[Alignment]:
        run = self._run(v, run_id)
        if run is None:
            return []
        spec = process_spec(self._config, run.equipment)
        out = [Alignment(axis=Axis.INOCULATION.value, inoculation_phase=spec.inoculation_phase)]
        for env in self.envelopes(v, run_id):
            if all(env.alignment != a for a in out):
                out.append(env.alignment)
        return out

    def warp(self, v: Viewer, run_id: str, alignment: Alignment) -> Warp | None:
        run = self._run(v, run_id)
        if run is None:
            return None
        try:
            return warp_for(self._catalog.phases(run.id), alignment, run_start=run.start)[0]
        except AlignmentError:
            return None

    def aligned(
        self, v: Viewer, run_id: str, tag: str, alignment: Alignment, points: int
    ) -> AlignedSeries | None:
        run = self._run(v, run_id)
        if run is None or v.role == UserRole.PARTNER:
            return None
        try:
            t = self._config.tag(tag)
        except KeyError:
            return None
        if t.equipment != run.equipment or t.is_text:
            return None
        end = run.end or self.latest_time(v)
        if end is None or end <= run.start:
            return None
        bucket_h = max((to_us(end) - to_us(run.start)) / 3.6e9 / max(points, 1), 1e-6)
        data = bucket_series(self._store.read_buckets, tag, run.start, end, bucket_h)
        try:
            return align_series(data, self._catalog.phases(run.id), alignment, run_start=run.start)
        except AlignmentError:
            return None

    # -- ops: batch chains and data quality (issue 11) ----------------------------------------------------
    def chain(self, v: Viewer, run_id: str) -> list[Run]:
        head = self._run(v, run_id)
        if head is None:
            return []
        out, todo, seen = [], [head], {head.id}
        while todo:
            run = todo.pop(0)
            out.append(self._redact_run(v, run))
            for r in self._catalog.downstream_runs(run.id):
                if r.id not in seen and self._may_see_run(v, r):
                    seen.add(r.id)
                    todo.append(r)
        return [out[0], *sorted(out[1:], key=lambda r: (to_us(r.start), r.id))]

    def data_quality(self, v: Viewer, start: datetime, end: datetime) -> DataQualityView:
        health = self.health(v)  # empty for a startup or partner: no collector internals
        t0, t1 = to_us(start), to_us(end)
        running: dict[str, list[tuple[int, int]]] = {}  # equipment -> its runs inside the window
        for run in self.runs(v, equipment=None, kind=None, trial_id=None, open_only=False):
            s, e = to_us(run.start), to_us(run.end) + 1 if run.end is not None else _FOREVER_US
            if s < t1 and e > t0:
                running.setdefault(run.equipment, []).append((s, e))
        rows = []
        for tag in self.tags(v, None):
            if tag.is_text:
                continue
            data = self.series(v, tag.name, start, end)
            t_h = (data.ts.astype(np.float64) - t0) / 3.6e9
            values = np.asarray(data.values, dtype=np.float64)
            spans = running.get(tag.equipment)
            # the flatline test looks inside the equipment's runs when it ran in the window (idle readings
            # are not a stuck sensor), else over the whole window
            active = None
            if spans:
                active = np.zeros(len(data), dtype=bool)
                for s, e in spans:
                    active |= (data.ts >= s) & (data.ts < e)
            collected = health.tag_health.get(tag.name)
            rows.append(
                TagQuality(
                    tag.name,
                    tag.equipment,
                    tag.unit,
                    collected.last_seen if collected else None,
                    from_us(int(data.ts[-1])) if len(data) else None,
                    assess(t_h, values, data.status, active=active),
                    collected.rejected_total if collected else 0,
                )
            )
        if not health.components or self._health is None:
            return DataQualityView(start, end, rows)
        quarantine: dict[str, dict[str, int]] = {}
        for _, source, reason, _ in self._health.quarantine(limit=10_000):
            by_reason = quarantine.setdefault(source, {})
            by_reason[reason] = by_reason.get(reason, 0) + 1
        outages: dict[str, list[bool]] = {}
        for gap in self._health.gaps():
            outages.setdefault(gap.source, []).append(gap.back is None)
        connections = [
            ConnectionQuality(
                name,
                str(doc.get("state", "?")),
                int(doc.get("reconnects", 0) or 0),
                len(outages.get(name, [])),
                any(outages.get(name, [])),
                dict(sorted(quarantine.get(name, {}).items())),
            )
            for name, (doc, _) in health.components.items()
            if doc.get("kind") in ("opcua", "mqtt")
        ]
        sink = health.components.get("sink", ({}, None))[0]
        spool = sink.get("spool_depth_bytes") if sink else None
        fill = sink.get("spool_fill") if sink else None
        return DataQualityView(
            start,
            end,
            rows,
            connections,
            int(spool) if spool is not None else None,
            float(fill) if fill is not None else None,
        )


# -- helpers -----------------------------------------------------------------------------------------------
def _pseudonymous_charter(record: CharterRecord, names: dict[str, str]) -> CharterRecord:
    """The record with the charter's run ids the viewer may not see replaced by their names ("baseline run
    K", "trial run K"; a baseline run not in the frozen baseline: "a baseline run"). `sha256` stays that of
    the charter as locked."""
    doc = json.loads(record.canonical_json)
    c = doc["charter"]
    c["baseline_runs"] = [names.get(i, "a baseline run") for i in c.get("baseline_runs") or []]
    c["trial_runs"] = [names.get(i, i) for i in c.get("trial_runs") or []]
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return replace(record, canonical_json=text)


def _source_of(tag: Tag) -> str:
    src = tag.source
    return f"opcua:{src.server}" if src.protocol == "opcua" else f"mqtt:{src.broker}"


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _inside(ts_us: int, spans: list[tuple[int, int]]) -> bool:
    return any(s <= ts_us < e for s, e in spans)


def _concat_series(tag: str, parts: list[SeriesData]) -> SeriesData:
    if not parts:
        return SeriesData(tag, np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64))
    if len(parts) == 1:
        return parts[0]
    return SeriesData(
        tag,
        np.concatenate([p.ts for p in parts]),
        np.concatenate([p.values for p in parts]),
        np.concatenate([p.status for p in parts]),
    )


def _concat_buckets(tag: str, parts: list[Buckets]) -> Buckets:
    names = ("start", "t_first", "t_last", "min", "max", "mean", "count")
    if not parts:
        empty = {
            n: np.empty(0, np.int64 if n in ("start", "t_first", "t_last", "count") else float) for n in names
        }
        return Buckets(tag, **empty)
    if len(parts) == 1:
        return parts[0]
    return Buckets(tag, **{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


def recent_window(end: datetime, window: timedelta) -> tuple[datetime, datetime]:
    """[end − window, end] with end just after the newest sample (for trends over the last `window`)."""
    end = end + timedelta(microseconds=1)
    return end - window, end
