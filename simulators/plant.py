"""The simulated plant: models on a simulated clock, served over OPC UA and MQTT.

Wiring (fixed, as a real plant's is): a fermenter serves its control-system signals over OPC UA under
Objects/<equipment>/<signal>, and its off-gas analyser publishes to <prefix>/<equipment>/offgas (fields o2,
co2 in %); a recovery unit publishes to <prefix>/<equipment>/state. The site config maps these addresses
to tags like any plant's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from biopilot.aio import wait_for_event
from biopilot.config import EquipmentKind, SimulatorConfig, SiteConfig
from biopilot.errors import ConfigError
from biopilot.samples import utcnow
from simulators import fermenter as fm
from simulators import recovery as rc
from simulators.mqtt_publisher import MqttPlantPublisher
from simulators.opcua_server import OpcUaPlantServer

log = logging.getLogger(__name__)

MAX_STEP_H = 10 / 3600  # the models integrate in steps of at most 10 simulated seconds

FERMENTER_OPCUA_SIGNALS: dict[str, tuple[str, str]] = {
    "BatchId": ("text", ""),
    "Phase": ("text", ""),
    "Temperature": ("float", "degC"),
    "pH": ("float", "pH"),
    "DissolvedOxygen": ("float", "%"),
    "AgitatorSpeed": ("float", "rpm"),
    "AirFlow": ("float", "NL/min"),
    "Pressure": ("float", "barg"),
    "FeedRate": ("float", "L/h"),
    "BaseFlow": ("float", "L/h"),
    "Volume": ("float", "L"),
    "Weight": ("float", "kg"),
    "AgitatorPower": ("float", "kW"),
    "CompressorPower": ("float", "kW"),
    "ChillerPower": ("float", "kW"),
    "CoolingWaterFlow": ("float", "L/min"),
    "SteamFlow": ("float", "kg/h"),
}
OFFGAS_FIELDS = {"OffgasO2": "o2", "OffgasCO2": "co2"}


async def _first(*aws: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in tasks:
        t.cancel()


class SimClock:
    """Simulated time: starts at `start` and runs `speed` times faster than the wall clock."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start, self.speed = start, speed
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)


@dataclass
class _FermenterUnit:
    equipment: str
    params: fm.FermenterParams
    state: fm.FermenterState
    batch_prefix: str
    downstream: list[_RecoveryUnit] = field(default_factory=list)

    def batch_id(self) -> str:
        if self.state.phase == fm.Phase.IDLE:
            return ""
        return f"{self.batch_prefix}-{self.state.cycle + 1:02d}"


@dataclass
class _RecoveryUnit:
    equipment: str
    params: rc.RecoveryParams
    state: rc.RecoveryState


