"""The simulated plant, live: the models (simulators/engine.py) on a simulated clock, served over OPC UA
and MQTT, with the scenario's faults.

Wiring (fixed, as a real plant's is; simulators/signals.py): a fermenter serves its control-system
signals over OPC UA under Objects/<equipment>/<Signal>; its off-gas analyser publishes to
<prefix>/<equipment>/offgas (fields o2, co2 in %) and its lab results to <prefix>/<equipment>/lab (at the
report time, with the sampling time as source timestamp); a recovery unit publishes to
<prefix>/<equipment>/state. With [simulator] mqtt_format = "number" (or "both") every field is (also)
published alone as a plain payload on <topic>/<field>. The site config maps these addresses to tags like
any plant's.

Time: the plant clock runs `speed` times faster than the wall clock. Every `interval_s` of wall time the
models are stepped (in whole model steps of the scenario's model_step_s, 10 s by default) up to the plant
clock, and one sample of every signal is published with the model's time as source timestamp; a tick that
completes no model step publishes nothing. With [simulator] history_h > 0 and a store that holds no data
of the simulated tags yet, the plant starts history_h hours in the past: that history is generated as in
historical mode and written into the store (TimeSeriesStore.write) before anything is served.

Truth: each run's truth is written to <data-dir>/truth/<batch_id>.json (simulators/truth.py); lab results
delivered as CSV go to <data-dir>/lab/<batch_id>.csv.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from biopilot.aio import wait_for_event
from biopilot.config import SiteConfig
from biopilot.errors import ConfigError
from biopilot.samples import GOOD, utcnow
from simulators import lab as lab_mod
from simulators.engine import Event, LabSample, PlantModel
from simulators.faults import MALFORMED_PAYLOADS
from simulators.historical import Recorder, write_store
from simulators.mqtt_publisher import MqttPlantPublisher
from simulators.opcua_server import OpcUaPlantServer
from simulators.recovery import UnitKind
from simulators.scenario import FaultKind, Scenario, default_scenario
from simulators.signals import FERMENTER_OPCUA, OFFGAS, RECOVERY_SIGNALS, measure_one, opcua_signal_types
from simulators.wiring import simulator_of, tag_map, topic, units_of

log = logging.getLogger(__name__)


async def _first(*aws: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in tasks:
        t.cancel()


class SimClock:
    """Plant time: `origin` at the moment of creation, then `speed` times faster than the wall clock."""

    def __init__(self, origin: datetime, speed: float) -> None:
        self.start, self.speed = origin, speed
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def advance(self) -> None:
        """Called after each tick; the wall clock moves by itself."""


class LockstepClock(SimClock):
    """Plant time that moves exactly `step_s` of plant time per tick, however late the tick ran: the same
    plant hours publish the same number of samples on a loaded machine (tests that count messages per plant
    hour use it; a live demo follows the wall clock instead)."""

    def __init__(self, origin: datetime, speed: float, step_s: float) -> None:
        super().__init__(origin, speed)
        self._ticks, self._step = 0, timedelta(seconds=step_s)

    def now(self) -> datetime:
        return self.start + self._ticks * self._step

    def advance(self) -> None:
        self._ticks += 1


class PlantSimulator:
    """Runs the configured simulated units live and serves them until stopped."""

    def __init__(
        self,
        config: SiteConfig,
        *,
        scenario: Scenario | None = None,
        speed: float | None = None,
        interval_s: float | None = None,
        start: datetime | None = None,
        data_dir: Path | None = None,
        history_store: Any = None,
        lockstep: bool = False,
    ) -> None:
        """lockstep: plant time advances exactly interval_s × speed per tick (LockstepClock), not with the
        wall clock."""
        self.config = config
        self.sim = simulator_of(config)
        self.scenario = scenario or default_scenario(seed=self.sim.seed)
        self.units = units_of(config)
        self.speed = speed if speed is not None else self.sim.speed
        self.interval_s = interval_s if interval_s is not None else self.sim.interval_s
        self.dt_h = self.scenario.scenario.model_step_s / 3600
        self._explicit_start = start
        self.data_dir = data_dir
        self.history_store = history_store
        self.lockstep = lockstep
        self.held = asyncio.Event()  # set once a `hold` has stopped the ticks (run)
        self.clock = self._clock(start or utcnow())
        self.rng = np.random.default_rng([self.scenario.seed, 3])
        self.opcua: OpcUaPlantServer | None = None
        self.mqtt: MqttPlantPublisher | None = None
        self.model: PlantModel | None = None
        self.recorder: Recorder | None = None
        self.ticks = 0
        self.ticks_opcua_down = 0  # ticks while the OPC UA server was down (fault)
        self.history_samples = 0
        self.dropped: Counter[str] = Counter()  # values not published (MQTT disconnect without buffer)
        self._opcua_down = False
        self._buffer: list[tuple[str, dict[str, float | str], datetime, int]] = []
        self._malformed_done: set[int] = set()
        self._lab_sent = 0
        self._opcua_kwargs: dict[str, str] = {}
        for spec in self.units:
            if spec.kind != "fermenter" and spec.upstream is not None:
                known = {u.equipment for u in self.units}
                if spec.upstream not in known:
                    raise ConfigError(
                        f"simulator.units: {spec.equipment} takes its feed from {spec.upstream!r},"
                        " which is not a simulated unit"
                    )

    # -- counters -------------------------------------------------------------------------------------
    @property
    def published(self) -> Counter[str]:
        """Values served or acknowledged per address: 'opcua:F-101/Temperature', 'mqtt:<topic>#<field>'."""
        out: Counter[str] = Counter()
        if self.opcua is not None:
            out.update({f"opcua:{k}": v for k, v in self.opcua.published.items()})
        if self.mqtt is not None:
            out.update({f"mqtt:{k}": v for k, v in self.mqtt.published.items()})
        return out

    @property
    def malformed(self) -> Counter[str]:
        return Counter() if self.mqtt is None else Counter(self.mqtt.malformed)

    def topic(self, equipment: str, what: str) -> str:
        return topic(self.sim, equipment, what)

    # -- life -------------------------------------------------------------------------------------------
    async def _opcua_up(self, ts: datetime) -> OpcUaPlantServer:
        server = OpcUaPlantServer(**self._opcua_kwargs)
        await server.__aenter__()
        for eq in self.model.fermenters if self.model else ():
            await server.add_equipment(eq, opcua_signal_types(), ts)
        await server.start()
        return server

    async def run(
        self,
        stop: asyncio.Event,
        ready: asyncio.Event | None = None,
        go: asyncio.Event | None = None,
        hold: asyncio.Event | None = None,
    ) -> None:
        """Serve until `stop` is set. The servers are up when `ready` is set; with `go`, the simulated
        process starts only once `go` is set (tests connect their collectors in between). With `hold`: once
        it is set the process publishes nothing more (`self.held` is set after the last tick) while the
        servers stay up until `stop`, so a test can wait until everything published has been collected."""
        opcua_cfg = self.config.opcua.servers.get(self.sim.opcua_server or "")
        broker = self.config.mqtt.brokers.get(self.sim.mqtt_broker or "")
        origin = self._explicit_start or utcnow()
        history_h = self._history_hours()
        self.model = PlantModel(self.scenario, self.units, origin - timedelta(hours=history_h))
        self.recorder = Recorder(
            self.model, truth_dir=self.data_dir / "truth" if self.data_dir is not None else None
        )
        if history_h > 0:
            await asyncio.to_thread(self._write_history, history_h)
        if opcua_cfg is not None:
            self._opcua_kwargs = {
                "endpoint": opcua_cfg.endpoint,
                "namespace": opcua_cfg.namespace or "urn:biopilot:simulator",
            }
            self.opcua = await self._opcua_up(self.model.now())
        if broker is not None:
            self.mqtt = MqttPlantPublisher(
                broker.host,
                broker.port,
                f"biopilot-simulator-{self.sim.mqtt_topic_prefix}",
                broker.username,
                os.environ.get(broker.password_env) if broker.password_env else None,
            )
        try:
            async with contextlib.AsyncExitStack() as stack:
                mqtt = await stack.enter_async_context(self.mqtt) if self.mqtt is not None else None
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
                # The live process starts now (plus the history), not when this object was made.
                if self._explicit_start is None and history_h == 0:
                    self.model.start = utcnow()
                self.clock = self._clock(self.model.now())
                loop = asyncio.get_running_loop()
                next_tick = loop.time()
                while not stop.is_set():
                    if hold is not None and hold.is_set():
                        self.held.set()
                        await stop.wait()
                        break
                    await self.tick(self.clock.now())
                    self.clock.advance()
                    next_tick += self.interval_s
                    delay = next_tick - loop.time()
                    if delay < -5 * self.interval_s:  # fell far behind (a suspended laptop): no burst
                        next_tick = loop.time()
                    await wait_for_event(stop, delay)
                if mqtt is not None and not mqtt.away and not await mqtt.drain(5.0):
                    log.warning("%d MQTT messages were not acknowledged by the broker at stop", mqtt.unacked)
        finally:
            if self.opcua is not None and not self._opcua_down:
                await self.opcua.__aexit__(None, None, None)

    def _clock(self, origin: datetime) -> SimClock:
        if self.lockstep:
            return LockstepClock(origin, self.speed, self.interval_s * self.speed)
        return SimClock(origin, self.speed)

    def _history_hours(self) -> float:
        h = self.sim.history_h
        if h <= 0 or self.history_store is None:
            return 0.0
        names = list(tag_map(self.config).values())
        if names and self.history_store.latest(names):
            log.info("the store holds data of the simulated tags already: no history is generated")
            return 0.0
        return h

    def _write_history(self, hours: float) -> None:
        assert self.model is not None and self.recorder is not None
        t0 = time.perf_counter()
        target = hours - 1e-9
        self.recorder.run(lambda: self.model is not None and self.model.t_h >= target)
        rng = np.random.default_rng([self.scenario.seed, 2])
        self.recorder.lab_until_h = self.model.t_h
        history = self.recorder.history(0, rng)
        n = write_store(
            history, self.history_store, tag_map(self.config), batch=None, transforms=self.config.transforms()
        )
        reported = [s for s in self.recorder.lab if s.report_t_h <= self.model.t_h]
        self._lab_sent = len(reported)
        if self.scenario.lab.delivery == "csv":  # (MQTT-delivered results went into the store above)
            for s in reported:
                self._lab_csv(s)
        self.history_samples = n
        # what was recorded is in the store now: live mode records nothing more
        self.recorder.times.clear()
        for rows in self.recorder.rows.values():
            rows.clear()
        log.info(
            "plant history: %.0f h, %d samples written to the store in %.1f s",
            hours,
            n,
            time.perf_counter() - t0,
        )

    # -- one tick ---------------------------------------------------------------------------------------
    def _advance(self, steps: int) -> list[Event]:
        assert self.model is not None and self.recorder is not None
        out: list[Event] = []
        for _ in range(steps):
            events = self.model.step(self.dt_h)
            if events:
                self.recorder.handle(events)
                out.extend(events)
        return out

    async def tick(self, now: datetime) -> None:
        """Advance the models to plant time `now` (whole model steps) and publish one sample of every
        signal, at the model's time."""
        model = self.model
        assert model is not None
        target_h = (now - model.start).total_seconds() / 3600
        steps = math.floor((target_h - model.t_h) / self.dt_h + 1e-9)
        if steps <= 0:
            return
        await asyncio.to_thread(self._advance, steps)
        self.ticks += 1
        t_h, ts = model.t_h, model.now()
        await self._protocol_faults(t_h, ts)
        if self._opcua_down:
            self.ticks_opcua_down += 1
        for eq in model.fermenters:
            raw = model.fermenter_signals(eq)
            values, status = self._readings(eq, raw, FERMENTER_OPCUA, t_h)
            await self._publish_opcua(eq, values, status, ts + timedelta(seconds=self._skew("opcua", t_h)))
            offgas_sigs = [sig for sig, _ in OFFGAS]
            o_values, o_status = self._readings(eq, raw, offgas_sigs, t_h)
            msg = {fld: o_values[sig.name] for sig, fld in OFFGAS}
            await self._publish_mqtt(eq, "offgas", msg, ts, max(o_status.values()), t_h)
        for eq, u in model.units.items():
            raw = model.unit_signals(eq)
            values, status = self._readings(eq, raw, RECOVERY_SIGNALS[UnitKind(u.kind)], t_h)
            await self._publish_mqtt(eq, "state", values, ts, max(status.values()), t_h)
        await self._deliver_lab(t_h)

    def _skew(self, source: str, t_h: float) -> float:
        assert self.recorder is not None
        return self.recorder.faults.skew_s(source, t_h)

    def _readings(
        self, eq: str, raw: dict[str, float | str], signals: Any, t_h: float
    ) -> tuple[dict[str, float | str], dict[str, int]]:
        assert self.recorder is not None
        faults = self.recorder.faults
        faulty = faults.signal_keys()
        values: dict[str, float | str] = {}
        status: dict[str, int] = {}
        t = np.array([t_h])
        for sig in signals:
            v = raw[sig.name]
            st = GOOD
            if not sig.text:
                v = measure_one(sig, float(v), self.rng)
                key = f"{eq}/{sig.name}"
                if key in faulty:
                    arr, sts = np.array([v]), np.array([GOOD], dtype=np.int64)
                    faults.apply(key, t, arr, sts)
                    v, st = round(float(arr[0]), sig.decimals), int(sts[0])
            values[sig.name] = v
            status[sig.name] = st
        return values, status

    async def _publish_opcua(
        self, eq: str, values: dict[str, float | str], status: dict[str, int], ts: datetime
    ) -> None:
        if self.opcua is None or self._opcua_down:
            return
        groups: dict[int, dict[str, float | str]] = {}
        for name, v in values.items():
            groups.setdefault(status[name], {})[name] = v
        for st, group in groups.items():
            await self.opcua.publish(eq, group, ts, st)

    async def _publish_mqtt(
        self, eq: str, channel: str, values: dict[str, float | str], ts: datetime, status: int, t_h: float
    ) -> None:
        if self.mqtt is None:
            return
        tp = self.topic(eq, channel)
        ts = ts + timedelta(seconds=self._skew(f"{eq}/{channel}", t_h))
        if self.mqtt.away:
            if self._buffering(t_h):
                self._buffer.append((tp, values, ts, status))
            else:
                self.dropped.update({f"{tp}#{k}": 1 for k in values})
            return
        await self._send(tp, values, ts, status)

    async def _send(self, tp: str, values: dict[str, float | str], ts: datetime, status: int) -> None:
        assert self.mqtt is not None
        fmt = self.sim.mqtt_format
        if fmt in ("json", "both"):
            await self.mqtt.publish(tp, values, ts, status)
        if fmt in ("number", "both"):
            for name, v in values.items():
                await self.mqtt.publish_number(f"{tp}/{name}", v)

    async def _deliver_lab(self, t_h: float) -> None:
        assert self.recorder is not None and self.model is not None
        lab_cfg = self.scenario.lab
        pending = self.recorder.lab
        while self._lab_sent < len(pending) and pending[self._lab_sent].report_t_h <= t_h + 1e-9:
            s: LabSample = pending[self._lab_sent]
            self._lab_sent += 1
            if lab_cfg.delivery == "csv":
                self._lab_csv(s)
            elif lab_cfg.delivery == "mqtt":
                values: dict[str, float | str] = dict(s.measured)
                values.update(
                    batch_id=s.batch_id,
                    sample_id=s.sample_id,
                    sample_volume_l=s.volume_l,
                    reported_at=self.model.at(s.report_t_h).isoformat(),
                )
                await self._publish_mqtt(s.equipment, "lab", values, self.model.at(s.t_h), GOOD, t_h)

    def _lab_csv(self, s: LabSample) -> None:
        assert self.model is not None
        if self.data_dir is None:
            return
        lab_mod.append_csv(
            self.data_dir / "lab",
            batch_id=s.batch_id,
            sampled_at=self.model.at(s.t_h),
            volume_l=s.volume_l,
            values=s.measured,
        )

    def _buffering(self, t_h: float) -> bool:
        assert self.recorder is not None
        return any(
            f.buffer for f, w in self.recorder.faults.of_kind(FaultKind.MQTT_DISCONNECT) if w.contains(t_h)
        )

    async def _protocol_faults(self, t_h: float, ts: datetime) -> None:
        assert self.recorder is not None
        faults = self.recorder.faults
        if self.opcua is not None:
            down = any(w.contains(t_h) for _, w in faults.of_kind(FaultKind.OPCUA_RESTART))
            if down and not self._opcua_down:
                log.info("OPC UA server stops (fault) at plant time %s", ts.isoformat())
                self._opcua_down = True
                await self.opcua.stop_serving()
            elif not down and self._opcua_down:
                log.info("OPC UA server serves again (fault over) at plant time %s", ts.isoformat())
                await self.opcua.serve_again(ts)
                self._opcua_down = False
        if self.mqtt is not None:
            away = any(w.contains(t_h) for _, w in faults.of_kind(FaultKind.MQTT_DISCONNECT))
            if away and not self.mqtt.away:
                await self.mqtt.disconnect()
            elif not away and self.mqtt.away:
                if not await self.mqtt.reconnect():
                    log.warning("the MQTT broker did not take the simulator back within 10 s")
                buffered, self._buffer = self._buffer, []
                for tp, values, bts, st in buffered:
                    await self._send(tp, values, bts, st)
            for i, f in enumerate(faults.faults):
                if f.kind != FaultKind.MALFORMED or i in self._malformed_done or i not in faults.windows:
                    continue
                if t_h >= faults.windows[i].start_h - 1e-9 and not self.mqtt.away and f.source:
                    self._malformed_done.add(i)
                    eq, _, channel = f.source.partition("/")
                    for k in range(f.count):
                        await self.mqtt.publish_raw(
                            self.topic(eq, channel), MALFORMED_PAYLOADS[k % len(MALFORMED_PAYLOADS)]
                        )
