"""The dashboard's one door to storage: `DashboardData` holds the store and catalog; pages get a `PageData`
for the signed-in viewer, whose every read goes through the query layer (processing/queries/), filtered for
that viewer.

Pages get plain data (tiles, trends, runs) and never touch the store, a broker or a plant server.
The site config and data directory come from BIOPILOT_CONFIG and BIOPILOT_DATA_DIR, which
`biopilot dashboard` (and `biopilot demo`) set for the Streamlit process.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import tempfile
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from scipy.stats import t as student_t

from biopilot import units
from biopilot.access import Trial, User, Viewer, is_loopback
from biopilot.config import Role, SiteConfig, Tag, load_config
from biopilot.errors import BioPilotError
from biopilot.records import KpiRecord, LabResult, Phase, Run, RunKind
from biopilot.samples import Severity, from_us, severity, to_us, utcnow
from processing.alignment import AlignedSeries, Alignment, Axis, Warp
from processing.baseline import alignment_key
from processing.energy import specific_consumption
from processing.envelope import Envelope
from processing.queries import Forbidden, Query, open_query
from processing.queries.auth import Authenticator
from processing.queries.query import BaselineEnvelope, BaselineSummary, DataQualityView, SiteInfo
from storage import Catalog, HealthStore, TimeSeriesStore, open_catalog, open_health, open_store
from storage.charters import CharterRecord, ExclusionRecord
from storage.health import connection_verdict, liveness, source_alive, store_verdict, tag_state

log = logging.getLogger(__name__)

READ_THREADS = 4  # the Run review's reads in parallel
REVIEW_POINTS = 600  # bucket means per run and tag on the Run review and Compare pages
STALE_AFTER_S = 30.0  # without health from the collectors: a value older than this is shown as stale

# The tags a tile shows first, per equipment (by role); the rest follow in config order.
_MAIN_ROLES = [
    Role.PHASE,
    Role.TEMPERATURE,
    Role.PH,
    Role.DISSOLVED_OXYGEN,
    Role.AGITATION_SPEED,
    Role.AIR_FLOW,
    Role.OFFGAS_O2,
    Role.OFFGAS_CO2,
    Role.FEED_RATE,
    Role.VOLUME,
    Role.POWER,
    Role.FLOW,
    Role.SPEED,
]


@dataclass(frozen=True)
class Tile:
    tag: str
    label: str
    value: str  # formatted number or text; "—" when there is no usable value
    unit: str  # for display ("°C"), empty for text and dimensionless tags
    age_s: float | None  # seconds since the store received the newest value
    source_time: datetime | None
    quality: str  # good / uncertain / bad / none
    state: str  # live / stale (silent longer than its max age) / dead (its source is gone)

    @property
    def stale(self) -> bool:
        return self.state != "live"


@dataclass(frozen=True)
class ConnectionStatus:
    name: str  # "opcua:<server>", "mqtt:<broker>" or "store"
    alive: bool
    state: str
    detail: str


@dataclass(frozen=True)
class EquipmentView:
    id: str
    name: str
    kind: str
    batch_id: str
    phase: str
    tiles: list[Tile]


@dataclass(frozen=True)
class Trend:
    tag: str
    unit: str
    t: list[datetime]  # bucket mid-points, in the site's time zone
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray


class DashboardData:
    """What the dashboard process holds: the site config, the store, the catalog and the collectors' health —
    and nothing of it reaches a page. Pages get a `PageData` for the signed-in viewer (`page(viewer)`),
    whose every read goes through the query layer."""

    def __init__(
        self, config: SiteConfig, store: TimeSeriesStore, catalog: Catalog, health: HealthStore | None = None
    ) -> None:
        self._config = config
        self._store = store
        self._catalog = catalog
        self._health = health  # what the collectors report; without it, staleness is judged by age alone
        self.auth = Authenticator(catalog)

    @classmethod
    def from_environment(cls) -> DashboardData:
        config_path = os.environ.get("BIOPILOT_CONFIG", "")
        if not config_path:  # `biopilot dashboard` always sets it; a bare `streamlit run` may not
            config_path = "config/demo.toml"
            log.warning("using %s (no BIOPILOT_CONFIG given)", config_path)
        data_dir = Path(os.environ.get("BIOPILOT_DATA_DIR", "biopilot-data"))
        config = load_config(config_path)
        return cls(
            config,
            open_store(config, data_dir, read_only=True),
            open_catalog(config, data_dir),
            open_health(config, data_dir, read_only=True),
        )

    @property
    def site_name(self) -> str:
        return self._config.site.name

    @property
    def database(self) -> str:
        return str(getattr(self._store, "path", "")) or "?"

    def login_required(self, listening: str | None) -> bool:
        """Login is required when the dashboard listens beyond the loopback interface, or once the data
        directory has users."""
        return not is_loopback(listening) or self._catalog.has_users()

    def user(self, name: str) -> User | None:
        return self._catalog.user(name)

    def page(self, viewer: Viewer) -> PageData:
        return PageData(open_query(viewer, self._config, self._catalog, self._store, self._health))


class PageData:
    """What a page may read: plain records for one viewer, through the query layer
    (processing/queries/query.py). It holds the viewer's Query and nothing else — no store, no catalog, no
    config."""

    __slots__ = ("_q",)

    def __init__(self, query: Query) -> None:
        object.__setattr__(self, "_q", query)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PageData is immutable")

    @property
    def viewer(self) -> Viewer:
        return self._q.viewer

    @property
    def site(self) -> SiteInfo:
        return self._q.site()

    # -- live ------------------------------------------------------------------------------------------
    def equipment_views(self) -> list[EquipmentView]:
        q = self._q
        tags = q.tags()
        latest = q.latest([t.name for t in tags])
        now = utcnow()
        alive = self.sources_alive(now)
        states = self.tag_states(now)
        views = []
        for eq in q.equipment():
            eq_tags = [t for t in tags if t.equipment == eq.id]
            batch = _text(latest.get(_first_name(eq_tags, Role.BATCH_ID)))
            phase = _text(latest.get(_first_name(eq_tags, Role.PHASE)))
            tiles = [
                _tile(
                    tag,
                    latest.get(tag.name),
                    now,
                    alive.get(_source_of(tag)) if alive is not None else None,
                    states.get(tag.name),
                )
                for tag in _ordered(eq_tags)
                if tag.role != Role.BATCH_ID
            ]
            views.append(EquipmentView(eq.id, eq.name or eq.id, eq.kind.value, batch, phase, tiles))
        return views

    def sources_alive(self, now: datetime) -> dict[str, bool] | None:
        """Per collector connection ("opcua:<server>", "mqtt:<broker>"): is it alive? None when no collector
        has reported health (then staleness falls back to the age of the values)."""
        components = self._q.health().components
        if not components:
            return None
        return {name: source_alive(doc, updated, now) for name, (doc, updated) in components.items()}

    def tag_states(self, now: datetime) -> dict[str, str]:
        """The states the collectors' health gives the tags that are not simply live, stale or dead: failed
        (their node cannot be monitored), source-down (a Sparkplug death), rejected (every input refused)."""
        health = self._q.health()
        components, tags = health.components, health.tag_health
        if not components:
            return {}
        out = {}
        for tag in health.tags:
            src = _source_of(tag)
            doc, updated = components.get(src, (None, None))
            ok = source_alive(doc, updated, now)
            state, _ = tag_state(tag.name, tags.get(tag.name), doc, ok, tag.max_age_s, now)
            if state in ("failed", "source-down", "rejected"):
                out[tag.name] = state
        return out

    def collection_status(self) -> list[ConnectionStatus]:
        """One line per collector connection and one for the store, as the collectors last reported."""
        components = self._q.health().components
        now = utcnow()
        out = []
        for name, (doc, updated) in components.items():
            kind = doc.get("kind")
            if kind in ("opcua", "mqtt"):
                ok, why = connection_verdict(doc, updated, now)
                state = doc.get("state", "?") if ok else "down"
                detail = f"{doc.get('reconnects', 0)} reconnects" if ok else why
                out.append(ConnectionStatus(name, ok, state, detail))
        sink = components.get("sink", ({}, now))[0]
        writer, writer_updated = components.get("writer", ({}, None))
        if sink or writer:
            ok, why = store_verdict(sink, writer, writer_updated, now)
            backlog = sink.get("spool_depth_bytes", 0) / 1e6
            detail = f"spool {backlog:.1f} MB not yet stored ({100 * sink.get('spool_fill', 0.0):.1f} %)"
            out.append(ConnectionStatus("store", ok, "ok" if ok else why, detail))
        return out

    def numeric_tags(self) -> list[Tag]:
        return [t for t in self._q.tags() if not t.is_text]

    def latest_time(self) -> datetime | None:
        """Source time of the newest sample the viewer may see: the plant's 'now' (simulated in the demo)."""
        return self._q.latest_time()

    def trends(self, tags: list[str], window: timedelta, buckets: int = 240) -> list[Trend]:
        """Min/mean/max per bucket over the last `window` of process time, downsampled in the store."""
        end = self.latest_time()
        if end is None:
            return []
        end = end + timedelta(microseconds=1)
        start = end - window
        # in the site's zone: plotly draws the wall time of an x value and ignores its offset
        zone = ZoneInfo(self.site.timezone)
        by_name = {t.name: t for t in self._q.tags()}
        out = []
        for name in tags:
            tag = by_name.get(name)
            if tag is None:
                continue
            b = self._q.buckets(name, start, end, buckets)
            mids = [
                from_us((f + lst) // 2).astimezone(zone)
                for f, lst in zip(b.t_first.tolist(), b.t_last.tolist(), strict=True)
            ]
            out.append(Trend(name, units.display(tag.unit), mids, b.mean, b.min, b.max))
        return out

    # -- runs ------------------------------------------------------------------------------------------
    def runs(self) -> list[Run]:
        return self._q.runs()

    def run_kpis(self, run_id: str) -> list[KpiRecord]:
        return self._q.kpis(run_id)

    def run_phases(self, run_id: str) -> list[Phase]:
        return self._q.phases(run_id)

    # -- trials ----------------------------------------------------------------------------------------
    def trials(self) -> list[Trial]:
        return self._q.trials()

    def trial_runs(self, trial_id: str) -> list[Run]:
        return self._q.runs(trial_id=trial_id)

    def baseline(self, trial_id: str) -> BaselineSummary | None:
        return self._q.baseline(trial_id)

    def baseline_envelope(self, trial_id: str, role: str) -> BaselineEnvelope | None:
        return self._q.baseline_envelope(trial_id, role)

    # -- run review, compare runs, live envelopes and alarms (issue 11 B2) ---------------------------------
    def alignment_choices(self, run_id: str) -> list[AlignmentChoice]:
        """Stored envelope alignments first (the envelope can be drawn), then time since inoculation."""
        found = self._q.alignments(run_id)
        choices = [AlignmentChoice(_alignment_label(a), alignment_key(a), a) for a in found]
        return sorted(choices, key=lambda c: c.alignment.axis == Axis.INOCULATION)

    def review_tags(self, run_id: str) -> list[Tag]:
        """The numeric, non-lab tags of the run's equipment (empty when the run is not visible)."""
        return [t for t in self._q.run_tags(run_id) if not t.is_text and t.lab is None]

    def baseline_runs(self, run_id: str) -> list[Run]:
        """The closed baseline runs of the run's equipment and product the viewer may see one by one
        (admin, operator); a startup or partner gets none (the envelope is their baseline)."""
        run = self._q.run(run_id)
        if run is None or self.viewer.role.value not in ("admin", "operator"):
            return []
        return [
            r
            for r in self._q.runs(equipment=run.equipment, kind=RunKind.BASELINE.value)
            if r.id != run.id and r.end is not None and (r.product or "") == (run.product or "")
        ]

    def envelope_tags(self, run_id: str, choice: AlignmentChoice) -> list[str]:
        """The tags with a stored envelope on this alignment for the run's equipment + product."""
        return [e.tag for e in self._q.envelopes(run_id) if alignment_key(e.alignment) == choice.key]

    def kpi_table(self, run_ids: list[str]) -> list[dict[str, str]]:
        """One row per KPI, one column per run (value with its unit; empty where a run has none)."""
        values: dict[str, dict[str, str]] = {}
        units_of: dict[str, str] = {}
        for run_id in run_ids:
            for k in self._q.kpis(run_id):
                units_of[k.name] = k.unit
                values.setdefault(k.name, {})[run_id] = (
                    f"{k.value:.4g}" if k.value is not None else "— (" + ", ".join(k.flags) + ")"
                )
        return [
            {"KPI": name, "unit": units_of[name], **{r: values[name].get(r, "") for r in run_ids}}
            for name in values
        ]

    def review(
        self,
        run_ids: list[str],
        tags: list[str],
        choice: AlignmentChoice,
        *,
        overlay: Sequence[str] = (),
        envelope: bool = True,
        points: int = REVIEW_POINTS,
        by_role: bool = False,
    ) -> Review:
        """Runs (and baseline runs `overlay`) on one aligned axis. tags: tag names, or roles when by_role
        (Compare: each run's tag of that role). The first run's phases, lab results and envelopes."""
        q = self._q
        runs = [r for r in (q.run(i) for i in run_ids) if r is not None]
        notes: list[str] = []
        traces: list[AlignedTrace] = []
        phases: list[PhaseSpan] = []
        lab: list[LabPoint] = []
        bands: dict[str, EnvelopeBand] = {}
        a = choice.alignment
        tag_of: dict[str, Tag] = {}
        jobs: list[tuple[int, Run, Tag]] = []  # (position of the run, run, tag) in drawing order
        for i, run in enumerate([*runs, *(r for r in (q.run(o) for o in overlay) if r is not None)]):
            own = q.run_tags(run.id)
            tag_of.update({t.name: t for t in own})
            chosen = (
                [next((t for t in own if t.role.value == role and not t.is_text), None) for role in tags]
                if by_role
                else [tag_of.get(name) for name in tags]
            )
            jobs += [(i, run, t) for t in chosen if t is not None and t.equipment == run.equipment]
        # the reads run side by side (the store is thread-safe; Parquet reads release the GIL)
        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            found = list(pool.map(lambda job: q.aligned(job[1].id, job[2].name, a, points), jobs))
        warp_done = False
        for (i, run, tag), aligned in zip(jobs, found, strict=True):
            if aligned is None:
                continue
            tr = _trace(run, aligned, tag, i >= len(runs))
            if by_role:
                tr = replace(tr, tag=tag.role.value)
            traces.append(tr)
            for flag in aligned.flags:
                notes.append(f"{run.id}: {flag}")
            if i == 0 and not warp_done:
                warp_done = True
                phases = _phase_spans(q.phases(run.id), aligned.warp, run)
                lab = _lab_points(q.lab_results(run.id), aligned.warp)
        if envelope and runs:
            for env in q.envelopes(runs[0].id):
                if alignment_key(env.alignment) != choice.key:
                    continue
                key = env.tag
                if by_role:
                    t = tag_of.get(env.tag)
                    if t is None or t.role.value not in tags:
                        continue
                    key = t.role.value
                elif env.tag not in tags:
                    continue
                bands[key] = _band(env)
        return Review(
            runs, choice, f"{choice.label} [{a.unit}]", traces, bands, phases, lab, list(dict.fromkeys(notes))
        )

    def alarms(self, *, run_id: str | None = None, open_only: bool = False) -> list[AlarmRow]:
        out = []
        for al in self._q.alarms(run_id=run_id, open_only=open_only):
            if al.kind == "mspc":
                size = f"{al.size:.3g} × limit"
            else:
                rel = f" ({al.size_relative:.2g} half-widths)" if al.size_relative is not None else ""
                size = f"{al.size:.3g} {units.display(al.size_unit)}{rel}"
            out.append(
                AlarmRow(
                    al.id,
                    al.run_id,
                    al.equipment,
                    al.tag,
                    al.variable,
                    al.kind,
                    al.direction,
                    al.raised,
                    size,
                    al.state,
                    al.ack_by,
                    al.ack_at,
                )
            )
        return out

    def may_acknowledge(self) -> bool:
        return self.viewer.role.value in ("admin", "operator")

    def acknowledge(self, alarm_id: int, comment: str | None = None) -> str | None:
        """Acknowledge as the viewer; None when done, else why not (said to the person)."""
        try:
            self._q.acknowledge_alarm(alarm_id, comment)
        except (Forbidden, BioPilotError) as exc:
            return str(exc)
        return None

    def live_bands(self, tags: list[str]) -> dict[str, tuple[list[datetime], EnvelopeBand]]:
        """Per tag, the envelope of the open run on its equipment in plant time (site zone): the band's
        aligned grid mapped back through that run's warp."""
        zone = ZoneInfo(self.site.timezone)
        out: dict[str, tuple[list[datetime], EnvelopeBand]] = {}
        by_name = {t.name: t for t in self._q.tags()}
        for run in self._q.runs(open_only=True):
            wanted = [n for n in tags if n in by_name and by_name[n].equipment == run.equipment]
            if not wanted:
                continue
            envs = [e for e in self._q.envelopes(run.id) if e.tag in wanted]
            for env in envs:
                if env.tag in out:
                    continue
                warp = self._q.warp(run.id, env.alignment)
                if warp is None:
                    continue
                ts = warp.inverse(env.grid)
                ok = np.isfinite(ts)
                when = [from_us(int(x)).astimezone(zone) for x in ts[ok]]
                b = _band(env)
                out[env.tag] = (
                    when,
                    replace(b, t=b.t[ok], mean=b.mean[ok], lower=b.lower[ok], upper=b.upper[ok], n=b.n[ok]),
                )
        return out

    def progress(self) -> list[Progress]:
        """Each live run: aligned time now (on its stored envelopes' alignment, else since inoculation)."""
        now = self._q.latest_time()
        if now is None:
            return []
        out = []
        for run in self._q.runs(open_only=True):
            envs = self._q.envelopes(run.id)
            choices = self._q.alignments(run.id)
            a = envs[0].alignment if envs else (choices[0] if choices else None)
            if a is None:
                continue
            warp = self._q.warp(run.id, a)
            if warp is None:
                continue
            t = float(warp.forward(np.array([to_us(now)], dtype=np.float64))[0])
            phases = self._q.phases(run.id)
            phase = phases[-1].name if phases else ""
            ref = float(envs[0].grid[-1]) if envs and len(envs[0].grid) else None
            out.append(Progress(run.equipment, run.id, phase, t, ref))
        return out

    def charter_versions(self, trial_id: str) -> list[CharterRecord]:
        """Every version of the trial's charter, oldest first (version 0: an unlocked draft)."""
        return self._q.charter_versions(trial_id)

    def exclusions(self, trial_id: str) -> list[ExclusionRecord]:
        return self._q.exclusions(trial_id)

    def verdict(self, trial_id: str) -> dict[str, Any] | None:
        """The verdict JSON, as `biopilot verdict TRIAL --json` prints it for this viewer."""
        return self._q.verdict(trial_id)

    def evidence_pack_zip(self, trial_id: str) -> tuple[str, bytes] | None:
        """The trial's evidence pack for this viewer (as `biopilot report TRIAL` writes it: the baseline as
        aggregates for a startup or a partner) as a zip: (file name, bytes); None without a verdict."""
        with tempfile.TemporaryDirectory(prefix="biopilot-pack-") as tmp:
            name = f"evidence-{trial_id}"
            out = Path(tmp) / name
            manifest = self._q.evidence_pack(trial_id, out)
            if manifest is None:
                return None
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
                for path in sorted(out.rglob("*")):
                    if path.is_file():
                        z.write(path, f"{name}/{path.relative_to(out)}")
        return f"{name}.zip", buffer.getvalue()

    # -- ops: energy & utilities, data quality, yield waterfall (issue 11) -----------------------------------
    def energy_rows(self) -> list[EnergyRow]:
        """The utilities of every run the viewer may see, newest first, from the runs' KPI records
        (processing/kpi/utilities.py): None where a KPI is absent (not metered) or null (its flags say
        why)."""
        out = []
        for run in self._q.runs():
            k = {r.name: r for r in self._q.kpis(run.id)}
            product = k.get("product_out") or k.get("product_formed")  # a recovery step's, a fermenter's
            flags: list[str] = []
            for name in _UTILITY_KPIS:
                for f in k[name].flags if name in k else ():
                    if f not in flags:
                        flags.append(f)
            out.append(
                EnergyRow(
                    run.id,
                    run.equipment,
                    run.is_open,
                    _value(product),
                    {n.removeprefix("energy."): r.value for n, r in k.items() if _is_consumer(n)},
                    *(_value(k.get(n)) for n in _UTILITY_KPIS),
                    tuple(flags),
                )
            )
        return out

    def batch_energy(self, run_id: str) -> BatchEnergy | None:
        """Energy per unit operation along a batch's chain (the fermenter run and its recovery runs), and
        the chain's kWh per kg of the product out of its last step; None when the run is not visible."""
        chain = self._q.chain(run_id)
        if not chain:
            return None
        names = {e.id: e.name or e.id for e in self._q.equipment()}
        ops = []
        flags = []
        for run in chain:
            k = {r.name: r for r in self._q.kpis(run.id)}
            kwh = _value(k.get("energy.total"))
            if kwh is None:
                flags.append(f"missing:energy:{run.id}")
            ops.append(
                UnitOperation(
                    run.id,
                    run.equipment,
                    names.get(run.equipment, run.equipment),
                    kwh,
                    _value(k.get("steam")),
                    _value(k.get("water")),
                    _value(k.get("co2e")),
                )
            )
        product = self.yield_chain(run_id)
        product_kg = product.final_kg if product is not None else None
        total = sum(o.kwh for o in ops if o.kwh is not None) if not flags else None
        if product_kg is None:
            flags.append("missing:product")
        per_kg = (
            specific_consumption(total, product_kg) if total is not None and product_kg is not None else None
        )
        return BatchEnergy(run_id, ops, total, product_kg, _finite(per_kg), tuple(flags))

    def fermenter_runs(self) -> list[Run]:
        """Runs that head a chain: no (visible) upstream run."""
        return [r for r in self._q.runs() if r.upstream_id is None]

    def yield_chain(self, run_id: str) -> YieldChain | None:
        """From titer in the fermenter to product out of the last recovery step, through each step, from the
        runs' KPI records (processing/kpi/downstream.py). A step whose product out or yield is null or
        absent is missing, and so is every level after it (never taken as 100 %)."""
        chain = self._q.chain(run_id)
        if not chain:
            return None
        head = {r.name: r for r in self._q.kpis(chain[0].id)}
        kinds = {e.id: e.kind.value for e in self._q.equipment()}
        # a chain may start at a recovery run (its fermenter is not visible, or there is none): then the
        # head is a step too, and the harvest before it is missing
        head_is_step = kinds.get(chain[0].equipment) == "recovery" or "product_in" in head
        harvested = None if head_is_step else (head.get("product_harvested") or head.get("product_formed"))
        steps = []
        for run in chain if head_is_step else chain[1:]:
            k = {r.name: r for r in self._q.kpis(run.id)}
            flags = tuple(
                f for n in ("product_in", "product_out", "step_yield") for f in (k[n].flags if n in k else ())
            )
            steps.append(
                YieldStep(
                    run.id,
                    run.equipment,
                    _value(k.get("product_in")),
                    _value(k.get("product_out")),
                    _value(k.get("step_yield")),
                    _value(k.get("overall_yield")),
                    tuple(dict.fromkeys(flags)),
                )
            )
        final = steps[-1].product_out_kg if steps else None
        return YieldChain(
            chain[0].id,
            None if head_is_step else _value(head.get("titer")),
            _value(harvested),
            steps,
            final if steps and all(not s.missing for s in steps) else None,
        )

    def data_quality(self, window: timedelta) -> DataQualityView | None:
        """Data quality over the last `window` of process time (None before any data)."""
        end = self.latest_time()
        if end is None:
            return None
        end = end + timedelta(microseconds=1)
        return self._q.data_quality(end - window, end)


# -- ops: energy & utilities, yield waterfall (issue 11) -----------------------------------------------------
_UTILITY_KPIS = (
    "energy.total",
    "specific_energy",
    "steam",
    "steam_specific",
    "water",
    "water_specific",
    "co2e",
    "co2e_specific",
)


@dataclass(frozen=True)
class EnergyRow:
    run_id: str
    equipment: str
    live: bool
    product_kg: float | None
    consumers: dict[str, float | None]  # tag -> kWh
    kwh: float | None
    kwh_per_kg: float | None
    steam_kg: float | None
    steam_per_kg: float | None
    water_m3: float | None
    water_per_kg: float | None
    co2e_kg: float | None
    co2e_per_kg: float | None
    flags: tuple[str, ...]  # of the utility KPIs: missing_input:<tag>, no_emission_factor:<utility>…


@dataclass(frozen=True)
class UnitOperation:
    run_id: str
    equipment: str
    name: str
    kwh: float | None
    steam_kg: float | None
    water_m3: float | None
    co2e_kg: float | None


@dataclass(frozen=True)
class BatchEnergy:
    run_id: str
    operations: list[UnitOperation]
    kwh: float | None  # None when a unit operation's energy is missing
    product_kg: float | None  # out of the chain's last step
    kwh_per_kg: float | None
    flags: tuple[str, ...]


@dataclass(frozen=True)
class YieldStep:
    run_id: str
    equipment: str
    product_in_kg: float | None
    product_out_kg: float | None
    step_yield: float | None  # [–]
    overall_yield: float | None  # [–] Π step yields: out of this step / into the first step
    flags: tuple[str, ...]

    @property
    def missing(self) -> bool:
        return self.product_out_kg is None or self.step_yield is None


@dataclass(frozen=True)
class YieldChain:
    run_id: str
    titer_g_l: float | None
    harvested_kg: float | None
    steps: list[YieldStep]
    final_kg: float | None  # out of the last step; None when a step is missing or there is no step


def _value(record: KpiRecord | None) -> float | None:
    return _finite(record.value) if record is not None else None


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _is_consumer(name: str) -> bool:
    return name.startswith("energy.") and name != "energy.total"


def baseline_band(kpi: dict[str, Any]) -> tuple[float, float, float] | None:
    """(mean, low, high) of the baseline in a verdict KPI object: its mean with the 1 − α Student-t
    interval mean ± t(1 − α/2, n − 1) · sd / √n over the usable baseline runs (None with fewer than 2)."""
    n, mean, sd = kpi.get("n_baseline") or 0, kpi.get("mean_baseline"), kpi.get("sd_baseline")
    if n < 2 or mean is None or sd is None:
        return None
    half = float(student_t.ppf(1 - (1 - kpi.get("ci_level", 0.95)) / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _first_name(tags: list[Tag], role: Role) -> str:
    return next((t.name for t in tags if t.role == role), "")


def _text(latest: object) -> str:
    sample = getattr(latest, "sample", None)
    return str(sample.value) if sample is not None and isinstance(sample.value, str) else ""


def _ordered(tags: list[Tag]) -> list[Tag]:
    rank = {role: i for i, role in enumerate(_MAIN_ROLES)}
    return sorted(tags, key=lambda t: rank.get(t.role, len(rank)))


_ROLE_LABELS = {Role.PH: "pH", Role.OFFGAS_O2: "Off-gas O₂", Role.OFFGAS_CO2: "Off-gas CO₂"}


def _label(tag: Tag) -> str:
    if tag.description:
        return tag.description
    return _ROLE_LABELS.get(tag.role, tag.role.value.replace("_", " ").capitalize())


def _format(value: float | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value or "—"
    if not np.isfinite(value):
        return "—"
    digits = 0 if abs(value) >= 1000 else 1 if abs(value) >= 100 else 2 if abs(value) >= 1 else 3
    return f"{value:,.{digits}f}"


def _source_of(tag: Tag) -> str:
    return tag.source_label or "import"  # an import-only tag has no collector


def _tile(
    tag: Tag, latest: object, now: datetime, source_is_alive: bool | None, health_state: str | None = None
) -> Tile:
    sample = getattr(latest, "sample", None)
    if sample is None:
        state = health_state or ("dead" if source_is_alive is False else "stale")
        return Tile(tag.name, _label(tag), "—", "", None, None, "none", state)
    received = getattr(latest, "received", None) or sample.ts
    age = max((now - received).total_seconds(), 0.0)
    if source_is_alive is None:  # no health reported: judge by age alone
        state = "stale" if age > STALE_AFTER_S else "live"
    else:
        state = health_state or liveness(source_is_alive, age, tag.max_age_s)
    quality = {Severity.GOOD: "good", Severity.UNCERTAIN: "uncertain", Severity.BAD: "bad"}[
        severity(sample.status)
    ]
    value = "—" if quality == "bad" else _format(sample.value)
    unit = "" if tag.is_text or value == "—" else units.display(tag.unit)
    return Tile(tag.name, _label(tag), value, unit, age, sample.ts, quality, state)


# -- run review, compare runs, live envelopes and alarms (issue 11 B2) -------------------------------------
@dataclass(frozen=True)
class AlignedTrace:
    """One tag of one run on the aligned axis: bucket means (NaN where the line breaks: a gap)."""

    run_id: str
    tag: str
    role: str
    unit: str  # for display
    t: np.ndarray  # aligned coordinate [axis unit]
    values: np.ndarray
    baseline: bool  # a baseline run laid over the reviewed one


@dataclass(frozen=True)
class EnvelopeBand:
    """A stored golden-batch envelope of one tag (the 95 % prediction band) on the aligned grid."""

    tag: str
    unit: str
    t: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n: np.ndarray  # baseline runs with a value at each point
    n_runs: int  # runs the envelope rests on (the most at any point)


@dataclass(frozen=True)
class PhaseSpan:
    name: str
    t0: float  # aligned
    t1: float


@dataclass(frozen=True)
class LabPoint:
    analyte: str
    unit: str
    t: float  # aligned
    value: float


@dataclass(frozen=True)
class AlignmentChoice:
    label: str
    key: str
    alignment: Alignment


@dataclass(frozen=True)
class Review:
    """What the Run review and Compare pages draw: traces per tag (or role), envelopes, phases, lab points."""

    runs: list[Run]
    alignment: AlignmentChoice
    axis_label: str
    traces: list[AlignedTrace]
    bands: dict[str, EnvelopeBand]
    phases: list[PhaseSpan]
    lab: list[LabPoint]
    notes: list[str]

    def csv(self) -> str:
        """The shown data, one line per point: run, tag, aligned time, value (envelopes as their bounds)."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["run", "series", "unit", f"aligned_{self.alignment.alignment.unit}", "value"])
        for tr in self.traces:
            for t, y in zip(tr.t.tolist(), tr.values.tolist(), strict=True):
                if np.isfinite(t) and np.isfinite(y):
                    w.writerow([tr.run_id, tr.tag, tr.unit, f"{t:.4f}", f"{y:.6g}"])
        for tag, b in self.bands.items():
            for name, arr in (
                ("envelope_lower", b.lower),
                ("envelope_mean", b.mean),
                ("envelope_upper", b.upper),
            ):
                for t, y in zip(b.t.tolist(), arr.tolist(), strict=True):
                    if np.isfinite(y):
                        w.writerow([name, tag, b.unit, f"{t:.4f}", f"{y:.6g}"])
        for p in self.lab:
            w.writerow(["lab", p.analyte, p.unit, f"{p.t:.4f}", f"{p.value:.6g}"])
        return out.getvalue()


@dataclass(frozen=True)
class AlarmRow:
    id: int
    run_id: str
    equipment: str
    tag: str
    variable: str | None
    kind: str
    direction: str
    raised: datetime
    size: str  # formatted with its unit
    state: str  # open / closed
    ack_by: str | None
    ack_at: datetime | None


@dataclass(frozen=True)
class Progress:
    """How far into its batch a vessel's live run is: aligned time now against the reference batch."""

    equipment: str
    run_id: str
    phase: str
    aligned_h: float
    reference_h: float | None  # the envelope grid's end (the baseline's length on this axis)


def _alignment_label(a: Alignment) -> str:
    if a.axis == Axis.LANDMARKS:
        return "phase landmarks (" + " → ".join(a.landmarks) + ")"
    if a.axis == Axis.MATURITY:
        return f"maturity ({a.maturity})"
    return "time since inoculation"


def _trace(run: Run, a: AlignedSeries, tag: Tag, baseline: bool) -> AlignedTrace:
    values = np.where(a.severity >= Severity.BAD, np.nan, a.values)
    # a line break: NaN inserted before each sample the line must not reach from the one before
    breaks = np.flatnonzero(a.breaks[1:]) + 1 if len(a) > 1 else np.empty(0, np.int64)
    t = np.insert(a.t, breaks, np.nan)
    y = np.insert(values, breaks, np.nan)
    return AlignedTrace(run.id, tag.name, tag.role.value, units.display(tag.unit), t, y, baseline)


def _band(env: Envelope) -> EnvelopeBand:
    return EnvelopeBand(
        env.tag,
        units.display(env.unit),
        env.grid,
        env.mean,
        env.lower,
        env.upper,
        env.n,
        int(env.n.max()) if len(env.n) else 0,
    )


def _phase_spans(phases: list[Phase], warp: Warp, run: Run) -> list[PhaseSpan]:
    out = []
    for p in sorted(phases, key=lambda p: p.start):
        end = p.end or run.end
        t0 = float(warp.forward(np.array([to_us(p.start)], dtype=np.float64))[0])
        t1 = float(warp.forward(np.array([to_us(end)], dtype=np.float64))[0]) if end else t0
        if np.isfinite(t0) and np.isfinite(t1):
            out.append(PhaseSpan(p.name, t0, t1))
    return out


def _lab_points(results: list[LabResult], warp: Warp) -> list[LabPoint]:
    if not results:
        return []
    t = warp.forward(np.array([to_us(r.ts) for r in results], dtype=np.float64))
    return [
        LabPoint(r.analyte, units.display(r.unit), float(x), float(r.value))
        for r, x in zip(results, t.tolist(), strict=True)
        if np.isfinite(x)
    ]
