"""The trial charter: what a trial will be judged on, fixed before its first trial run.

A charter is a TOML file like the site config (config/trials/example-charter.toml documents every key),
loaded into a frozen, validated model; a bad file fails with one line naming the file, the key and what was
expected (`ConfigError`). Its canonical JSON (`canonical_json`: every key, defaults included, sorted, no
whitespace, floats as Python's shortest repr, datetimes in UTC) and the SHA-256 of that text
(`charter_sha256`) identify it: two files that say the same thing (key order, comments, `5` or `5.0`, a time
zone offset) have the same hash, and any change of meaning changes it. Locking and versions are the
catalog's business; the verdict names the version and hash it used.

Keys (the statistics are in processing/verdict.py, the money in processing/money.py):

  title, equipment, startup (tenant id), product
  primary_kpi          any KPI name (processing.kpis.KPI_UNITS, or energy.<tag>)
  direction            "higher" | "lower": which way is better for the primary KPI
  hypothesis           "superiority" | "non_inferiority" | "equivalence"
  margin, margin_unit  the practical margin Δ ≥ 0, relative ("%") or absolute (the KPI's unit);
                       non-inferiority and equivalence need Δ > 0, and a relative Δ is below 100 %
  alpha                the significance level α (0 < α < 0.5)
  planned_runs         trial runs planned (a verdict on fewer is an interim one)
  secondary_kpis       [{ kpi, direction }]: judged too, Holm-corrected among themselves
  min_coverage         a run's KPI counts only with at least this coverage (0..1)
  baseline_runs        run ids, or a [baseline] rule (equipment, product, kind = "baseline", start, end)
                       that the catalog resolves to run ids when the charter is locked; exactly one of both
  trial_runs           run ids (may be empty when the charter is written; runs are added later)
  [prices]             money: product_kpi, [prices.substrates.NAME], electricity, steam, water,
                       batch_hour: each a price with its `source`
  [throughput]         batches_per_year or kg_per_year, with its source
  [quote]              the startup's quoted price [€] for its change, with its source (payback)
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from biopilot.config import read_text, validate_toml
from biopilot.errors import ConfigError

CHARTER_FORMAT = "biopilot-charter-1"


class Direction(StrEnum):
    HIGHER = "higher"
    LOWER = "lower"

    @property
    def sign(self) -> int:
        """+1 when higher is better, −1 when lower is better: sign · (trial − baseline) is "better"."""
        return 1 if self is Direction.HIGHER else -1


class Hypothesis(StrEnum):
    SUPERIORITY = "superiority"
    NON_INFERIORITY = "non_inferiority"
    EQUIVALENCE = "equivalence"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give the time zone, for example 2025-03-03T06:00:00Z")
    return value.astimezone(UTC)


class SecondaryKpi(_Model):
    kpi: str = Field(min_length=1)
    direction: Direction


class BaselineRule(_Model):
    """Baseline runs by rule: this equipment's runs of this product, of kind baseline, started in
    [start, end)."""

    equipment: str = Field(min_length=1)
    product: str = Field(min_length=1)
    kind: Literal["baseline"] = "baseline"
    start: datetime
    end: datetime

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _aware_utc(value)


class SubstratePrice(_Model):
    eur_per_kg: float = Field(ge=0)  # [€/kg substrate]
    source: str = Field(min_length=1)
    kpi: str = "substrate_fed"  # the run's KPI with the amount fed [kg]


class ElectricityPrice(_Model):
    eur_per_kwh: float = Field(ge=0)  # [€/kWh]
    source: str = Field(min_length=1)
    kpi: str = "energy.total"  # [kWh]


class SteamPrice(_Model):
    eur_per_t: float = Field(ge=0)  # [€/t]
    source: str = Field(min_length=1)
    kpi: str = "steam"  # [kg]


class WaterPrice(_Model):
    eur_per_m3: float = Field(ge=0)  # [€/m³]
    source: str = Field(min_length=1)
    kpi: str = "water"  # [m3]


class BatchHourPrice(_Model):
    eur_per_h: float = Field(ge=0)  # [€/h] the plant's cost of one hour of the vessel (staff, depreciation)
    source: str = Field(min_length=1)
    kpi: str = "batch_duration"  # [h]


class Prices(_Model):
    product_kpi: str = "product_formed"  # cost is per kg of this KPI [kg]
    substrates: dict[str, SubstratePrice] = {}
    electricity: ElectricityPrice | None = None
    steam: SteamPrice | None = None
    water: WaterPrice | None = None
    batch_hour: BatchHourPrice | None = None

    @property
    def empty(self) -> bool:
        return not (self.substrates or self.electricity or self.steam or self.water or self.batch_hour)


class Throughput(_Model):
    """The host plant's output the savings are counted at: batches per year, or kg of product per year."""

    batches_per_year: float | None = Field(default=None, gt=0)
    kg_per_year: float | None = Field(default=None, gt=0)
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one(self) -> Throughput:
        if (self.batches_per_year is None) == (self.kg_per_year is None):
            raise ValueError("give exactly one of batches_per_year or kg_per_year")
        return self


class Quote(_Model):
    """The startup's quoted price for its change (one-off) [€], for the payback."""

    eur: float = Field(gt=0)
    source: str = Field(min_length=1)


