"""Live deviation alarms: a run seen so far against its equipment + product's stored references (the golden-
batch envelopes and the batch MSPC model, storage/references.py), stored as alarms (storage/alarms.py).

For each live run, on each pass of the processing service (at most every [processing] provisional_interval_s,
like the provisional KPIs), `evaluate_run`:
- reads what has been seen of the run at the references' grid resolution and aligns it with their alignment
  (processing.baseline.run_on_grid: store buckets, the same reading the references were built from);
- evaluates each tag against its envelope (processing.deviation.deviation_alarms: 3 consecutive points outside
  the 99 % band on the same side, cleared after 3 back inside) and all of them against the MSPC model
  (processing.mspc.mspc_online: T² or SPE above its 99 % limit at 3 consecutive points, the missing future
  by projection to the model plane; the alarm names the top contributing tag);
- turns each excursion into an AlarmObservation with the plant times of its start, alarm point, last point
  outside and end.

`reconcile` decides what that means for the stored alarms of the run: an excursion already stored (the same
key: tag, direction and aligned start) is updated while it continues and closed when it ends; a new one is
inserted once. When a landmark is reached (the feed starts), the run's earlier part is re-aligned and an
excursion's aligned start may move by a grid point: a stored alarm of the same tag, kind and direction whose
plant-time span overlaps the new one (within two grid steps) is taken as the same excursion. A stored open
alarm the evaluation no longer finds is closed with the reason; when the run ends its open alarms are closed
at the run's end.

`AlarmMonitor` is what the processing service calls each pass: it builds references automatically where none
are stored (`auto_build`: an equipment + product with at least mspc.MIN_RUNS closed baseline runs, built once
per set of runs; [processing] auto_references) and evaluates the runs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from biopilot.config import Role, SiteConfig
from biopilot.errors import BioPilotError
from biopilot.records import Phase, Run, RunKind
from biopilot.samples import from_us, utcnow
from processing import mspc as mspc_mod
from processing.alignment import GridSeries
from processing.baseline import (
    AUTO_BY,
    BaselineError,
    ReadBuckets,
    build_references,
    grid_step_h,
    run_on_grid,
    select_baseline_runs,
)
from processing.deviation import DEFAULT_ALARM_ALPHA, DEFAULT_CONSECUTIVE, alarm_band, deviation_alarms
from processing.envelope import Envelope
from processing.mspc import MspcModel, mspc_online, run_array
from storage.alarms import Alarm, AlarmKind, AlarmObservation, Alarms
from storage.base import TimeSeriesStore
from storage.catalog import Catalog
from storage.references import References

log = logging.getLogger(__name__)

STATISTIC_TAGS = {"t2": "mspc:T²", "spe": "mspc:SPE"}
LIMIT_UNIT = "x limit"  # MSPC sizes: the statistic as a multiple of its 99 % limit
MATCH_STEPS = 2  # a re-aligned excursion is the stored one when their plant-time spans are this close


@dataclass(frozen=True)
class LiveReferences:
    """The references a run is judged against: envelopes (one per tag, one alignment) and the MSPC model."""

    equipment: str
    product: str
    alignment: str  # the key
    envelopes: tuple[Envelope, ...]
    model: MspcModel | None

    @property
    def tags(self) -> list[str]:
        out = [e.tag for e in self.envelopes]
        if self.model is not None:
            out += [v for v in self.model.variables if v not in out]
        return out


def load_references(references: References, equipment: str, product: str) -> LiveReferences | None:
    """The stored references of an equipment + product: the MSPC model and the envelopes of its alignment
    (without a model, the envelopes of the newest alignment); None when nothing is stored."""
    stored_model = references.model(equipment, product)
    model = mspc_mod.MspcModel.from_json(stored_model.doc) if stored_model and stored_model.doc else None
    envs = references.envelopes(equipment, product)
    if stored_model is not None:
        key = stored_model.alignment
    elif envs:
        key = max(envs, key=lambda e: e.computed).alignment
    else:
        return None
    envelopes = tuple(Envelope.from_json(e.doc) for e in envs if e.alignment == key and e.doc is not None)
    return LiveReferences(equipment, product, key, envelopes, model)


# -- evaluating a run ---------------------------------------------------------------------------------------
def evaluate_run(
    run: Run,
    phases: Sequence[Phase],
    read_buckets: ReadBuckets,
    refs: LiveReferences,
    *,
    until: datetime | None = None,
    consecutive: int = DEFAULT_CONSECUTIVE,
) -> list[AlarmObservation]:
    """Every excursion of the run so far (up to its end, or `until` while live) against the references."""
    out: list[AlarmObservation] = []
    cache: dict[tuple[str, str], dict[str, GridSeries]] = {}

    def on_grid(ref: Envelope | MspcModel, tags: Sequence[str]) -> dict[str, GridSeries]:
        a, g = ref.alignment, ref.grid
        have = cache.setdefault((repr(a.to_json()), f"{g[0]}:{len(g)}:{grid_step_h(g)}"), {})
        missing = [t for t in tags if t not in have]
        if missing:
            have.update(run_on_grid(read_buckets, run, phases, missing, a, g, until=until))
        return {t: have[t] for t in tags}

    for env in refs.envelopes:
        live = on_grid(env, [env.tag])[env.tag]
        out.extend(_envelope_observations(run, env, live, refs.alignment, consecutive))
    if refs.model is not None:
        series = on_grid(refs.model, list(refs.model.variables))
        out.extend(_mspc_observations(run, refs.model, series, refs.alignment, consecutive))
    return out


def _index(g: np.ndarray, t: float) -> int:
    return int(np.argmin(np.abs(g - t)))


def _at(ts_us: np.ndarray, i: int) -> datetime | None:
    v = float(ts_us[i])
    return from_us(round(v)) if math.isfinite(v) else None


def _envelope_observations(
    run: Run, env: Envelope, live: GridSeries, key: str, consecutive: int
) -> list[AlarmObservation]:
    alarms = deviation_alarms(env, live, consecutive=consecutive)
    if not alarms:
        return []
    x = np.asarray(live.values, dtype=np.float64)
    lo, hi = alarm_band(env, DEFAULT_ALARM_ALPHA)
    evaluated = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
    with np.errstate(invalid="ignore"):
        side = np.where(evaluated & (x > hi), 1, np.where(evaluated & (x < lo), -1, 0))
    out = []
    for a in alarms:
        i0, ir = _index(env.grid, a.start_t), _index(env.grid, a.t)
        i1 = _index(env.grid, a.end_t) if a.end_t is not None else len(env.grid)
        d = 1 if a.direction == "above" else -1
        outside = [i for i in range(i0, i1) if side[i] == d]
        last = outside[-1] if outside else ir
        start, raised, last_at = _at(live.ts_us, i0), _at(live.ts_us, ir), _at(live.ts_us, last)
        end = _at(live.ts_us, i1) if a.end_t is not None else None
        if start is None or raised is None or last_at is None:
            continue
        detail = {
            **a.to_json(),
            "alignment": key,
            "band": f"{1 - DEFAULT_ALARM_ALPHA:.0%}",
            "envelope_runs": len(env.runs),
            "envelope_computed": env.computed.isoformat(),
        }
        out.append(
            AlarmObservation(
                run_id=run.id,
                key=f"envelope|{a.key}",
                equipment=run.equipment,
                tag=env.tag,
                variable=env.tag,
                kind=AlarmKind.ENVELOPE.value,
                direction=a.direction,
                start=start,
                raised=raised,
                last=last_at,
                end=end,
                start_t=a.start_t,
                raised_t=a.t,
                axis_unit=env.alignment.unit,
                size=a.size,
                peak=a.peak,
                size_unit=env.unit,
                size_relative=a.size_halfwidths,
                peak_relative=a.peak_halfwidths,
                detail=detail,
            )
        )
    return out


def _mspc_observations(
    run: Run, model: MspcModel, series: dict[str, GridSeries], key: str, consecutive: int
) -> list[AlarmObservation]:
    x = run_array(series, model.variables)
    ts_us = next(iter(series.values())).ts_us
    traj = mspc_online(model, x, ts_us=ts_us, consecutive=consecutive)
    out = []
    for a in traj.alarms:
        stat = traj.t2 if a.statistic == "t2" else traj.spe
        limit = (
            np.full(len(model.grid), traj.t2_limits[0.99]) if a.statistic == "t2" else traj.spe_limits[0.99]
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            above = np.isfinite(stat) & np.isfinite(limit) & (stat > limit)
        i0, ir = _index(model.grid, a.start_t), _index(model.grid, a.t)
        i1 = _index(model.grid, a.end_t) if a.end_t is not None else len(model.grid)
        outside = [i for i in range(i0, i1) if above[i]]
        last = outside[-1] if outside else ir
        start, raised, last_at = _at(ts_us, i0), _at(ts_us, ir), _at(ts_us, last)
        end = _at(ts_us, i1) if a.end_t is not None else None
        if start is None or raised is None or last_at is None:
            continue
        detail = {
            **a.to_json(),
            "alignment": key,
            "limit": "99 %",
            "n_components": model.n_components,
            "model_runs": model.n_runs,
            "model_computed": model.computed.isoformat(),
        }
        out.append(
            AlarmObservation(
                run_id=run.id,
                key=a.key,
                equipment=run.equipment,
                tag=STATISTIC_TAGS[a.statistic],
                variable=a.top_variable,
                kind=AlarmKind.MSPC.value,
                direction="above",
                start=start,
                raised=raised,
                last=last_at,
                end=end,
                start_t=a.start_t,
                raised_t=a.t,
                axis_unit=model.alignment.unit,
                size=a.ratio,
                peak=a.peak_ratio,
                size_unit=LIMIT_UNIT,
                detail=detail,
            )
        )
    return out


# -- reconciling with the stored alarms -------------------------------------------------------------------
@dataclass
class AlarmPlan:
    """What to write: new alarms, stored ones that changed (by id), stored ones to close (id → (end, why))."""

    inserts: list[AlarmObservation] = field(default_factory=list)
    updates: dict[int, AlarmObservation] = field(default_factory=dict)
    closes: dict[int, tuple[datetime, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.inserts or self.updates or self.closes)


def _same(stored: Alarm, obs: AlarmObservation) -> bool:
    """Nothing to write: the observation says what is stored."""
    return (
        stored.key == obs.key
        and stored.variable == obs.variable
        and stored.start == obs.start
        and stored.raised == obs.raised
        and stored.last == obs.last
        and stored.end == obs.end
        and stored.state == obs.state
        and math.isclose(stored.peak, obs.peak, rel_tol=1e-9, abs_tol=1e-12)
    )


def reconcile(
    stored: Sequence[Alarm], observed: Sequence[AlarmObservation], tolerance: timedelta
) -> AlarmPlan:
    """Match one run's observed excursions with its stored alarms (module doc): by key, else by the same
    tag, kind and direction with plant-time spans within `tolerance` of each other."""
    plan = AlarmPlan()
    by_key = {a.key: a for a in stored}
    matched: set[int] = set()
    pending = []
    for obs in observed:
        hit = by_key.get(obs.key)
        if hit is not None and hit.id not in matched:
            matched.add(hit.id)
            if not _same(hit, obs):
                plan.updates[hit.id] = obs
        else:
            pending.append(obs)
    for obs in pending:
        o_end = obs.end or obs.last
        candidates = [
            a
            for a in stored
            if a.id not in matched
            and (a.tag, a.kind, a.direction) == (obs.tag, obs.kind, obs.direction)
            and a.start - tolerance <= o_end
            and obs.start <= (a.end or a.last) + tolerance
        ]
        if candidates:
            hit = min(candidates, key=lambda a: abs((a.start - obs.start).total_seconds()))
            matched.add(hit.id)
            if not _same(hit, obs):
                plan.updates[hit.id] = obs
        else:
            plan.inserts.append(obs)
    for a in stored:
        if a.id not in matched and a.is_open:
            plan.closes[a.id] = (a.last, "no longer found when the run was evaluated again")
    return plan


# -- the service's part ------------------------------------------------------------------------------------
class AlarmMonitor:
    """Stored references built where none exist, and each live run's alarms kept up to date (module doc).

    interval_s: a live run is evaluated at most this often (wall clock, `clock`); a run that just started or
    ended is evaluated in the same pass. auto_build: build references automatically (default: the config's
    [processing] auto_references)."""

    def __init__(
        self,
        config: SiteConfig,
        store: TimeSeriesStore,
        catalog: Catalog,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        auto_build: bool | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.catalog = catalog
        self.references = References(catalog.db)
        self.alarms = Alarms(catalog.db)
        self.interval_s = interval_s
        self.clock = clock
        self.auto = config.processing.auto_references if auto_build is None else auto_build
        self.evaluations = 0
        self._at: dict[str, float] = {}
        self._watched: set[str] = set()  # runs evaluated while open (their end closes their alarms)
        self._refs: dict[tuple[str, str], tuple[tuple[int, int, int], LiveReferences | None]] = {}
        self._tried: dict[tuple[str, str], frozenset[str]] = {}

    def on_pass(self, runs: Sequence[Run], changed: set[str]) -> None:
        """One pass: build missing references, then evaluate the runs that are due."""
        if self.auto:
            self.auto_build()
        now = self.clock()
        for run in runs:
            if run.end is not None and run.id not in self._watched and not self._has_open_alarms(run.id):
                continue  # a closed run nobody watched live: not judged here (the review page does that)
            last = self._at.get(run.id)
            due = last is None or now - last >= self.interval_s
            if not (due or run.id in changed or run.end is not None):
                continue
            try:
                self.evaluate(run)
            except BioPilotError as exc:
                log.warning("run %s: no deviation alarms (%s)", run.id, exc)
            self._at[run.id] = now

    def _has_open_alarms(self, run_id: str) -> bool:
        return bool(self.alarms.alarms(run_id=run_id, open_only=True, limit=1))

    def live_references(self, equipment: str, product: str) -> LiveReferences | None:
        """The stored references, parsed once per version of what is stored."""
        stamp = self.references.stamp(equipment, product)
        cached = self._refs.get((equipment, product))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        refs = load_references(self.references, equipment, product)
        self._refs[(equipment, product)] = (stamp, refs)
        return refs

    def evaluate(self, run: Run) -> list[int]:
        """Evaluate the run against its references and store what changed; the ids of new alarms."""
        refs = self.live_references(run.equipment, run.product or "")
        if refs is None:
            return []
        until = None
        if run.end is None:
            latest = self.store.latest(refs.tags)
            if not latest:
                return []
            until = max(v.sample.ts for v in latest.values()) + timedelta(microseconds=1)
            if until <= run.start:
                return []
            self._watched.add(run.id)
        observed = evaluate_run(run, self.catalog.phases(run.id), self.store.read_buckets, refs, until=until)
        self.evaluations += 1
        step = grid_step_h(refs.model.grid if refs.model is not None else refs.envelopes[0].grid)
        stored = self.alarms.alarms(run_id=run.id)
        plan = reconcile(stored, observed, timedelta(hours=MATCH_STEPS * step))
        if run.end is not None:  # nothing stays open after the run: what is still on ends with it
            self._watched.discard(run.id)
            plan.inserts = [
                o
                if o.end is not None
                else replace(o, end=run.end, detail={**o.detail, "closed": "the run ended"})
                for o in plan.inserts
            ]
            for a in stored:
                if a.is_open and a.id not in plan.closes:
                    obs = plan.updates.get(a.id)
                    if obs is None or obs.end is None:
                        plan.closes[a.id] = (run.end, "the run ended")
        ids = self.alarms.apply(inserts=plan.inserts, updates=plan.updates, closes=plan.closes, now=utcnow())
        for obs, alarm_id in zip(plan.inserts, ids, strict=True):
            log.warning(
                "run %s: alarm %d %s %s (%s) raised at %s",
                run.id,
                alarm_id,
                obs.tag,
                obs.direction,
                obs.variable,
                obs.raised.isoformat(),
            )
        return ids

    def auto_build(self) -> list[tuple[str, str]]:
        """Build references for every equipment + product that has none stored and at least
        mspc.MIN_RUNS closed baseline runs (once per set of runs: a refused build is not retried until the
        set changes). Returns the (equipment, product) built."""
        built = []
        for eq in self.config.equipment:
            if not self.config.role_tags(eq.id, Role.BATCH_ID):
                continue
            runs = select_baseline_runs(
                self.catalog.runs(eq.id, kind=RunKind.BASELINE.value), equipment=eq.id
            )
            by_product: dict[str, list[Run]] = {}
            for r in runs:
                by_product.setdefault(r.product or "", []).append(r)
            for product, group in by_product.items():
                if len(group) < mspc_mod.MIN_RUNS:
                    continue
                ids = frozenset(r.id for r in group)
                if self._tried.get((eq.id, product)) == ids or self.references.stamp(eq.id, product) != (
                    0,
                    0,
                    0,
                ):
                    continue  # tried with these runs already, or references are stored
                self._tried[(eq.id, product)] = ids
                t0 = time.perf_counter()
                try:
                    result = build_references(
                        self.config, self.store.read_buckets, self.catalog.phases, equipment=eq.id, runs=group
                    )
                except BaselineError as exc:
                    log.warning(
                        "%s (%s): no baseline references built automatically: %s", eq.id, product, exc
                    )
                    continue
                result.save(self.references, AUTO_BY)
                for why in result.refused:
                    log.warning("%s (%s): %s", eq.id, product, why)
                log.info(
                    "%s (%s): baseline references from %d runs (%d envelopes, MSPC model: %s) in %.1f s",
                    eq.id,
                    product or "no product",
                    len(group),
                    len(result.envelopes),
                    "yes" if result.model is not None else "no",
                    time.perf_counter() - t0,
                )
                built.append((eq.id, product))
        return built
