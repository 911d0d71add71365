"""Each stage as a process of its own: simulate, collect, process. Each stops cleanly within a few
seconds of SIGTERM or SIGINT (Ctrl-C)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from biopilot.config import SiteConfig
from collectors.runner import Collectors
from processing.service import Processing
from simulators.plant import PlantSimulator
from storage import open_catalog, open_health, open_store

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


def simulate(config: SiteConfig, speed: float | None, interval_s: float | None) -> None:
    sim = PlantSimulator(config, speed=speed, interval_s=interval_s)

    async def main(stop: asyncio.Event) -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(sim.run(stop, ready))
        done, _ = await asyncio.wait(
            {task, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()
        log.info(
            "simulating at %g× (one sample every %g s of wall time, %g s of process time)",
            sim.speed,
            sim.interval_s,
            sim.interval_s * sim.speed,
        )
        await task
        log.info(
            "simulator stopped after %d ticks; published %d values", sim.ticks, sum(sim.published.values())
        )

    run_until_signalled(main)


def collect(config: SiteConfig, data_dir: Path) -> None:
    store = open_store(config, data_dir)
    health = open_health(config, data_dir)
    collectors = Collectors.from_config(config, store, spool_dir=data_dir / "spool", health=health)

    async def main(stop: asyncio.Event) -> None:
        await collectors.run(stop)

    try:
        run_until_signalled(main)
    finally:
        store.close()
        health.close()


def process(config: SiteConfig, data_dir: Path, interval_s: float = 2.0) -> None:
    store = open_store(config, data_dir)
    catalog = open_catalog(config, data_dir)
    processing = Processing(config, store, catalog)

    async def main(stop: asyncio.Event) -> None:
        log.info("processing every %g s", interval_s)
        await processing.run(stop, interval_s)

    try:
        run_until_signalled(main)
    finally:
        store.close()
        catalog.close()
