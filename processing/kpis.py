"""The KPI engine: one run's stored signals, phases and lab results in, KpiRecords out.

Lab results are the catalog's (`biopilot lab`) and the samples of the equipment's tags with a `lab` table
(a LIMS publishing them; biopilot.config.LabTag), at their sampling times.

It asks for roles, never for tag names, converts units once, and hands numpy arrays to the pure functions
of processing.yields / offgas / recovery / energy. Each KPI carries the coverage of each input it needed
(share of the run with usable data; a lab value counts 1 when present, 0 when missing) and flags:

  provisional      the run is live; the value will change
  incomplete       an input it needed covers less than COMPLETE of its window
  missing_input    an input is absent altogether (the value is null)
  uncertain_inputs an uncertain-status sample entered the value
  assumed:<what>   a documented default stood in for a measurement (e.g. assumed:residual_substrate=0)
  closure_out_of_range   a mass or carbon balance outside 0.95–1.05
  overall_yield_mismatch Π step yields ≠ product out / product in by more than 1 %
  counter_reset    a totalizer went down without a configured rollover (treated as a reset to 0)
  no_emission_factor:<utility>   a utility was used but the site has no factor for it

KPI names and units are listed in KPI_UNITS (the stable interface of `biopilot kpis --json`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from biopilot.config import (
    EquipmentKind,
    ProcessSpec,
    Role,
    SiteConfig,
    Tag,
    emission_factor,
    process_spec,
)
from biopilot.records import KpiRecord, LabResult, Phase, Run, SeriesData
from biopilot.samples import from_us, to_us
from processing import offgas, recovery, yields
from processing.energy import Integral, energy_from_totalizer, integrate_trapezoid, specific_consumption
from processing.signals import align, covered_hours, default_max_gap_h, last_usable_before, uncertain, usable

KPI_VERSION = "kpi-2"
COMPLETE = 0.99  # an input covering less of its window than this makes the KPI incomplete
LAB_TOLERANCE_H = 0.5  # a lab value this close to inoculation counts as the initial value

# The KPIs BioPilot computes, with their units (energy.<tag> per consumer, like energy.total, in kWh).
KPI_UNITS: dict[str, str] = {
    "batch_duration": "h",
    "growth_duration": "h",
    "titer": "g/L",
    "product_formed": "kg",
    "product_harvested": "kg",
    "substrate_fed": "kg",
    "carbon_fed": "kg C",
    "substrate_consumed": "kg",
    "biomass_formed": "kg",
    "yield_product_substrate": "g/g",
    "yield_product_carbon": "g/g C",
    "yield_biomass_substrate": "g/g",
    "yield_product_biomass": "g/g",
    "volumetric_productivity": "g/L/h",
    "mean_working_volume": "L",
    "mu_max": "1/h",
    "our_max": "mol/L/h",
    "our_mean": "mol/L/h",
    "cer_mean": "mol/L/h",
    "rq": "mol/mol",
    "o2_consumed": "mol",
    "co2_produced": "mol",
    "carbon_balance_closure": "",
    "feed_volume": "L",
    "product_in": "kg",
    "product_out": "kg",
    "step_yield": "",
    "overall_yield": "",
    "mass_balance_closure": "",
    "concentration_factor": "",
    "purity": "",
    "energy.total": "kWh",
    "specific_energy": "kWh/kg",
    "steam": "kg",
    "steam_specific": "kg/kg",
    "water": "m3",
    "water_specific": "m3/kg",
    "co2e": "kg CO2e",
    "co2e_specific": "kg CO2e/kg",
}

TITER_ANALYTES = ("titer", "product")
BIOMASS_ANALYTES = ("biomass", "dcw", "x")

# unit conversions to the engine's units: L/h for liquid flows, L for volumes, L/min (reference) for gas,
# mol/mol for gas fractions, kW for power, kWh for energy, kg/h for steam, m³/h for water, g/L for conc.
_LIQUID_FLOW = {"L/h": 1.0, "mL/min": 0.06, "L/min": 60.0, "m3/h": 1000.0}
_VOLUME = {"L": 1.0, "m3": 1000.0}
_WEIGHT_KG = {"kg": 1.0, "t": 1000.0}
_GAS_L_PER_MIN = {"NL/min": 1.0, "L/min": 1.0, "Nm3/h": 1000 / 60, "m3/h": 1000 / 60}
_FRACTION = {"%": 0.01, "mol/mol": 1.0}
_POWER_KW = {"kW": 1.0, "W": 0.001}
_ENERGY_KWH = {"kWh": 1.0, "MWh": 1000.0}
_WATER_M3_PER_H = {"L/min": 0.06, "m3/h": 1.0, "kg/h": 0.001}
_CONC_G_PER_L = {"g/L": 1.0, "mg/L": 0.001}

Reader = Callable[[str, datetime, datetime], SeriesData]


@dataclass(frozen=True)
class Signal:
    """A tag's samples over the run, converted: t [h since run start], values, status."""

    tag: str
    t: np.ndarray
    v: np.ndarray
    status: np.ndarray

    def window(self, t0: float, t1: float) -> Signal:
        keep = (self.t >= t0) & (self.t <= t1)
        return Signal(self.tag, self.t[keep], self.v[keep], self.status[keep])

    @property
    def any_uncertain(self) -> bool:
        return bool(np.any(uncertain(self.status) & usable(self.v, self.status)))


