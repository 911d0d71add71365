"""The processing service: reads stored samples, keeps the catalog's runs up to date and computes
their KPIs (provisional while a run is live, final when it closes). It never talks to a plant source.

When KPIs are computed:
- a run that starts or ends in a pass: in that pass (final KPIs at its end);
- a live run: at most every [processing] provisional_interval_s of wall clock (default 30 s), so a long run
  does not cost a whole recomputation on every pass;
- a closed run whose lab results arrive late over lab tags (a LIMS reports hours after sampling, often
  after the harvest): when the number of lab-tag samples in it changes, checked for the runs that ended
  in the last LAB_LATE_DAYS of the equipment's clock; the runs downstream of it are recomputed with it.

Runs against the baseline (processing/live_alarms.py, AlarmMonitor): after the KPIs of a pass, golden-batch
envelopes and an MSPC model are built for an equipment + product that has none stored and enough closed
baseline runs, and each live run is judged against the stored ones (at most every provisional_interval_s,
like its KPIs), its deviation alarms stored. A run detected live whose batch id matches the equipment's
[[process]] baseline_batches pattern is recorded as a baseline run.

With a store that keeps a columnar tier (storage.base.RunArchive, the embedded default), each pass also
archives every closed run whose span the archive does not hold yet — [storage.archive] after_s of wall clock
after the pass that first saw it closed, so samples still in flight land before — with its equipment's
tags, and lets the store do its housekeeping (late samples folded in, raw rows past retention pruned).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from biopilot.aio import wait_for_event
from biopilot.config import EquipmentKind, Role, SiteConfig, Tag, process_spec
from biopilot.ids import id_problem, shown
from biopilot.records import KpiRecord, Phase, Run, RunKind, RunOrigin, run_id_for
from biopilot.samples import from_us, to_us, utcnow
from processing.kpis import KPI_VERSION, compute_run_kpis
from processing.live_alarms import AlarmMonitor
from processing.runs import Change, detect_phases, detect_runs
from storage.base import RunArchive, TimeSeriesStore
from storage.catalog import Catalog

log = logging.getLogger(__name__)

__all__ = ["KPI_VERSION", "Processing"]

_FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)
LAB_LATE_DAYS = 14.0  # closed runs this recent (by the equipment's clock) are watched for late lab results


class Processing:
    """provisional_interval_s: a live run's provisional KPIs are recomputed at most this often (wall
    clock; default: the config's [processing] provisional_interval_s); a run that just started or closed
    is always computed in the same pass. clock: the wall clock (time.monotonic) the interval is measured
    on. archive: where closed runs are archived (None: nowhere; the embedded store is its own archive:
    pass it); archive_after_s: default [storage.archive] after_s."""

    def __init__(
        self,
        config: SiteConfig,
        store: TimeSeriesStore,
        catalog: Catalog,
        *,
        provisional_interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        archive: RunArchive | None = None,
        archive_after_s: float | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.catalog = catalog
        self.passes = 0
        self.provisional_interval_s = (
            config.processing.provisional_interval_s
            if provisional_interval_s is None
            else provisional_interval_s
        )
        self.clock = clock
        self.computed = 0  # KPI computations so far (runs × passes that computed them)
        # Batch ids refused from batch-id tags (not valid ids: no run is started for them), with why:
        # (tag, batch id) -> reason. Each is logged once.
        self.refused_batches: dict[tuple[str, str], str] = {}
        self._computed_at: dict[str, float] = {}
        self.alarm_monitor = AlarmMonitor(
            config, store, catalog, interval_s=self.provisional_interval_s, clock=clock
        )
        self.archive = archive
        self.archive_after_s = config.storage.archive.after_s if archive_after_s is None else archive_after_s
        self.archived = 0  # runs archived so far
        self._closed_seen: dict[str, float] = {}
        self._not_archived: set[tuple[str, datetime, datetime | None]] = set()  # runs the archive refused

    async def run(self, stop: asyncio.Event, interval_s: float = 2.0) -> None:
        """Passes every interval_s until stop; archiving (minutes for a long run) runs in a thread of its
        own, so live KPIs do not wait for it."""
        loops = [self._every(stop, interval_s, lambda: self.process_once(archive=False), "processing pass")]
        if self.archive is not None:
            loops.append(self._every(stop, interval_s, self.archive_closed, "archiving"))
        await asyncio.gather(*loops)

    @staticmethod
    async def _every(stop: asyncio.Event, interval_s: float, work: Callable[[], object], what: str) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(work)
            except Exception:  # a bad run must not stop processing of the others
                log.exception("%s failed; retrying in %.0f s", what, interval_s)
            await wait_for_event(stop, interval_s)

    def process_once(self, *, archive: bool = True) -> list[Run]:
        """Detect run starts and ends since the last pass; recompute KPIs of open and just-closed runs
        (upstream runs first, so a recovery run finds its fermenter's titer); then (archive) archive the
        closed runs that are due."""
        touched: dict[str, Run] = {}
        changed: set[str] = set()
        for eq in self.config.equipment:
            for tag in self.config.role_tags(eq.id, Role.BATCH_ID):
                for run in self._detect(eq.id, tag):
                    touched[run.id] = run
                    changed.add(run.id)
            for run in self.catalog.runs(eq.id, open_only=True):
                touched[run.id] = run
        now = self.clock()
        order = sorted(touched.values(), key=lambda r: (self._is_downstream(r), r.start))
        for run in order:
            fresh = self.catalog.run(run.id) or run
            last = self._computed_at.get(run.id)
            due = last is None or now - last >= self.provisional_interval_s
            if run.id in changed or fresh.end is not None or due:
                self.update_run(fresh)
                self._computed_at[run.id] = now
        for run in self._late_lab_runs(set(touched)):
            for r in [run, *self._downstream(run)]:
                self.update_run(self.catalog.run(r.id) or r)
        self._watch_baseline(order, changed)
        if archive:
            self.archive_closed()
        self.passes += 1
        return list(touched.values())

    # -- the columnar tier -----------------------------------------------------------------------------
    def archive_closed(self) -> list[str]:
        """Archive the closed runs the archive does not hold whole yet, archive_after_s after this object
        first saw each closed; then the archive's housekeeping. Returns the runs archived."""
        if self.archive is None:
            return []
        now = self.clock()
        held = self.archive.archived_runs()
        done = []
        closed = set()
        for run in self.catalog.runs():
            if run.end is None:
                continue
            closed.add(run.id)
            have = held.get(run.id)
            if (have is not None and have.covers(run)) or (run.id, run.start, run.end) in self._not_archived:
                continue
            seen = self._closed_seen.setdefault(run.id, now)
            if now - seen < self.archive_after_s:
                continue
            series = [t.name for t in self.config.tags_of(run.equipment)]
            result = self.archive.archive_run(run, series)
            if getattr(result, "skipped", None):  # e.g. overlaps another archived run: logged once
                self._not_archived.add((run.id, run.start, run.end))
                continue
            self.archived += 1
            done.append(run.id)
        for run_id in set(self._closed_seen) - closed:  # reopened or deleted: start over when it closes
            del self._closed_seen[run_id]
        self.archive.maintain()
        return done

    # -- late lab results ------------------------------------------------------------------------------
    def _lab_tags(self, equipment: str) -> list[str]:
        return [t.name for t in self.config.tags_of(equipment) if t.lab is not None]

    def _lab_count(self, run: Run) -> int | None:
        """Lab-tag samples in the closed run (None for an open run or an equipment without lab tags)."""
        names = self._lab_tags(run.equipment)
        if not names or run.end is None:
            return None
        end = run.end + timedelta(microseconds=1)
        return sum(self.store.count(name, run.start, end) for name in names)

    def _late_lab_runs(self, skip: set[str]) -> list[Run]:
        """Closed runs whose lab-tag samples changed since their KPIs were computed (see the module doc)."""
        out = []
        for eq in self.config.equipment:
            if not self._lab_tags(eq.id):
                continue
            closed = [r for r in self.catalog.runs(eq.id) if r.end is not None and r.id not in skip]
            if not closed:
                continue
            newest = max(r.end for r in closed if r.end is not None)
            since = newest - timedelta(days=LAB_LATE_DAYS)
            for run in closed:
                if run.end is not None and run.end >= since:
                    seen = self.catalog.cursor(_lab_cursor(run.id))
                    if seen is not None and seen != self._lab_count(run):
                        log.info("run %s: lab results arrived after it closed; recomputing", run.id)
                        out.append(run)
        return out

    def _downstream(self, run: Run) -> list[Run]:
        """Every run downstream of `run`, nearest first."""
        out: list[Run] = []
        queue = [run.id]
        seen = {run.id}
        while queue:
            for r in self.catalog.downstream_runs(queue.pop(0)):
                if r.id not in seen:
                    seen.add(r.id)
                    out.append(r)
                    queue.append(r.id)
        return out

    def _is_downstream(self, run: Run) -> bool:
        return self.config.equipment_by_id(run.equipment).kind == EquipmentKind.RECOVERY

    def update_run(self, run: Run) -> list[KpiRecord]:
        """Refresh the run's phases, upstream link and product name, then compute and store its KPIs."""
        run = self._annotate(run)
        records = self.run_kpis(run)
        self.catalog.set_kpis(run.id, records, replace_all=True)
        self.computed += 1
        lab_count = self._lab_count(run)
        if lab_count is not None:
            self.catalog.set_cursor(_lab_cursor(run.id), lab_count)
        return records

    def _annotate(self, run: Run) -> Run:
        changes: dict[str, object] = {}
        if run.product is None:
            product = process_spec(self.config, run.equipment).product
            if product:
                changes["product"] = product
        if run.upstream_id is None and self._is_downstream(run):
            named = process_spec(self.config, run.equipment).upstream
            candidates = (
                [named]
                if named is not None
                else [eq.id for eq in self.config.equipment if eq.kind == EquipmentKind.FERMENTER]
            )
            for eq_id in candidates:
                upstream = self.catalog.run(run_id_for(eq_id, run.batch_id))
                if upstream is not None:
                    changes["upstream_id"] = upstream.id
                    break
        if changes:
            run = self.catalog.update_run(run.id, **changes)
        phase_tags = self.config.role_tags(run.equipment, Role.PHASE)
        if phase_tags:
            end = run.end or _FAR_FUTURE
            data = self.store.read(phase_tags[0].name, run.start, end)
            if len(data):
                spans = detect_phases(
                    zip(data.ts.tolist(), data.values.tolist(), data.status.tolist(), strict=True),
                    to_us(run.end) if run.end is not None else None,
                )
                phases = [
                    Phase(p.name, from_us(p.start_us), from_us(p.end_us) if p.end_us is not None else None)
                    for p in spans
                ]
                self.catalog.set_phases(run.id, phases)
        return run

    def _detect(self, equipment: str, tag: Tag) -> list[Run]:
        cursor_name = f"runs:{tag.name}"
        cursor = self.catalog.cursor(cursor_name)
        start = from_us(cursor + 1) if cursor is not None else from_us(0)
        data = self.store.read(tag.name, start, _FAR_FUTURE)
        if len(data) == 0:
            return []
        open_runs = self.catalog.runs(equipment, open_only=True)
        open_batch = open_runs[0].batch_id if open_runs else None
        events, _ = detect_runs(
            zip(data.ts.tolist(), data.values.tolist(), data.status.tolist(), strict=True), open_batch
        )
        changed: list[Run] = []
        for ev in events:
            problem = id_problem(ev.batch_id)
            if problem is not None:
                self._refuse_batch(tag, ev.batch_id, ev.ts_us, problem)
                continue
            run_id = run_id_for(equipment, ev.batch_id)
            if ev.change == Change.START:
                run = self.catalog.open_run(equipment, ev.batch_id, from_us(ev.ts_us))
                if run.end is not None:  # the same batch id again after an end: it resumed
                    self.catalog.reopen_run(run_id)
                self._initial_kind(run)
                log.info("run %s started at %s", run_id, from_us(ev.ts_us).isoformat())
            else:
                self.catalog.close_run(run_id, from_us(ev.ts_us))
                log.info("run %s ended at %s", run_id, from_us(ev.ts_us).isoformat())
            run = self.catalog.run(run_id)
            if run is not None:
                changed.append(run)
        self.catalog.set_cursor(cursor_name, int(data.ts[-1]))
        return changed

    def _refuse_batch(self, tag: Tag, batch_id: str, ts_us: int, problem: str) -> None:
        """A batch id that is no valid id (biopilot.ids) starts no run: logged once, kept in
        refused_batches; the run before it still ends where it appeared."""
        key = (tag.name, batch_id)
        if key in self.refused_batches:
            return
        self.refused_batches[key] = problem
        log.warning(
            "%s: batch id %s at %s %s; no run is started for it (fix the batch-id source)",
            tag.name,
            shown(batch_id),
            from_us(ts_us).isoformat(),
            problem,
        )

    # -- runs against the baseline -----------------------------------------------------------------------
    def _watch_baseline(self, runs: list[Run], changed: set[str]) -> None:
        """Build missing baseline references and keep the live runs' deviation alarms up to date."""
        self.alarm_monitor.on_pass([self.catalog.run(r.id) or r for r in runs], changed)

    def _initial_kind(self, run: Run) -> None:
        """A newly detected run whose batch id matches [[process]] baseline_batches is a baseline run."""
        pattern = process_spec(self.config, run.equipment).baseline_batches
        if (
            pattern
            and run.kind == RunKind.OTHER
            and run.origin == RunOrigin.LIVE
            and fnmatch.fnmatchcase(run.batch_id, pattern)
        ):
            self.catalog.update_run(run.id, kind=RunKind.BASELINE.value)
            log.info("run %s is a baseline run (batch id matches %r)", run.id, pattern)

    def run_kpis(self, run: Run) -> list[KpiRecord]:
        """The run's KPIs (processing.kpis) over its span, or up to its clock while it is live."""
        end = run.end or self._latest_batch_sample(run.equipment) or utcnow()
        upstream = (
            {k.name: k for k in self.catalog.kpis(run.upstream_id)} if run.upstream_id is not None else None
        )
        return compute_run_kpis(
            self.config,
            run,
            end,
            self.store.read,
            phases=self.catalog.phases(run.id),
            lab=self.catalog.run_lab_results(run) if run.end is not None else self._lab_until(run, end),
            upstream=upstream,
            harvested=self._chain_harvest(run),
        )

    def _chain_harvest(self, run: Run) -> KpiRecord | None:
        """product_harvested of the fermentation at the head of the run's upstream chain (None for a run
        without upstream links)."""
        head, seen = run, {run.id}
        while head.upstream_id is not None and head.upstream_id not in seen:
            seen.add(head.upstream_id)
            up = self.catalog.run(head.upstream_id)
            if up is None:
                break
            head = up
        if head is run:
            return None
        return next((k for k in self.catalog.kpis(head.id) if k.name == "product_harvested"), None)

    def _lab_until(self, run: Run, end: datetime) -> list:
        return self.catalog.lab_results(run.equipment, run.start, end)

    def _latest_batch_sample(self, equipment: str) -> datetime | None:
        """The run's clock while it is live: the newest sample of the equipment's batch-id tag (it comes
        with the other signals of the same source, so coverage is not diluted by another source's lag)."""
        names = [t.name for t in self.config.role_tags(equipment, Role.BATCH_ID)]
        latest = self.store.latest(names)
        return max((v.sample.ts for v in latest.values()), default=None)


def _lab_cursor(run_id: str) -> str:
    """The catalog cursor that holds how many lab-tag samples a closed run's KPIs were computed with."""
    return f"lab-samples:{run_id}"
