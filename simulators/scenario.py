"""Scenarios: a simulated campaign with a known truth, as TOML (config/scenarios/*.toml).

A scenario says what the simulated plant does; the site config says how it is wired (equipment, servers,
tags). Sections:

  [scenario]    name, description, seed, start (historical mode: first fill, an aware TOML datetime),
                model_step_s (the models' step, ≤ 30 s), sample_interval_s (historical mode: one sample of
                every signal per interval; a multiple of model_step_s)
  [fermenter]   parameter values of every simulated fermenter (simulators.fermenter.FermenterParams)
  [recovery.KIND]  parameter values of the recovery units of that kind (centrifuge, uf_df, capture,
                polish; simulators.recovery.UnitParams)
  [lab]         offline samples: delivery ("mqtt", "csv" or "none"), every_h (after inoculation, plus a
                final sample at harvest start), delay_h (report after sampling), sample_volume_l, and the
                measurement error: titer_cv, dcw_cv, glucose_cv (relative SD) and glucose_sd [g/L]
  [[campaigns]] name, code (batch-id part), runs, and
                variability: relative SD of run-to-run variation per parameter (a fermenter parameter
                  name, or KIND.param for a recovery unit); each run draws z ~ N(0, 1) clipped to ±3,
                  seeded by (seed, run number), and uses value × (1 + SD·z)
                effects: known true effects of the startup's change, relative (0.06 = +6 %), see EFFECTS
                changes: parameter values the startup changes, with no declared effect (the truth reports
                  the realised effect against the run's counterfactual twin)
  [drift]       a slow change of the host process itself (seed train ageing, a raw-material lot, sensor
                recalibration), not the startup's: parameter = relative change per run, compounding through
                the whole scenario: run k uses value × (1 + drift)^(k − 1), on top of its campaign's draw
                (a fermenter parameter name, or KIND.param for a recovery unit; |drift| < 0.2). A
                counterfactual twin drifts too (the drift is not the startup's effect).
  [[faults]]    see simulators/faults.py

Runs are numbered 1, 2, ... through the campaigns in order; after the last planned run the last campaign
continues (live mode runs forever). Batch ids are <prefix>-<code><n:02d>, n counting within the campaign.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from biopilot.config import read_text, validate_toml
from biopilot.errors import ConfigError
from biopilot.samples import BAD_SENSOR_FAILURE
from simulators.fermenter import FermenterParams
from simulators.recovery import UnitKind, UnitParams, default_params
from simulators.signals import known_signal

FERMENTER_PARAMS = tuple(f.name for f in dataclasses.fields(FermenterParams))
UNIT_PARAMS = tuple(f.name for f in dataclasses.fields(UnitParams) if f.name != "kind")


@dataclass(frozen=True)
class Effect:
    """How a declared true effect is made, and the true KPIs it changes by exactly that factor."""

    parameter: str  # the fermenter parameter multiplied by (1 + effect)
    mechanism: str
    kpis: tuple[str, ...]  # truth keys (simulators/truth.py) scaled by exactly (1 + effect)


EFFECTS: dict[str, Effect] = {
    "product_yield": Effect(
        "product_factor",
        "the strain's specific productivity q_P is multiplied; substrate uptake and growth are unchanged"
        " (product carbon comes out of the CO2 flux), so product formed, titer and product yield change"
        " by the same factor",
        ("product_formed_g", "titer_g_per_l", "product_yield_g_per_g"),
    ),
    "agitation_energy": Effect(
        "agitator_power_factor",
        "the agitator draws this much more (less) electrical power for the same oxygen transfer (a drive or"
        " impeller change), so speed, DO and growth are unchanged",
        ("energy_kwh.agitator",),
    ),
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Header(_Model):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 42
    start: datetime = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)
    model_step_s: float = Field(default=10.0, gt=0, le=30.0)
    sample_interval_s: float = Field(default=60.0, gt=0)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("give the time zone, for example 2025-03-03T06:00:00Z")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _multiple(self) -> Header:
        ratio = self.sample_interval_s / self.model_step_s
        if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(
                f"sample_interval_s ({self.sample_interval_s:g}) must be a multiple of model_step_s"
                f" ({self.model_step_s:g})"
            )
        return self


class Lab(_Model):
    delivery: Literal["mqtt", "csv", "none"] = "mqtt"
    every_h: float = Field(default=4.0, gt=0)
    delay_h: float = Field(default=2.0, ge=0)
    sample_volume_l: float = Field(default=0.05, ge=0)
    titer_cv: float = Field(default=0.03, ge=0)
    dcw_cv: float = Field(default=0.04, ge=0)
    glucose_cv: float = Field(default=0.03, ge=0)
    glucose_sd: float = Field(default=0.05, ge=0)


class Campaign(_Model):
    name: str = Field(min_length=1)
    code: str = Field(pattern=r"^[A-Za-z0-9]{1,8}$")
    runs: int = Field(ge=1)
    description: str = ""
    variability: dict[str, float] = {}
    effects: dict[str, float] = {}
    changes: dict[str, float] = {}

    @field_validator("variability")
    @classmethod
    def _sd(cls, value: dict[str, float]) -> dict[str, float]:
        for key, sd in value.items():
            if not 0 <= sd < 1 / 3:
                raise ValueError(f"{key}: a relative SD in [0, 0.33), got {sd:g}")
        return value

    @field_validator("effects")
    @classmethod
    def _effect(cls, value: dict[str, float]) -> dict[str, float]:
        for key, effect in value.items():
            if key not in EFFECTS:
                raise ValueError(f"{key!r} is not a known effect; expected one of: {', '.join(EFFECTS)}")
            if not -0.9 < effect < 10:
                raise ValueError(f"{key}: a relative effect above -0.9 (0.06 is +6 %), got {effect:g}")
        return value

    @property
    def has_change(self) -> bool:
        return bool(self.effects or self.changes)


class FaultKind(StrEnum):
    DROPOUT = "dropout"
    FLATLINE = "flatline"
    DRIFT = "drift"
    SPIKES = "spikes"
    OPCUA_RESTART = "opcua_restart"
    MQTT_DISCONNECT = "mqtt_disconnect"
    CLOCK_SKEW = "clock_skew"
    MALFORMED = "malformed"
    FEED_PUMP = "feed_pump"
    OXYGEN_TRANSFER = "oxygen_transfer"


SIGNAL_FAULTS = frozenset({FaultKind.DROPOUT, FaultKind.FLATLINE, FaultKind.DRIFT, FaultKind.SPIKES})
# process faults change the fermenter model itself in their window: the FermenterParams multiplier they set
PROCESS_FAULTS: dict[FaultKind, str] = {
    FaultKind.FEED_PUMP: "feed_pump_factor",
    FaultKind.OXYGEN_TRANSFER: "kla_factor",
}


class Fault(_Model):
    """A fault at a simulated time: from `at_h` hours after the start of run `run` (1-based), or of the
    simulation without `run`, for `duration_h` hours."""

    kind: FaultKind
    signal: str | None = None  # "<equipment>/<signal>" for dropout, flatline, drift, spikes
    source: str | None = None  # "opcua" or an MQTT channel "<equipment>/<offgas|state|lab>"
    run: int | None = Field(default=None, ge=1)
    at_h: float = Field(default=0.0, ge=0)
    duration_h: float = Field(default=0.0, ge=0)
    status: int = Field(default=BAD_SENSOR_FAILURE, ge=0, lt=2**32)  # dropout
    rate_per_h: float = 0.0  # drift [signal unit per hour]
    magnitude: float = 0.0  # spikes [signal unit]
    count: int = Field(default=1, ge=1)  # spikes, malformed
    skew_s: float = 0.0  # clock_skew: the source's clock runs this far ahead (negative: behind)
    buffer: bool = False  # mqtt_disconnect: keep messages and publish them on reconnect
    equipment: str | None = None  # process faults: the fermenter
    factor: float = Field(default=0.0, ge=0)  # feed_pump: delivered / set flow; oxygen_transfer: kLa factor

    @model_validator(mode="after")
    def _fields(self) -> Fault:
        k = self.kind
        if k in SIGNAL_FAULTS:
            if not self.signal or "/" not in self.signal:
                raise ValueError(f"a {k.value} fault needs signal = '<equipment>/<signal>'")
            if k != FaultKind.SPIKES and self.duration_h <= 0:
                raise ValueError(f"a {k.value} fault needs duration_h > 0")
            if k == FaultKind.DRIFT and self.rate_per_h == 0:
                raise ValueError("a drift fault needs rate_per_h (signal units per hour)")
            if k == FaultKind.SPIKES and self.magnitude == 0:
                raise ValueError("a spikes fault needs magnitude (signal units)")
        elif k == FaultKind.OPCUA_RESTART:
            if self.duration_h <= 0:
                raise ValueError("an opcua_restart fault needs duration_h > 0 (the server is down that long)")
        elif k == FaultKind.MQTT_DISCONNECT:
            if self.duration_h <= 0:
                raise ValueError(
                    "an mqtt_disconnect fault needs duration_h > 0 (the publisher is away that long)"
                )
        elif k == FaultKind.MALFORMED:
            if not self.source or self.source == "opcua":
                raise ValueError("a malformed fault needs source = '<equipment>/<channel>' (an MQTT topic)")
        elif k in PROCESS_FAULTS:
            if not self.equipment:
                raise ValueError(f"a {k.value} fault needs equipment = '<fermenter>'")
            if self.duration_h <= 0:
                raise ValueError(f"a {k.value} fault needs duration_h > 0")
            if k == FaultKind.FEED_PUMP and not self.factor < 1:
                raise ValueError("a feed_pump fault needs factor in [0, 1) (0: the pump stopped)")
            if k == FaultKind.OXYGEN_TRANSFER and not 0 < self.factor < 1:
                raise ValueError("an oxygen_transfer fault needs factor in (0, 1) (the share of kLa left)")
        elif k == FaultKind.CLOCK_SKEW:
            if not self.source:
                raise ValueError("a clock_skew fault needs source ('opcua' or '<equipment>/<channel>')")
            if self.skew_s == 0:
                raise ValueError("a clock_skew fault needs skew_s")
        return self


class Scenario(_Model):
    scenario: Header
    fermenter: dict[str, float] = {}
    recovery: dict[UnitKind, dict[str, float]] = {}
    lab: Lab = Lab()
    campaigns: list[Campaign] = Field(default_factory=lambda: [Campaign(name="baseline", code="B", runs=1)])
    drift: dict[str, float] = {}
    faults: list[Fault] = []

    @field_validator("drift")
    @classmethod
    def _drift(cls, value: dict[str, float]) -> dict[str, float]:
        for key, rate in value.items():
            if not -0.2 < rate < 0.2:
                raise ValueError(f"{key}: a relative change per run in (-0.2, 0.2), got {rate:g}")
        return value

    @property
    def seed(self) -> int:
        return self.scenario.seed

    @property
    def planned_runs(self) -> int:
        return sum(c.runs for c in self.campaigns)

    def fermenter_params(self) -> FermenterParams:
        return dataclasses.replace(FermenterParams(), **self.fermenter)

    def unit_params(self, kind: UnitKind) -> UnitParams:
        return dataclasses.replace(default_params(kind), **self.recovery.get(kind, {}))

    def campaign_of(self, number: int) -> tuple[Campaign, int]:
        """The campaign of run `number` (1-based) and the run's number within it."""
        first = 1
        for c in self.campaigns:
            if number < first + c.runs:
                return c, number - first + 1
            first += c.runs
        last = self.campaigns[-1]
        return last, number - (first - last.runs) + 1

    def run_plan(self, number: int) -> RunPlan:
        """Parameters of run `number`: the scenario's values, the campaign's change and the run's draw."""
        campaign, n = self.campaign_of(number)
        rng = np.random.default_rng([self.seed, number])
        factors = {
            key: 1 + sd * float(np.clip(rng.standard_normal(), -3, 3))
            for key, sd in sorted(campaign.variability.items())
        }
        for key, rate in self.drift.items():
            factors[key] = factors.get(key, 1.0) * (1 + rate) ** (number - 1)
        base_f = _scaled(self.fermenter_params(), {k: v for k, v in factors.items() if "." not in k})
        units = {}
        for kind in UnitKind:
            own = {k.split(".", 1)[1]: v for k, v in factors.items() if k.startswith(f"{kind.value}.")}
            units[kind] = _scaled(self.unit_params(kind), own)
        changed = base_f
        if campaign.changes:
            changed = dataclasses.replace(
                changed, **{k: v for k, v in campaign.changes.items() if "." not in k}
            )
            unit_changes: dict[UnitKind, dict[str, float]] = {}
            for key, value in campaign.changes.items():
                if "." in key:
                    kind_s, param = key.split(".", 1)
                    unit_changes.setdefault(UnitKind(kind_s), {})[param] = value
            changed_units = {k: dataclasses.replace(u, **unit_changes.get(k, {})) for k, u in units.items()}
        else:
            changed_units = units
        for name, effect in campaign.effects.items():
            param = EFFECTS[name].parameter
            changed = dataclasses.replace(changed, **{param: getattr(changed, param) * (1 + effect)})
        return RunPlan(
            number,
            campaign,
            n,
            changed,
            changed_units,
            base_f if campaign.has_change else None,
            units if campaign.has_change else None,
        )