class Charter(_Model):
    title: str = Field(min_length=1)
    equipment: str = Field(min_length=1)
    startup: str = Field(min_length=1)  # tenant id
    product: str = Field(min_length=1)
    primary_kpi: str = Field(min_length=1)
    direction: Direction
    hypothesis: Hypothesis
    margin: float = Field(ge=0)
    margin_unit: str = Field(min_length=1)  # "%" or the primary KPI's unit
    alpha: float = Field(gt=0, lt=0.5)
    planned_runs: int = Field(ge=2)
    secondary_kpis: list[SecondaryKpi] = []
    min_coverage: float = Field(default=0.95, ge=0, le=1)
    baseline_runs: list[str] = []
    baseline: BaselineRule | None = None
    trial_runs: list[str] = []
    prices: Prices = Prices()
    throughput: Throughput | None = None
    quote: Quote | None = None

    @model_validator(mode="before")
    @classmethod
    def _rule_defaults(cls, raw: Any) -> Any:
        """A [baseline] rule takes the charter's equipment and product unless it names its own."""
        if isinstance(raw, dict) and isinstance(raw.get("baseline"), dict):
            rule = dict(raw["baseline"])
            for key in ("equipment", "product"):
                if key not in rule and isinstance(raw.get(key), str):
                    rule[key] = raw[key]
            raw = {**raw, "baseline": rule}
        return raw

    @property
    def relative(self) -> bool:
        """The margin is relative (%), judged on the ratio trial / baseline."""
        return self.margin_unit == "%"


# -- loading ------------------------------------------------------------------------------------------
def load_charter(path: str | Path, kpi_units: Mapping[str, str] | None = None) -> Charter:
    """Read and validate a charter file; ConfigError with one line naming the file and the key.

    kpi_units: the KPIs BioPilot computes and their units (processing.kpis.KPI_UNITS); when given, KPI names
    and an absolute margin's unit are checked against it."""
    return parse_charter(read_text(path), path, kpi_units)


def parse_charter(
    text: str, path: str | Path = "<charter>", kpi_units: Mapping[str, str] | None = None
) -> Charter:
    charter, _ = validate_toml(Charter, text, path)
    problem = _cross_check(charter) or (check_kpis(charter, kpi_units) if kpi_units is not None else None)
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return charter


def _cross_check(c: Charter) -> str | None:
    """Rules between keys; the first problem as 'key: message'."""
    if c.hypothesis is not Hypothesis.SUPERIORITY and c.margin <= 0:
        return (
            f"margin: a {c.hypothesis.value} charter needs a margin above 0 (the difference that does "
            "not matter)"
        )
    if c.relative and c.margin >= 100:
        return f"margin: a relative margin is below 100 %, got {c.margin:g}"
    if (not c.baseline_runs) == (c.baseline is None):
        return "baseline_runs: give exactly one of baseline_runs (run ids) or a [baseline] rule"
    if c.baseline is not None and c.baseline.end <= c.baseline.start:
        return "baseline.end: must be after baseline.start"
    for key, ids in (("baseline_runs", c.baseline_runs), ("trial_runs", c.trial_runs)):
        for run_id, count in Counter(ids).items():
            if count > 1:
                return f"{key}: run {run_id!r} is listed {count} times"
    both = sorted(set(c.baseline_runs) & set(c.trial_runs))
    if both:
        return (
            f"trial_runs: {', '.join(repr(r) for r in both)} also in baseline_runs; a run is one or the other"
        )
    names = [s.kpi for s in c.secondary_kpis]
    for name, count in Counter(names).items():
        if count > 1:
            return f"secondary_kpis: {name!r} is listed {count} times"
    if c.primary_kpi in names:
        return f"secondary_kpis: {c.primary_kpi!r} is the primary KPI"
    return None


def check_kpis(c: Charter, kpi_units: Mapping[str, str]) -> str | None:
    """KPI names against the KPIs BioPilot computes (energy.<tag> are per consumer), and an absolute
    margin's unit against the primary KPI's unit; the first problem as 'key: message'."""

    def known(name: str) -> bool:
        return name in kpi_units or name.startswith("energy.")

    def unknown(key: str, name: str) -> str:
        close = difflib.get_close_matches(name, list(kpi_units), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{key}: {name!r} is not a KPI BioPilot computes{hint}"

    if not known(c.primary_kpi):
        return unknown("primary_kpi", c.primary_kpi)
    for i, s in enumerate(c.secondary_kpis):
        if not known(s.kpi):
            return unknown(f"secondary_kpis[{i}].kpi", s.kpi)
    unit = kpi_units.get(c.primary_kpi, "kWh" if c.primary_kpi.startswith("energy.") else "")
    if not c.relative and c.margin_unit != unit:
        return f"margin_unit: {c.margin_unit!r} is neither '%' nor the unit of {c.primary_kpi} ({unit!r})"
    return None


# -- identity -----------------------------------------------------------------------------------------
def canonical_json(charter: Charter) -> str:
    """The charter as canonical JSON: every key (defaults included), keys sorted, no whitespace, floats as
    Python's shortest round-trip repr, datetimes as ISO-8601 UTC, non-ASCII kept (UTF-8)."""
    doc = {"format": CHARTER_FORMAT, "charter": charter.model_dump(mode="json")}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def charter_sha256(charter: Charter) -> str:
    """SHA-256 (hex) of the UTF-8 bytes of `canonical_json`."""
    return hashlib.sha256(canonical_json(charter).encode("utf-8")).hexdigest()