@dataclass
class _Kpi:
    name: str
    value: float | None
    unit: str
    inputs: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)


class RunKpis:
    """Computes the KPIs of one run. `read(tag, start, end)` returns stored samples (start ≤ ts < end)."""

    def __init__(
        self,
        config: SiteConfig,
        run: Run,
        end: datetime,
        read: Reader,
        *,
        phases: Sequence[Phase] = (),
        lab: Sequence[LabResult] = (),
        upstream: dict[str, KpiRecord] | None = None,
        harvested: KpiRecord | None = None,
    ) -> None:
        self.config = config
        self.run = run
        self.end = end
        self.read = read
        self.phases = list(phases)
        self.upstream = upstream or {}
        self.harvested = harvested
        self.lab = _merge_lab(lab, self._lab_from_tags())
        self.spec: ProcessSpec = process_spec(config, run.equipment)
        self.run_h = max((end - run.start).total_seconds() / 3600, 0.0)
        self.kind = config.equipment_by_id(run.equipment).kind
        self._cache: dict[str, Signal] = {}
        self._out: list[_Kpi] = []

    # -- inputs ----------------------------------------------------------------------------------------
    def signal(self, tag: Tag, scale: float = 1.0) -> Signal:
        """The tag's samples in the run, times in hours since the run's start, values × scale."""
        if tag.name not in self._cache:
            data = self.read(tag.name, self.run.start, self.end + timedelta(microseconds=1))
            values = data.values.astype(np.float64) if data.values.dtype != object else _floats(data.values)
            self._cache[tag.name] = Signal(tag.name, data.hours(to_us(self.run.start)), values, data.status)
        s = self._cache[tag.name]
        return s if scale == 1.0 else Signal(s.tag, s.t, s.v * scale, s.status)

    def tags(self, role: Role) -> list[Tag]:
        return self.config.role_tags(self.run.equipment, role)

    def _lab_from_tags(self) -> list[LabResult]:
        """Lab results carried by this equipment's tags with a `lab` table (biopilot.config.LabTag): each
        usable sample is one result at its source timestamp (the sampling time)."""
        out: list[LabResult] = []
        for tag in self.config.tags_of(self.run.equipment):
            if tag.lab is None:
                continue
            data = self.read(tag.name, self.run.start, self.end + timedelta(microseconds=1))
            values = data.values.astype(np.float64) if data.values.dtype != object else _floats(data.values)
            ok = usable(values, data.status)
            for ts, value in zip(data.ts[ok].tolist(), values[ok].tolist(), strict=True):
                out.append(
                    LabResult(
                        self.run.equipment,
                        from_us(ts),
                        tag.lab.analyte,
                        value,
                        tag.unit,
                        tag.lab.sample_volume_l,
                        f"tag:{tag.name}",
                    )
                )
        return out

    def lab_series(self, analytes: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t [h], value [g/L], sample volume [L]) of lab results of these analytes (case-insensitive)."""
        names = {a.lower() for a in analytes}
        rows = [r for r in self.lab if r.analyte.lower() in names]
        t = np.array([(r.ts - self.run.start).total_seconds() / 3600 for r in rows], dtype=np.float64)
        v = np.array([r.value * _CONC_G_PER_L.get(r.unit, 1.0) for r in rows], dtype=np.float64)
        vol = np.array([r.sample_volume_l for r in rows], dtype=np.float64)
        return t, v, vol

    def phase_start(self, name: str) -> float | None:
        for p in self.phases:
            if p.name == name:
                return (p.start - self.run.start).total_seconds() / 3600
        return None

    def phase_end(self, name: str) -> float | None:
        for p in self.phases:
            if p.name == name:
                return (p.end - self.run.start).total_seconds() / 3600 if p.end is not None else None
        return None

    def volume(self) -> Signal | None:
        """Broth volume [L]: a volume tag, else a weight tag / broth density."""
        for tag in self.tags(Role.VOLUME):
            return self.signal(tag, _VOLUME[tag.unit])
        for tag in self.tags(Role.WEIGHT):
            return self.signal(tag, _WEIGHT_KG[tag.unit] / self.spec.broth_density)
        return None

    def coverage(self, integral: Integral | float, window_h: float) -> float:
        covered = integral.covered_h if isinstance(integral, Integral) else integral
        return min(covered / window_h, 1.0) if window_h > 0 else 0.0

    # -- output ----------------------------------------------------------------------------------------
    def emit(
        self,
        name: str,
        value: float | None,
        inputs: dict[str, float] | None = None,
        flags: Sequence[str] = (),
        unit: str | None = None,
    ) -> _Kpi:
        if value is not None and not math.isfinite(value):
            value = None
        k = _Kpi(
            name, value, KPI_UNITS.get(name, "") if unit is None else unit, dict(inputs or {}), list(flags)
        )
        if value is None and "missing_input" not in k.flags:
            k.flags.append("missing_input")
        self._out.append(k)
        return k

    def records(self) -> list[KpiRecord]:
        final = self.run.end is not None
        out = []
        for k in self._out:
            flags: list[str] = [] if final else ["provisional"]
            coverage = min(k.inputs.values()) if k.inputs else (1.0 if k.value is not None else 0.0)
            if k.inputs and max(k.inputs.values()) == 0.0 and k.value is not None:
                k.value = None  # not one usable sample of any input: no value, not a zero
                k.flags.append("missing_input")
            if k.inputs and coverage < COMPLETE:
                flags.append("incomplete")
            flags += [f for f in k.flags if f not in flags]
            value = None if k.value is None else round(k.value, 6 - _magnitude(k.value))
            out.append(
                KpiRecord(k.name, value, k.unit, coverage, tuple(flags), final, KPI_VERSION, inputs=k.inputs)
            )
        return out

    # -- the KPIs --------------------------------------------------------------------------------------
    def compute(self) -> list[KpiRecord]:
        product_kg: float | None = None  # None: this run has no product accounting; NaN: unknown
        if self.kind == EquipmentKind.FERMENTER:
            product_kg = self._upstream()
            self._offgas()
        elif self.kind == EquipmentKind.RECOVERY:
            product_kg = self._recovery()
        self._energy(product_kg)
        return self.records()

    def _upstream(self) -> float | None:
        """Fermenter KPIs; returns product formed [kg] (NaN when unknown, None without mass accounting)."""
        spec = self.spec
        self.emit("batch_duration", self.run_h)
        t_inoc = self.phase_start(spec.inoculation_phase)
        t_harv = self.phase_start(spec.harvest_phase)
        t_harv_end = self.phase_end(spec.harvest_phase)
        assumed_times = []
        if t_inoc is None:
            t_inoc, assumed_times = 0.0, ["assumed:inoculation=run_start"]
        if t_harv is None:
            t_harv = self.run_h
            assumed_times.append("assumed:harvest=run_end")
        if t_harv_end is None:
            t_harv_end = self.run_h
        growth_h = max(t_harv - t_inoc, 0.0)
        self.emit("growth_duration", growth_h, flags=assumed_times)

        vol = self.volume()
        t_p, p_lab, vol_p = self.lab_series(TITER_ANALYTES)
        has_titer = len(t_p) > 0
        if vol is None and not has_titer and not self.tags(Role.FEED_RATE):
            return None  # nothing to account masses with on this equipment

        titer = yields.titer_g_per_l(t_p, p_lab, t_harv_end)
        lab_titer_cov = {"lab:titer": 1.0 if math.isfinite(titer) else 0.0}
        self.emit("titer", titer, lab_titer_cov)

        # volumes at inoculation and harvest [L]
        v_name = vol.tag if vol is not None else "volume"
        v_end = _volume_at_harvest(vol, t_harv) if vol is not None else math.nan
        v0 = _value_near(vol, t_inoc) if vol is not None else math.nan
        vol_cov = {v_name: 1.0 if math.isfinite(v_end) else 0.0}

        # broth discharged during growth (flow tags on a fermenter are broth leaving it)
        t_s, s_lab, vol_s = self.lab_series(("substrate", spec.main_substrate))
        t_x, x_lab, vol_x = self.lab_series(BIOMASS_ANALYTES)
        discharged_p, discharged_s, discharged_x, out_cov, out_unc = 0.0, 0.0, 0.0, {}, False
        for tag in self.tags(Role.FLOW):
            f = self.signal(tag, _LIQUID_FLOW.get(tag.unit, 1.0)).window(t_inoc, t_harv)
            ip = yields.discharged_g(f.t, f.v, f.status, t_p, p_lab)
            is_ = yields.discharged_g(f.t, f.v, f.status, t_s, s_lab)
            ix = yields.discharged_g(f.t, f.v, f.status, t_x, x_lab)
            discharged_p += ip.value
            discharged_s += is_.value if math.isfinite(is_.value) else 0.0
            discharged_x += ix.value
            out_cov[tag.name] = self.coverage(ip, growth_h)
            out_unc |= ip.uncertain

        in_growth = (t_p >= t_inoc) & (t_p <= t_harv)
        m_p = yields.product_formed_g(v_end, titer, vol_p[in_growth], p_lab[in_growth], discharged_p)
        unc = (
            ["uncertain_inputs"]
            if out_unc or (vol is not None and vol.window(0, t_harv).any_uncertain)
            else []
        )
        self.emit("product_formed", m_p / 1000, {**vol_cov, **lab_titer_cov, **out_cov}, unc)
        self.emit("product_harvested", v_end * titer / 1000, {**vol_cov, **lab_titer_cov}, unc)

        # substrate fed, per substrate, and carbon [g]
        fed: dict[str, float] = {}
        carbon_g = 0.0
        feed_cov: dict[str, float] = {}
        feed_unc = False
        for tag in self.tags(Role.FEED_RATE):
            if tag.feed is None:
                continue
            scale = _feed_l_per_h(tag)
            f = self.signal(tag, scale)
            integral = yields.substrate_fed_g(f.t, f.v, f.status, tag.feed.concentration)
            fed[tag.feed.substrate] = fed.get(tag.feed.substrate, 0.0) + integral.value
            carbon_g += integral.value * tag.feed.carbon_fraction
            feed_cov[tag.name] = self.coverage(integral, self.run_h)
            feed_unc |= integral.uncertain
        main_cov = {
            t.name: feed_cov[t.name]
            for t in self.tags(Role.FEED_RATE)
            if t.feed is not None and t.feed.substrate == spec.main_substrate
        }
        fed_main = fed.get(spec.main_substrate, math.nan if not main_cov else 0.0)
        feed_flags = ["uncertain_inputs"] if feed_unc else []
        self.emit("substrate_fed", fed_main / 1000 if main_cov else None, main_cov, feed_flags)

        # substrate at inoculation and harvest [g/L]
        s0 = _lab_near(t_s, s_lab, t_inoc, LAB_TOLERANCE_H)
        s_flags: list[str] = []
        s0_cov = 1.0
        if not math.isfinite(s0):
            if spec.initial_substrate is not None:
                s0 = spec.initial_substrate
                s_flags.append("assumed:initial_substrate=config")
            else:
                s0_cov = 0.0
        s_end = yields.titer_g_per_l(t_s, s_lab, t_harv_end)
        if not math.isfinite(s_end):
            s_end = 0.0
            s_flags.append("assumed:residual_substrate=0")
        in_growth_s = (t_s >= t_inoc) & (t_s <= t_harv)
        removed_s = float(np.sum(vol_s[in_growth_s] * s_lab[in_growth_s])) + discharged_s
        v0_cov = {f"{v_name}@inoculation": 1.0 if math.isfinite(v0) else 0.0}
        consumed = yields.substrate_consumed_g(v0, s0, fed_main, v_end, s_end, removed_s)
        cons_inputs = {**vol_cov, **v0_cov, **main_cov, "initial_substrate": s0_cov}
        self.emit("substrate_consumed", consumed / 1000, cons_inputs, s_flags + feed_flags)
        self.emit(
            "yield_product_substrate",
            yields.ratio(m_p, consumed),
            {**cons_inputs, **lab_titer_cov, **out_cov},
            s_flags + feed_flags + unc,
        )
        if fed:
            main_cf = next(
                (
                    t.feed.carbon_fraction
                    for t in self.tags(Role.FEED_RATE)
                    if t.feed is not None and t.feed.substrate == spec.main_substrate
                ),
                0.4,
            )
            carbon_in_g = carbon_g + v0 * s0 * main_cf
            carbon_consumed = carbon_in_g - (v_end * s_end + removed_s) * main_cf
            self.emit("carbon_fed", carbon_g / 1000, feed_cov, feed_flags)
            self.emit(
                "yield_product_carbon",
                yields.ratio(m_p, carbon_consumed),
                {**cons_inputs, **feed_cov, **lab_titer_cov},
                s_flags + feed_flags + unc,
            )
        else:
            carbon_in_g = carbon_consumed = math.nan

        # biomass formed, net of the inoculum, with the cells that left in samples and discharged broth
        x_end = yields.titer_g_per_l(t_x, x_lab, t_harv_end)
        x_cov = {"lab:biomass": 1.0 if math.isfinite(x_end) else 0.0}
        x0 = _lab_near(t_x, x_lab, t_inoc, LAB_TOLERANCE_H)
        x_flags = []
        if not math.isfinite(x0):
            x0, x_flags = 0.0, ["assumed:initial_biomass=0"]
        in_growth_x = (t_x >= t_inoc) & (t_x <= t_harv)
        biomass_g = yields.biomass_formed_g(
            v_end, x_end, v0, x0, vol_x[in_growth_x], x_lab[in_growth_x], discharged_x
        )
        if len(t_x) or vol is not None:
            self.emit("biomass_formed", biomass_g / 1000, {**vol_cov, **x_cov, **out_cov}, x_flags + unc)
            self.emit(
                "yield_biomass_substrate",
                yields.ratio(biomass_g, consumed),
                {**cons_inputs, **x_cov},
                x_flags + s_flags,
            )
            self.emit(
                "yield_product_biomass", yields.ratio(m_p, biomass_g), {**x_cov, **lab_titer_cov}, x_flags
            )
            if vol is not None and len(t_x) >= 2:
                m_x = yields.total_mass_at(t_x[in_growth_x], x_lab[in_growth_x], vol.t, vol.v, vol.status)
                self.emit("mu_max", yields.max_specific_growth_rate_per_h(t_x[in_growth_x], m_x), x_cov)
            else:
                self.emit("mu_max", None, {"lab:biomass": 0.0})

        # productivity over inoculation → harvest, on the mean working volume
        if vol is not None:
            w = vol.window(t_inoc, t_harv)
            v_mean = yields.mean_volume_l(w.t, w.v, w.status)
            v_int = integrate_trapezoid(w.t, w.v, w.status)
            self.emit("mean_working_volume", v_mean, {vol.tag: self.coverage(v_int, growth_h)}, assumed_times)
            self.emit(
                "volumetric_productivity",
                yields.volumetric_productivity_g_per_l_h(m_p, v_mean, growth_h),
                {vol.tag: self.coverage(v_int, growth_h), **lab_titer_cov},
                assumed_times + unc,
            )
        self._carbon = (carbon_in_g, v_end, biomass_g, m_p, s_end, removed_s, x_cov, lab_titer_cov)
        return m_p / 1000

    def _offgas(self) -> None:
        air, o2, co2 = self.tags(Role.AIR_FLOW), self.tags(Role.OFFGAS_O2), self.tags(Role.OFFGAS_CO2)
        if not (air and o2 and co2):
            return
        spec = self.spec
        s_o2 = self.signal(o2[0], _FRACTION[o2[0].unit])
        s_co2 = self.signal(co2[0], _FRACTION[co2[0].unit])
        s_air = self.signal(air[0], _GAS_L_PER_MIN[air[0].unit])
        t = s_o2.t
        a_o2 = align(t, s_o2.t, s_o2.v, s_o2.status)
        a_co2 = align(t, s_co2.t, s_co2.v, s_co2.status)
        a_air = align(t, s_air.t, s_air.v, s_air.status)
        # molar fluxes [mol/h] need no volume: the cumulative O2 and CO2 are defined while the vessel is empty
        n_in = offgas.gas_flow_mol_per_h(a_air.values, spec.gas_molar_volume)
        ones = np.ones(len(t))
        flux_o2, flux_co2 = offgas.our_cer(
            n_in, a_o2.values, a_co2.values, ones, spec.inlet_o2, spec.inlet_co2
        )
        covered = np.isfinite(flux_o2) & np.isfinite(flux_co2)
        max_gap = default_max_gap_h(t)
        cov = {
            o2[0].name: self.coverage(covered_hours(t, a_o2.covered, max_gap), self.run_h),
            co2[0].name: self.coverage(covered_hours(t, a_co2.covered, max_gap), self.run_h),
            air[0].name: self.coverage(covered_hours(t, a_air.covered, max_gap), self.run_h),
        }
        unc_any = bool(np.any((a_o2.uncertain | a_co2.uncertain | a_air.uncertain) & covered))
        unc = ["uncertain_inputs"] if unc_any else []
        o2_mol = integrate_trapezoid(t, flux_o2, np.zeros(len(t), np.int64), max_gap).value
        co2_mol = integrate_trapezoid(t, flux_co2, np.zeros(len(t), np.int64), max_gap).value
        self.emit("o2_consumed", o2_mol, cov, unc)
        self.emit("co2_produced", co2_mol, cov, unc)
        self.emit("rq", offgas.rate_weighted_rq(o2_mol, co2_mol), cov, unc)
        vol = self.volume()
        if vol is not None:
            a_v = align(t, vol.t, vol.v, vol.status)
            v = a_v.values
            filled = v > 0.05 * np.nanmax(v) if np.any(np.isfinite(v)) else np.zeros(len(t), bool)
            our = np.where(filled, flux_o2 / np.where(filled, v, 1.0), np.nan)
            cer = np.where(filled, flux_co2 / np.where(filled, v, 1.0), np.nan)
            vcov = {**cov, vol.tag: self.coverage(covered_hours(t, a_v.covered, max_gap), self.run_h)}
            self.emit("our_max", float(np.nanmax(our)) if np.any(np.isfinite(our)) else None, vcov, unc)
            self.emit("our_mean", _time_mean(t, our, max_gap), vcov, unc)
            self.emit("cer_mean", _time_mean(t, cer, max_gap), vcov, unc)
        carbon = getattr(self, "_carbon", None)
        if carbon is not None:
            carbon_in_g, v_end, biomass_g, m_p, s_end, removed_s, x_cov, p_cov = carbon
            main_cf = 0.4
            for tag in self.tags(Role.FEED_RATE):
                if tag.feed is not None and tag.feed.substrate == spec.main_substrate:
                    main_cf = tag.feed.carbon_fraction
            c_out = (
                offgas.biomass_carbon_g(biomass_g)
                + m_p * spec.product_carbon_fraction
                + co2_mol * offgas.C_G_PER_MOL
                + (v_end * s_end + removed_s) * main_cf
            )
            closure = offgas.carbon_balance_closure(carbon_in_g, c_out)
            flags = (
                [] if not math.isfinite(closure) or recovery.closure_ok(closure) else ["closure_out_of_range"]
            )
            self.emit("carbon_balance_closure", closure, {**cov, **x_cov, **p_cov}, flags + unc)

    def _recovery(self) -> float | None:
        """Recovery-step KPIs; returns product out [kg] (NaN when unknown, None without a feed flow).

        A stream's product is ∫F·C dt from its flow and concentration tags; with a flow totalizer on the
        stream it is the totalized volume × the flow-weighted concentration
        (recovery.product_from_totalizer_g), which does not misplace flow at the edges of short phases."""
        flows = self.tags(Role.FLOW)
        concs = self.tags(Role.CONCENTRATION)
        totals = self.tags(Role.FLOW_TOTAL)
        feed_flows = [t for t in flows if t.stream in (None, "feed")]
        prod_flows = [t for t in flows if t.stream == "product"]
        waste_flows = [t for t in flows if t.stream == "waste"]
        prod_concs = [t for t in concs if t.stream in (None, "product")]
        waste_concs = [t for t in concs if t.stream == "waste"]
        feed_concs = [t for t in concs if t.stream == "feed"]
        if not feed_flows:
            return None
        f_tag = feed_flows[0]
        feed = self.signal(f_tag, _LIQUID_FLOW.get(f_tag.unit, 1.0))
        v_feed, f_cov = self._stream_volume(feed, [t for t in totals if t.stream in (None, "feed")])
        self.emit("feed_volume", v_feed, f_cov)

        # product in: feed flow × feed concentration, or the upstream run's output (a fermenter's titer ×
        # the feed volume, a recovery unit's product out)
        upstream_titer = self.upstream.get("titer")
        upstream_out = self.upstream.get("product_out")
        if feed_concs:
            c = self.signal(feed_concs[0], _CONC_G_PER_L[feed_concs[0].unit])
            p_in, cov = self._stream_product(feed, c, [t for t in totals if t.stream in (None, "feed")])
            in_cov = {**f_cov, **cov}
        elif upstream_titer is not None and upstream_titer.value is not None:
            p_in = v_feed * upstream_titer.value
            in_cov = {**f_cov, f"upstream:{self.run.upstream_id}:titer": upstream_titer.coverage}
        elif upstream_out is not None and upstream_out.value is not None:
            p_in = upstream_out.value * 1000
            in_cov = {f"upstream:{self.run.upstream_id}:product_out": upstream_out.coverage}
        else:
            p_in = math.nan
            in_cov = {**f_cov, "upstream:titer": 0.0}
        self.emit("product_in", p_in / 1000, in_cov)

        # product out: product-stream flow (default: the feed flow) × product concentration
        out_flow = (
            self.signal(prod_flows[0], _LIQUID_FLOW.get(prod_flows[0].unit, 1.0)) if prod_flows else feed
        )
        out_totals = [t for t in totals if t.stream == "product"] if prod_flows else []
        if prod_concs:
            c = self.signal(prod_concs[0], _CONC_G_PER_L[prod_concs[0].unit])
            p_out, out_cov = self._stream_product(out_flow, c, out_totals)
        else:
            p_out, out_cov = math.nan, {"product_concentration": 0.0}
        self.emit("product_out", p_out / 1000, out_cov)
        y = recovery.step_yield(p_in, p_out)
        self.emit("step_yield", y, {**in_cov, **out_cov})

        # waste stream: mass-balance closure
        if waste_concs:
            w_flow = (
                self.signal(waste_flows[0], _LIQUID_FLOW.get(waste_flows[0].unit, 1.0))
                if waste_flows
                else feed
            )
            wc = self.signal(waste_concs[0], _CONC_G_PER_L[waste_concs[0].unit])
            w_totals = [t for t in totals if t.stream == "waste"] if waste_flows else []
            p_waste, w_cov = self._stream_product(w_flow, wc, w_totals)
            closure = recovery.mass_balance_closure(p_in, [p_out, p_waste])
            flags = (
                [] if not math.isfinite(closure) or recovery.closure_ok(closure) else ["closure_out_of_range"]
            )
            self.emit("mass_balance_closure", closure, {**in_cov, **out_cov, **w_cov}, flags)

        # overall yield from the harvest: Π step yields along the upstream links (the upstream recovery
        # run's overall yield × this step's; 1 × this step's after the fermenter), checked against product
        # out / product harvested of the fermentation at the head of the chain
        if self.upstream:
            up_overall = self.upstream.get("overall_yield")
            if up_overall is not None:
                prior = up_overall.value if up_overall.value is not None else math.nan
                chain_cov = {f"upstream:{self.run.upstream_id}:overall_yield": up_overall.coverage}
            else:
                prior, chain_cov = 1.0, {}
            overall = prior * y
            flags = []
            harvested = self.harvested
            if harvested is not None and harvested.value:
                check = recovery.check_overall_yield([overall], harvested.value * 1000, p_out)
                if math.isfinite(check.relative_difference) and not check.consistent:
                    flags.append("overall_yield_mismatch")
            self.emit("overall_yield", overall, {**in_cov, **out_cov, **chain_cov}, flags)

        # concentration factor
        if prod_flows:
            v_out, _ = self._stream_volume(out_flow, out_totals)
            self.emit("concentration_factor", recovery.concentration_factor(v_feed, v_out), f_cov)

        # purity from lab results on this equipment: titer / total protein of the same sample
        t_p, p_lab, _ = self.lab_series(TITER_ANALYTES)
        t_tot, tot_lab, _ = self.lab_series(("total_protein",))
        if len(t_tot):
            common = [
                (p, tot)
                for tp, p in zip(t_p, p_lab, strict=True)
                for tt, tot in zip(t_tot, tot_lab, strict=True)
                if tp == tt
            ]
            value = recovery.purity(common[-1][0], common[-1][1]) if common else math.nan
            self.emit("purity", value, {"lab:purity": 1.0 if common else 0.0})
        return p_out / 1000

    def _totalized(self, totals: Sequence[Tag]) -> tuple[float, dict[str, float]] | None:
        """Volume [L] counted by the first of these flow totalizers over the run, with its coverage; None
        without one. A decrease is a rollover at `counter_rollover`, else a reset to 0 (batch totalizers
        reset when a run starts or ends)."""
        if not totals:
            return None
        tag = totals[0]
        s = self.signal(tag, _VOLUME[tag.unit])
        rollover = tag.counter_rollover * _VOLUME[tag.unit] if tag.counter_rollover is not None else None
        tot = energy_from_totalizer(s.t, s.v, s.status, rollover)
        return tot.value, {tag.name: self.coverage(tot.covered_h, self.run_h)}

    def _stream_volume(self, flow: Signal, totals: Sequence[Tag]) -> tuple[float, dict[str, float]]:
        """Volume [L] of a stream: its totalizer, else ∫F dt."""
        counted = self._totalized(totals)
        if counted is not None:
            return counted
        v = integrate_trapezoid(flow.t, flow.v, flow.status)
        return v.value, {flow.tag: self.coverage(v, self.run_h)}

    def _stream_product(
        self, flow: Signal, conc: Signal, totals: Sequence[Tag]
    ) -> tuple[float, dict[str, float]]:
        """Product [g] in a stream: ∫F·C dt, or with a totalizer V × ∫F·C dt / ∫F dt."""
        fc = _flow_times_conc(flow, conc)
        cov = {flow.tag: self.coverage(fc, self.run_h), conc.tag: self.coverage(fc, self.run_h)}
        counted = self._totalized(totals)
        if counted is None:
            return fc.value, cov
        volume, t_cov = counted
        f = _flow_times_conc(flow, Signal(conc.tag, conc.t, np.ones(len(conc.t)), conc.status))
        return recovery.product_from_totalizer_g(volume, fc.value, f.value), {**cov, **t_cov}

    def _energy(self, product_kg: float | None) -> None:
        power = self.tags(Role.POWER)
        totalizers = self.tags(Role.ENERGY)
        total, inputs, any_unc, flags_total = 0.0, {}, False, []
        for tag in power:
            s = self.signal(tag, _POWER_KW[tag.unit])
            integral = integrate_trapezoid(s.t, s.v, s.status)
            cov = self.coverage(integral, self.run_h)
            flags = ["uncertain_inputs"] if integral.uncertain else []
            self.emit(f"energy.{tag.name}", integral.value, {tag.name: cov}, flags, unit="kWh")
            total += integral.value
            inputs[tag.name] = cov
            any_unc |= integral.uncertain
        for tag in totalizers:
            s = self.signal(tag, _ENERGY_KWH[tag.unit])
            tot = energy_from_totalizer(s.t, s.v, s.status, tag.counter_rollover)
            cov = self.coverage(tot.covered_h, self.run_h)
            flags = (["counter_reset"] if tot.resets else []) + (
                ["uncertain_inputs"] if tot.uncertain else []
            )
            self.emit(f"energy.{tag.name}", tot.value, {tag.name: cov}, flags, unit="kWh")
            total += tot.value
            inputs[tag.name] = cov
            any_unc |= tot.uncertain
            flags_total += [f for f in flags if f not in flags_total]
        if any_unc and "uncertain_inputs" not in flags_total:
            flags_total.append("uncertain_inputs")
        amounts: dict[str, float] = {}
        if power or totalizers:
            self.emit("energy.total", total, inputs, flags_total)
            amounts["electricity"] = total
            if product_kg is not None:
                self.emit("specific_energy", specific_consumption(total, product_kg), inputs)
        steam_inputs: dict[str, float] = {}
        for tag in self.tags(Role.STEAM_FLOW):
            s = self.signal(tag)
            integral = integrate_trapezoid(s.t, s.v, s.status)
            amounts["steam"] = amounts.get("steam", 0.0) + integral.value
            steam_inputs[tag.name] = self.coverage(integral, self.run_h)
        if steam_inputs:
            self.emit("steam", amounts["steam"], steam_inputs)
            if product_kg is not None:
                self.emit("steam_specific", specific_consumption(amounts["steam"], product_kg), steam_inputs)
        water_inputs: dict[str, float] = {}
        for tag in self.tags(Role.COOLING_WATER_FLOW):
            s = self.signal(tag, _WATER_M3_PER_H[tag.unit])
            integral = integrate_trapezoid(s.t, s.v, s.status)
            amounts["water"] = amounts.get("water", 0.0) + integral.value
            water_inputs[tag.name] = self.coverage(integral, self.run_h)
        if water_inputs:
            self.emit("water", amounts["water"], water_inputs)
            if product_kg is not None:
                self.emit("water_specific", specific_consumption(amounts["water"], product_kg), water_inputs)
        if amounts and self.config.emission_factors:
            factors = {}
            flags = []
            for utility, amount in amounts.items():
                f = emission_factor(self.config, utility)
                if f is not None:
                    factors[utility] = f.factor
                elif amount > 0:
                    flags.append(f"no_emission_factor:{utility}")
            co2e = sum(amounts[u] * factors[u] for u in factors)
            all_inputs = {**inputs, **steam_inputs, **water_inputs}
            self.emit("co2e", co2e, all_inputs, flags)
            if product_kg is not None:
                self.emit("co2e_specific", specific_consumption(co2e, product_kg), all_inputs, flags)


def compute_run_kpis(
    config: SiteConfig,
    run: Run,
    end: datetime,
    read: Reader,
    *,
    phases: Sequence[Phase] = (),
    lab: Sequence[LabResult] = (),
    upstream: dict[str, KpiRecord] | None = None,
    harvested: KpiRecord | None = None,
) -> list[KpiRecord]:
    """All KPIs of a run over [run.start, end] (end: the run's end, or its clock while it is live).

    lab: the catalog's lab results of the run (tags with a `lab` table are read here and added);
    upstream: the KPIs of the run this (recovery) run processed; harvested: product_harvested of the
    fermentation at the head of its chain (checks the overall yield)."""
    return RunKpis(
        config, run, end, read, phases=phases, lab=lab, upstream=upstream, harvested=harvested
    ).compute()


def _merge_lab(catalog: Sequence[LabResult], from_tags: Sequence[LabResult]) -> list[LabResult]:
    """Catalog results and tag results in time order; a catalog result of the same analyte at the same
    time replaces the tag's (the same sample entered twice is counted once)."""
    have = {(r.analyte.lower(), r.ts) for r in catalog}
    merged = [*catalog, *(r for r in from_tags if (r.analyte.lower(), r.ts) not in have)]
    return sorted(merged, key=lambda r: r.ts)


def _floats(values: np.ndarray) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if isinstance(v, int | float):
            out[i] = float(v)
    return out


def _magnitude(x: float) -> int:
    return math.floor(math.log10(abs(x))) if x != 0.0 and math.isfinite(x) else 0


def _value_near(s: Signal, at_h: float) -> float:
    """The signal at at_h, or the last usable value before it (a level holds when the sensor stops)."""
    v = align(np.array([at_h]), s.t, s.v, s.status).values[0]
    return float(v) if math.isfinite(v) else last_usable_before(s.t, s.v, s.status, at_h)


def _volume_at_harvest(s: Signal, t_harv_h: float) -> float:
    """Broth volume [L] at harvest start: the larger of the last usable reading before the first reading
    that says harvest, and the volume at that reading. The harvest started somewhere between the two;
    before it the feed only adds (litres per hour), after it the harvest pump drains (900 L/h at pilot
    scale: 15 L in a minute), so the larger reading is the closer one."""
    at = _value_near(s, t_harv_h)
    ok = usable(s.v, s.status) & (s.t < t_harv_h)
    before = float(s.v[ok][-1]) if np.any(ok) else math.nan
    candidates = [v for v in (at, before) if math.isfinite(v)]
    return max(candidates) if candidates else math.nan


def _lab_near(t: np.ndarray, v: np.ndarray, at_h: float, tol_h: float) -> float:
    near = np.abs(t - at_h) <= tol_h
    if not np.any(near):
        return math.nan
    idx = np.flatnonzero(near)
    return float(v[idx[np.argmin(np.abs(t[idx] - at_h))]])


def _time_mean(t: np.ndarray, x: np.ndarray, max_gap_h: np.ndarray) -> float | None:
    integral = integrate_trapezoid(t, x, np.zeros(len(t), np.int64), max_gap_h)
    return integral.value / integral.covered_h if integral.covered_h > 0 else None


def _flow_times_conc(flow: Signal, conc: Signal) -> Integral:
    """∫ F · C dt on the flow's samples, C aligned without bridging gaps."""
    c = align(flow.t, conc.t, conc.v, conc.status)
    ok = usable(flow.v, flow.status)
    status = np.where(ok & c.covered, 0, 0x80000000).astype(np.int64)
    return integrate_trapezoid(flow.t, flow.v * np.nan_to_num(c.values), status, default_max_gap_h(flow.t))


def _feed_l_per_h(tag: Tag) -> float:
    """Factor from the tag's unit to L/h of feed (mass flows through the feed's density [kg/L])."""
    if tag.unit in _LIQUID_FLOW:
        return _LIQUID_FLOW[tag.unit]
    density = tag.feed.density if tag.feed is not None and tag.feed.density else 1.0
    return {"kg/h": 1.0, "g/h": 0.001}[tag.unit] / density