@dataclass(frozen=True)
class RunPlan:
    number: int  # 1-based through the scenario
    campaign: Campaign
    number_in_campaign: int
    fermenter: FermenterParams
    units: dict[UnitKind, UnitParams]
    counterfactual: FermenterParams | None  # the same run without the campaign's change
    counterfactual_units: dict[UnitKind, UnitParams] | None

    def batch_id(self, prefix: str) -> str:
        return f"{prefix}-{self.campaign.code}{self.number_in_campaign:02d}"


def _scaled(params: Any, factors: dict[str, float]) -> Any:
    if not factors:
        return params
    return dataclasses.replace(params, **{k: getattr(params, k) * f for k, f in factors.items()})


def default_scenario(name: str = "default", seed: int = 42) -> Scenario:
    """A baseline campaign with modest run-to-run variability, lab results over MQTT (what the demo runs)."""
    return Scenario(
        scenario=Header(name=name, seed=seed),
        campaigns=[
            Campaign(
                name="baseline",
                code="B",
                runs=1,
                variability={"mu_max": 0.03, "x_inoculum": 0.08, "alpha": 0.03, "s0": 0.02},
            )
        ],
    )


# -- loading ------------------------------------------------------------------------------------------
def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise ConfigError with one line naming the file and the key."""
    return parse_scenario(read_text(path), path)


def parse_scenario(text: str, path: str | Path = "<scenario>") -> Scenario:
    scenario, _ = validate_toml(Scenario, text, path)
    problem = _cross_check(scenario)
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return scenario


def _unknown(key: str, name: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{key}: {name!r} is not a parameter{hint}"


def _check_params(section: str, values: dict[str, float], *, units: bool) -> str | None:
    for name, value in values.items():
        key = f"{section}.{name}"
        if "." in name and units:
            kind_s, param = name.split(".", 1)
            if kind_s not in UnitKind.__members__.values():
                kinds = ", ".join(k.value for k in UnitKind)
                return f"{key}: {kind_s!r} is not a recovery unit kind (expected one of: {kinds})"
            if param not in UNIT_PARAMS:
                return _unknown(key, param, UNIT_PARAMS)
        elif name not in FERMENTER_PARAMS:
            return _unknown(key, name, FERMENTER_PARAMS)
        if not math.isfinite(value):
            return f"{key}: not a finite number"
    return None


def _cross_check(s: Scenario) -> str | None:
    problem = _check_params("fermenter", s.fermenter, units=False)
    if problem:
        return problem
    for kind, values in s.recovery.items():
        for name in values:
            if name not in UNIT_PARAMS:
                return _unknown(f"recovery.{kind.value}.{name}", name, UNIT_PARAMS)
    problem = _check_params("drift", s.drift, units=True)
    if problem:
        return problem
    for i, c in enumerate(s.campaigns):
        for section in ("variability", "changes"):
            problem = _check_params(f"campaigns[{i}].{section}", getattr(c, section), units=True)
            if problem:
                return problem
    codes = [c.code for c in s.campaigns]
    for code in codes:
        if codes.count(code) > 1:
            return f"campaigns: code {code!r} is used twice; batch ids would collide"
    for i, f in enumerate(s.faults):
        if f.signal is not None and not known_signal(f.signal.split("/", 1)[1]):
            return f"faults[{i}].signal: {f.signal!r} names no simulated signal"
        if f.source is not None and f.source != "opcua":
            eq, _, channel = f.source.partition("/")
            if not eq or channel not in ("offgas", "state", "lab"):
                return (
                    f"faults[{i}].source: {f.source!r}: expected 'opcua' or '<equipment>/<channel>' with"
                    " channel offgas, state or lab"
                )
    return None