class PlantSimulator:
    """Runs the configured simulated units live and serves them until stopped."""

    def __init__(
        self,
        config: SiteConfig,
        *,
        speed: float | None = None,
        interval_s: float | None = None,
        start: datetime | None = None,
    ) -> None:
        if config.simulator is None:
            raise ConfigError("the site config has no [simulator] section: there is nothing to simulate")
        self.config = config
        self.sim: SimulatorConfig = config.simulator
        self.speed = speed if speed is not None else self.sim.speed
        self.interval_s = interval_s if interval_s is not None else self.sim.interval_s
        self._explicit_start = start
        self.clock = SimClock(start or utcnow(), self.speed)
        self.rng = np.random.default_rng(self.sim.seed)
        self.opcua: OpcUaPlantServer | None = None
        self.mqtt: MqttPlantPublisher | None = None
        self.ticks = 0
        self._sim_time = self.clock.start
        prefix_time = self.clock.start.strftime("%y%m%dT%H%M")
        self.fermenters: dict[str, _FermenterUnit] = {}
        self.recovery: dict[str, _RecoveryUnit] = {}
        for unit in self.sim.units:
            if unit.model == EquipmentKind.FERMENTER:
                compact = unit.equipment.replace("-", "")
                self.fermenters[unit.equipment] = _FermenterUnit(
                    unit.equipment, fm.FermenterParams(), fm.FermenterState(), f"{compact}-{prefix_time}"
                )
        for unit in self.sim.units:
            if unit.model == EquipmentKind.RECOVERY:
                rec = _RecoveryUnit(unit.equipment, rc.RecoveryParams(), rc.RecoveryState())
                self.recovery[unit.equipment] = rec
                if unit.upstream is not None:
                    if unit.upstream not in self.fermenters:
                        raise ConfigError(
                            f"simulator.units: {unit.equipment} takes its harvest from {unit.upstream!r},"
                            " which is not a simulated fermenter"
                        )
                    self.fermenters[unit.upstream].downstream.append(rec)

    @property
    def published(self) -> Counter[str]:
        """Values acknowledged per address: 'opcua:F-101/Temperature', 'mqtt:<topic>#<field>'."""
        out: Counter[str] = Counter()
        if self.opcua is not None:
            out.update({f"opcua:{k}": v for k, v in self.opcua.published.items()})
        if self.mqtt is not None:
            out.update({f"mqtt:{k}": v for k, v in self.mqtt.published.items()})
        return out

    def topic(self, equipment: str, what: str) -> str:
        return f"{self.sim.mqtt_topic_prefix}/{equipment}/{what}"

    async def run(
        self, stop: asyncio.Event, ready: asyncio.Event | None = None, go: asyncio.Event | None = None
    ) -> None:
        """Serve until `stop` is set. The servers are up when `ready` is set; with `go`, the simulated
        process starts only once `go` is set (tests connect their collectors in between)."""
        opcua_cfg = self.config.opcua.servers.get(self.sim.opcua_server or "")
        broker = self.config.mqtt.brokers.get(self.sim.mqtt_broker or "")
        if opcua_cfg is not None:
            self.opcua = OpcUaPlantServer(opcua_cfg.endpoint, opcua_cfg.namespace or "urn:biopilot:simulator")
        if broker is not None:
            self.mqtt = MqttPlantPublisher(
                broker.host, broker.port, f"biopilot-simulator-{self.sim.mqtt_topic_prefix}"
            )
        async with contextlib.AsyncExitStack() as stack:
            opcua = await stack.enter_async_context(self.opcua) if self.opcua is not None else None
            mqtt = await stack.enter_async_context(self.mqtt) if self.mqtt is not None else None
            if opcua is not None:
                for eq in self.fermenters:
                    await opcua.add_equipment(eq, FERMENTER_OPCUA_SIGNALS, self.clock.start)
                await opcua.start()
            if mqtt is not None and not await mqtt.wait_connected(10.0):
                log.warning(
                    "MQTT broker %s:%d does not answer yet; publishing as soon as it does",
                    mqtt.host,
                    mqtt.port,
                )
            if ready is not None:
                ready.set()
            if go is not None:
                await _first(go.wait(), stop.wait())
            # The process starts now, not when this object was made: serving took a few seconds.
            self.clock = SimClock(self._explicit_start or utcnow(), self.speed)
            self._sim_time = self.clock.start
            loop = asyncio.get_running_loop()
            next_tick = loop.time()
            while not stop.is_set():
                await self.tick(self.clock.now())
                next_tick += self.interval_s
                delay = next_tick - loop.time()
                if (
                    delay < -5 * self.interval_s
                ):  # fell far behind (a suspended laptop): do not catch up in a burst
                    next_tick = loop.time()
                await wait_for_event(stop, delay)
            if mqtt is not None and not await mqtt.drain(5.0):
                log.warning("%d MQTT messages were not acknowledged by the broker at stop", mqtt.unacked)

    async def tick(self, now: datetime) -> None:
        """Advance every model to `now` (simulated) and publish one sample of every signal."""
        dt_total_h = (now - self._sim_time).total_seconds() / 3600
        if dt_total_h > 0:
            steps = max(1, int(np.ceil(dt_total_h / MAX_STEP_H)))
            dt_h = dt_total_h / steps
            for _ in range(steps):
                self._step(dt_h)
            self._sim_time = now
        self.ticks += 1
        for unit in self.fermenters.values():
            values = fm.measure(unit.state, unit.params, self.rng)
            values["BatchId"] = unit.batch_id()
            offgas = {OFFGAS_FIELDS[k]: values.pop(k) for k in list(OFFGAS_FIELDS)}
            if self.opcua is not None:
                await self.opcua.publish(unit.equipment, values, now)
            if self.mqtt is not None:
                await self.mqtt.publish(self.topic(unit.equipment, "offgas"), offgas, now)
        for rec in self.recovery.values():
            values = rc.measure(rec.state, rec.params, self.rng)
            if self.mqtt is not None:
                await self.mqtt.publish(self.topic(rec.equipment, "state"), values, now)

    def _step(self, dt_h: float) -> None:
        for unit in self.fermenters.values():
            before = unit.state.phase
            batch_id = unit.batch_id()
            unit.state = fm.step(unit.state, unit.params, dt_h)
            if before != fm.Phase.HARVEST and unit.state.phase == fm.Phase.HARVEST:
                harvest = rc.Harvest(batch_id, unit.state.harvest_v, unit.state.harvest_p)
                for rec in unit.downstream:
                    rec.state = rc.receive(rec.state, harvest)
        for rec in self.recovery.values():
            rec.state = rc.step(rec.state, rec.params, dt_h)
