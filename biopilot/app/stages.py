"""Each stage as a process of its own: simulate, collect, process. Each stops cleanly within a few
seconds of SIGTERM or SIGINT (Ctrl-C)."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from biopilot.aio import wait_for_event
from biopilot.app.supervisor import die_with_parent
from biopilot.config import SiteConfig, config_warnings
from collectors.runner import Collectors
from collectors.writer import StoreWriter
from processing.service import Processing
from simulators.plant import PlantSimulator
from simulators.scenario import Scenario
from storage import RunArchive, database_path, open_catalog, open_health, open_store

log = logging.getLogger(__name__)


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` in a fresh event loop; SIGTERM and SIGINT set `stop`."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


def simulate(
    config: SiteConfig,
    speed: float | None,
    interval_s: float | None,
    *,
    scenario: Scenario | None = None,
    data_dir: Path | None = None,
) -> None:
    """Live: serve the simulated plant until signalled. With [simulator] history_h, the plant's history is
    first written into the store in data_dir (if the store holds none yet)."""
    sim_cfg = config.simulator
    store = (
        open_store(config, data_dir)
        if data_dir is not None and sim_cfg is not None and sim_cfg.history_h > 0
        else None
    )
    sim = PlantSimulator(
        config, scenario=scenario, speed=speed, interval_s=interval_s, data_dir=data_dir, history_store=store
    )

    async def main(stop: asyncio.Event) -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(sim.run(stop, ready))
        done, _ = await asyncio.wait(
            {task, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()
        log.info(
            "simulating %r at %g× (one sample every %g s of wall time, %g s of process time)",
            sim.scenario.scenario.name,
            sim.speed,
            sim.interval_s,
            sim.interval_s * sim.speed,
        )
        await task
        log.info(
            "simulator stopped after %d ticks; published %d values", sim.ticks, sum(sim.published.values())
        )

    try:
        run_until_signalled(main)
    finally:
        if store is not None:
            store.close()


def simulate_historical(
    config: SiteConfig,
    scenario: Scenario,
    *,
    runs: int,
    out: Path | None,
    data_dir: Path,
    start: datetime | None = None,
    csv_format: str = "wide",
) -> None:
    """Historical: `runs` complete runs as fast as possible, into the store or (with `out`) as CSV."""
    from simulators import historical
    from simulators.progress import Progress
    from simulators.wiring import tag_map, units_of

    base = out if out is not None else data_dir
    progress = Progress(f"simulating {runs} run{'s' if runs != 1 else ''}")
    history = historical.generate(
        scenario,
        units_of(config),
        runs=runs,
        start=start,
        truth_dir=base / "truth",
        lab_dir=base / "lab",
        progress=progress,
    )
    tags = tag_map(config)
    t0 = time.perf_counter()
    if out is not None:
        paths = historical.write_csv(history, out, tags, fmt=csv_format)
        where = ", ".join(str(p) for p in paths) or "nothing (no configured tag collects a simulated signal)"
        written = f"CSV: {where}"
    else:
        store = open_store(config, data_dir)
        try:
            n = historical.write_store(history, store, tags, transforms=config.transforms())
        finally:
            store.close()
        influx = config.storage.influxdb
        where = (
            f"InfluxDB at {influx.url} (bucket {influx.bucket!r})"
            if config.storage.backend == "influxdb" and influx is not None
            else str(database_path(config, data_dir))
        )
        written = f"{n} samples into {where}"
    plant_h = (history.end - history.start).total_seconds() / 3600
    print(
        f"simulated {runs} run{'s' if runs != 1 else ''} ({plant_h:.0f} h of plant time,"
        f" {history.start.isoformat()} to {history.end.isoformat()}) in {history.sim_seconds:.1f} s;"
        f" wrote {written}"
        f" in {time.perf_counter() - t0:.1f} s; truth in {base / 'truth'}"
    )


def _audit_tag_changes(config: SiteConfig, config_path: Path, data_dir: Path) -> None:
    """Tags live in the config file: the collector records in the audit log which tags were added, removed
    or changed since the tags it last recorded."""
    from storage import open_catalog
    from storage.audit import record_tag_changes

    catalog = open_catalog(config, data_dir)
    try:
        tags = {t.name: t.model_dump(mode="json", exclude={"name"}) for t in config.tags}
        entry = record_tag_changes(catalog.audit, tags, str(config_path))
        if entry is not None and entry.why != "first record of the tags":
            d = entry.details
            log.info(
                "tags changed in %s: %d added, %d removed, %d changed (audit entry %d)",
                config_path,
                len(d["added"]),
                len(d["removed"]),
                len(d["changed"]),
                entry.seq,
            )
    finally:
        catalog.close()


def collect(config: SiteConfig, config_path: Path, data_dir: Path) -> None:
    """The collectors in this process; the store writer in a child process (`write-store`), so the store's
    work never competes with the collectors for the interpreter. The child is restarted if it dies."""
    for warning in config_warnings(config):
        log.warning("%s", warning)
    _audit_tag_changes(config, config_path, data_dir)
    store = open_store(config, data_dir)
    health = open_health(config, data_dir)
    collectors = Collectors.from_config(
        config,
        store,
        spool_dir=data_dir / "spool",
        health=health,
        writer=False,
        pki_dir=data_dir / "pki",
        state_dir=data_dir / "collector-state",
    )
    writer_cmd = [
        sys.executable,
        "-m",
        "biopilot",
        "write-store",
        "--config",
        str(config_path),
        "--data-dir",
        str(data_dir),
    ]

    def start_writer() -> subprocess.Popen[bytes]:
        return subprocess.Popen(writer_cmd, preexec_fn=die_with_parent if sys.platform == "linux" else None)

    async def main(stop: asyncio.Event) -> None:
        writer, started = start_writer(), time.monotonic()
        task = asyncio.create_task(collectors.run(stop))
        backoff, restart_at = 1.0, None
        while not await wait_for_event(stop, 0.5):
            if writer.poll() is None:
                continue
            now = time.monotonic()
            if restart_at is None:
                # a writer that keeps dying is restarted ever less often (up to a minute apart)
                backoff = 1.0 if now - started > 60 else min(backoff * 2, 60.0)
                restart_at = now + backoff
                log.error(
                    "the store writer exited (code %s); restarting it in %.0f s", writer.returncode, backoff
                )
            elif now >= restart_at:
                writer, started, restart_at = start_writer(), now, None
        await task
        if writer.poll() is None:
            writer.send_signal(signal.SIGTERM)  # it writes what is complete in the spool, then exits
        await asyncio.to_thread(_wait_or_kill, writer, 4.0)

    try:
        run_until_signalled(main)
    finally:
        store.close()
        health.close()


def write_store(config: SiteConfig, data_dir: Path) -> None:
    """Tail the spool into the store until signalled (the child process of `collect`)."""
    store = open_store(config, data_dir)
    health = open_health(config, data_dir)
    writer = StoreWriter(
        data_dir / "spool", store, health=health, health_interval_s=config.collector.health_interval_s
    )

    async def main(stop: asyncio.Event) -> None:
        await writer.run(stop, drain_s=2.0)
        log.info("store writer stopped: %d samples written", writer.stored)

    try:
        run_until_signalled(main)
    finally:
        store.close()
        health.close()


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(2)


def process(config: SiteConfig, data_dir: Path, interval_s: float | None = None) -> None:
    """Detect runs and compute KPIs every interval_s (default: [processing] interval_s) until signalled."""
    store = open_store(config, data_dir)
    catalog = open_catalog(config, data_dir)
    processing = Processing(config, store, catalog, archive=store if isinstance(store, RunArchive) else None)
    every = config.processing.interval_s if interval_s is None else interval_s

    async def main(stop: asyncio.Event) -> None:
        log.info(
            "processing every %g s; live runs' KPIs at most every %g s",
            every,
            processing.provisional_interval_s,
        )
        await processing.run(stop, every)

    try:
        run_until_signalled(main)
    finally:
        store.close()
        catalog.close()
