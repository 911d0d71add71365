"""A disc-stack centrifuge clarifying fermenter harvests: pure model, no network code.

Each harvest (batch id, volume, product concentration) waits in a hold tank; the centrifuge runs
startup → clarification → cip for it and carries the harvest's batch id, so a downstream run links to
the fermentation it processed. The step yield is the share of product leaving with the centrate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np


class RecoveryPhase(StrEnum):
    IDLE = "idle"
    STARTUP = "startup"
    CLARIFICATION = "clarification"
    CIP = "cip"


@dataclass(frozen=True)
class Harvest:
    batch_id: str
    volume: float  # [L]
    product: float  # [g/L]


@dataclass(frozen=True)
class RecoveryParams:
    feed_flow: float = 400.0  # [L/h]
    bowl_speed: float = 7500.0  # [rpm]
    drive_power_running: float = 11.0  # [kW]
    drive_power_idle: float = 0.0  # [kW]
    step_yield: float = 0.95  # product into the centrate / product in the feed
    t_startup: float = 0.25  # [h]
    t_cip: float = 0.75  # [h]
    turbidity: float = 25.0  # [NTU] centrate


@dataclass(frozen=True)
class RecoveryState:
    phase: RecoveryPhase = RecoveryPhase.IDLE
    t_phase: float = 0.0  # [h]
    harvest: Harvest | None = None
    processed: float = 0.0  # [L] of the current harvest
    queue: tuple[Harvest, ...] = ()


def receive(state: RecoveryState, harvest: Harvest) -> RecoveryState:
    """A harvest arrives in the hold tank."""
    return replace(state, queue=(*state.queue, harvest))


def step(state: RecoveryState, params: RecoveryParams, dt_h: float) -> RecoveryState:
    t = state.t_phase + dt_h
    if state.phase == RecoveryPhase.IDLE:
        if state.queue:
            return replace(
                state,
                phase=RecoveryPhase.STARTUP,
                t_phase=0.0,
                harvest=state.queue[0],
                queue=state.queue[1:],
                processed=0.0,
            )
        return replace(state, t_phase=t)
    if state.phase == RecoveryPhase.STARTUP:
        if t >= params.t_startup:
            return replace(state, phase=RecoveryPhase.CLARIFICATION, t_phase=0.0)
        return replace(state, t_phase=t)
    if state.phase == RecoveryPhase.CLARIFICATION:
        assert state.harvest is not None
        processed = state.processed + params.feed_flow * dt_h
        if processed >= state.harvest.volume:
            return replace(state, phase=RecoveryPhase.CIP, t_phase=0.0, processed=state.harvest.volume)
        return replace(state, t_phase=t, processed=processed)
    if t >= params.t_cip:
        return replace(state, phase=RecoveryPhase.IDLE, t_phase=0.0, harvest=None, processed=0.0)
    return replace(state, t_phase=t)


def measure(state: RecoveryState, params: RecoveryParams, rng: np.random.Generator) -> dict[str, float | str]:
    """The centrifuge's signals, keyed by the field names it publishes."""
    running = state.phase in (RecoveryPhase.STARTUP, RecoveryPhase.CLARIFICATION)
    clarifying = state.phase == RecoveryPhase.CLARIFICATION
    ramp = min(state.t_phase / params.t_startup, 1.0) if state.phase == RecoveryPhase.STARTUP else 1.0
    harvest = state.harvest
    return {
        "batch_id": harvest.batch_id if harvest is not None else "",
        "phase": state.phase.value,
        "feed_flow": round(max(params.feed_flow + rng.normal(0, 3.0), 0.0), 1) if clarifying else 0.0,
        "bowl_speed": round(params.bowl_speed * ramp + rng.normal(0, 5.0), 0) if running else 0.0,
        "power": round(params.drive_power_running * (0.6 + 0.4 * ramp) + rng.normal(0, 0.1), 2)
        if running
        else params.drive_power_idle,
        "turbidity": round(max(params.turbidity + rng.normal(0, 1.5), 0.0), 1) if clarifying else 0.0,
        "product": round(max(harvest.product * params.step_yield + rng.normal(0, 0.03), 0.0), 3)
        if clarifying and harvest is not None
        else 0.0,
    }
