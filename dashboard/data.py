"""The dashboard's one door to storage: `DashboardData` holds the store and catalog; pages get a `PageData`
for the signed-in viewer, whose every read goes through the query layer (processing/queries/), filtered for
that viewer.

Pages get plain data (tiles, trends, runs) and never touch the store, a broker or a plant server.
The site config and data directory come from BIOPILOT_CONFIG and BIOPILOT_DATA_DIR, which
`biopilot dashboard` (and `biopilot demo`) set for the Streamlit process.
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from scipy.stats import t as student_t

from biopilot import units
from biopilot.access import Trial, User, Viewer, is_loopback
from biopilot.config import Role, SiteConfig, Tag, load_config
from biopilot.records import KpiRecord, Phase, Run
from biopilot.samples import Severity, from_us, severity, utcnow
from processing.queries import Query, open_query
from processing.queries.auth import Authenticator
from processing.queries.query import BaselineEnvelope, BaselineSummary, SiteInfo
from storage import Catalog, HealthStore, TimeSeriesStore, open_catalog, open_health, open_store
from storage.charters import CharterRecord, ExclusionRecord
from storage.health import connection_verdict, liveness, source_alive, store_verdict, tag_state

log = logging.getLogger(__name__)

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
