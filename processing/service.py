"""The processing service: reads stored samples, keeps the catalog's runs up to date and computes
their KPIs (provisional while a run is live, final when it closes). It never talks to a plant source.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from biopilot.aio import wait_for_event
from biopilot.config import Role, SiteConfig, Tag
from biopilot.samples import from_us, to_us, utcnow
from processing.energy import energy_kwh
from processing.runs import Change, detect_runs
from storage.base import TimeSeriesStore
from storage.catalog import Catalog, KpiRecord, Run, run_id_for

log = logging.getLogger(__name__)

KPI_VERSION = "energy-1"
COMPLETE = 0.99  # a KPI whose inputs cover less of its run than this is flagged incomplete
_FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)
_POWER_TO_KW = {"kW": 1.0, "W": 0.001}


class Processing:
    def __init__(self, config: SiteConfig, store: TimeSeriesStore, catalog: Catalog) -> None:
        self.config = config
        self.store = store
        self.catalog = catalog
        self.passes = 0

    async def run(self, stop: asyncio.Event, interval_s: float = 2.0) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.process_once)
            except Exception:  # a bad run must not stop processing of the others
                log.exception("processing pass failed; retrying in %.0f s", interval_s)
            await wait_for_event(stop, interval_s)

    def process_once(self) -> list[Run]:
        """Detect run starts and ends since the last pass; recompute KPIs of open and just-closed runs."""
        touched: dict[str, Run] = {}
        for eq in self.config.equipment:
            for tag in self.config.role_tags(eq.id, Role.BATCH_ID):
                for run in self._detect(eq.id, tag):
                    touched[run.id] = run
            for run in self.catalog.runs(eq.id, open_only=True):
                touched[run.id] = run
        for run in touched.values():
            fresh = self.catalog.run(run.id) or run
            self.catalog.set_kpis(fresh.id, self.run_kpis(fresh))
        self.passes += 1
        return list(touched.values())

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
            run_id = run_id_for(equipment, ev.batch_id)
            if ev.change == Change.START:
                run = self.catalog.open_run(equipment, ev.batch_id, from_us(ev.ts_us))
                if run.end is not None:  # the same batch id again after an end: it resumed
                    self.catalog.reopen_run(run_id)
                log.info("run %s started at %s", run_id, from_us(ev.ts_us).isoformat())
            else:
                self.catalog.close_run(run_id, from_us(ev.ts_us))
                log.info("run %s ended at %s", run_id, from_us(ev.ts_us).isoformat())
            run = self.catalog.run(run_id)
            if run is not None:
                changed.append(run)
        self.catalog.set_cursor(cursor_name, int(data.ts[-1]))
        return changed

    def run_kpis(self, run: Run) -> list[KpiRecord]:
        """Energy per power tag and in total [kWh], each with its coverage of the run."""
        end = run.end or self._latest_batch_sample(run.equipment) or utcnow()
        run_h = max((end - run.start).total_seconds() / 3600, 0.0)
        flags_base = () if run.end is not None else ("provisional",)
        records: list[KpiRecord] = []
        total, covered_min, uncertain = 0.0, 1.0, False
        power_tags = self.config.role_tags(run.equipment, Role.POWER)
        for tag in power_tags:
            data = self.store.read(tag.name, run.start, end + timedelta(microseconds=1))
            integral = energy_kwh(
                data.hours(to_us(run.start)), data.values.astype(float) * _POWER_TO_KW[tag.unit], data.status
            )
            coverage = min(integral.covered_h / run_h, 1.0) if run_h > 0 else 0.0
            flags = (
                flags_base
                + (("incomplete",) if coverage < COMPLETE else ())
                + (("uncertain_inputs",) if integral.uncertain else ())
            )
            records.append(
                KpiRecord(
                    f"energy.{tag.name}",
                    round(integral.value, 4),
                    "kWh",
                    coverage,
                    flags,
                    final=run.end is not None,
                    version=KPI_VERSION,
                )
            )
            total += integral.value
            covered_min = min(covered_min, coverage)
            uncertain = uncertain or integral.uncertain
        if power_tags:
            flags = flags_base + (("incomplete",) if covered_min < COMPLETE else ())
            flags += ("uncertain_inputs",) if uncertain else ()
            records.append(
                KpiRecord(
                    "energy.total",
                    round(total, 4),
                    "kWh",
                    covered_min,
                    flags,
                    final=run.end is not None,
                    version=KPI_VERSION,
                )
            )
        return records

    def _latest_batch_sample(self, equipment: str) -> datetime | None:
        """The run's clock while it is live: the newest sample of the equipment's batch-id tag (it comes
        with the other signals of the same source, so coverage is not diluted by another source's lag)."""
        names = [t.name for t in self.config.role_tags(equipment, Role.BATCH_ID)]
        latest = self.store.latest(names)
        return max((v.sample.ts for v in latest.values()), default=None)
