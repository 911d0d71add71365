"""The true KPIs of every simulated run, written as JSON beside the data it produced.

Where: one file per fermentation batch, <dir>/truth/<batch_id>.json, with <dir> the historical mode's
--out directory (or --data-dir when it writes into the store) and the live mode's --data-dir. The file
is written when the harvest is over and rewritten as each recovery unit finishes that batch.

What (format "biopilot-truth-1"; every key's unit is in the file's "units" map, its definition in
"definitions"): the scenario, run number, campaign, its declared effects and changes, the run's
parameters; "fermentation": times (ISO-8601 UTC) and KPIs; "faults": the scenario's faults in the run
(kind, target, window, the signals they show on, parameters); "samples": each lab sample with its true and
measured values; "recovery": per unit, in process order, product in/out, step yield, volumes,
concentrations, purity, buffer, water, energy; "overall": harvested and purified product, overall
recovery yield, total energy and energy per kg purified; for a trial run "counterfactual": the same KPIs
of the run's twin without the campaign's change (same seed, same draws), and "effect": the realised
relative effect (trial / twin − 1) per KPI.

Definitions (kpis.md; V volume, P/X/S concentrations, all masses in g):
- the fermentation run is the time its batch id is shown: from the fill start to the harvest end;
  energies are the exact integrals of the published power signals over it (the idle turnaround after
  the harvest draws no power), steam and cooling water likewise;
- product formed = V_end·P_end + Σ samples V_i·P_i + ∫ F_discharge·P dt, where "end" is the harvest start,
  after the final lab sample; that sample is counted among the samples;
- substrate consumed = V_0·S_0 + ∫ F_feed·S_feed dt − V_end·S_end − substrate removed with samples and
  discharges, V_0 and S_0 just after inoculation; biomass formed likewise, net of the inoculum;
- yields = product (biomass) formed / substrate consumed; titer = P_end; mean volume = ∫V dt / batch time
  (inoculation to harvest start); volumetric productivity = product formed / (mean volume × batch time);
- O2 consumed = ∫ OUR·V dt, CO2 produced = ∫ CER·V dt [mol]; RQ = CO2 / O2;
- carbon closure = C-mol out (biomass formed, product formed, CO2, glucose left, sampled or discharged) /
  C-mol in (glucose initial and fed): 1 by construction of the model.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from biopilot.ids import inside
from simulators import fermenter as fm
from simulators import recovery as rc
from simulators.engine import FermentationEnded, UnitRunEnded, simulate_run
from simulators.scenario import EFFECTS, PROCESS_FAULTS, FaultKind, Scenario

FORMAT = "biopilot-truth-1"

UNITS: dict[str, str] = {
    "product_formed_g": "g",
    "product_harvested_g": "g",
    "product_sampled_g": "g",
    "product_discharged_g": "g",
    "substrate_initial_g": "g",
    "substrate_fed_g": "g",
    "substrate_final_g": "g",
    "substrate_sampled_g": "g",
    "substrate_discharged_g": "g",
    "substrate_consumed_g": "g",
    "biomass_inoculated_g": "g",
    "biomass_final_g": "g",
    "biomass_sampled_g": "g",
    "biomass_discharged_g": "g",
    "biomass_formed_g": "g",
    "product_yield_g_per_g": "g/g",
    "biomass_yield_g_per_g": "g/g",
    "product_per_biomass_g_per_g": "g/g",
    "titer_g_per_l": "g/L",
    "initial_volume_l": "L",
    "final_volume_l": "L",
    "mean_volume_l": "L",
    "batch_hours": "h",
    "run_hours": "h",
    "volumetric_productivity_g_per_l_h": "g/L/h",
    "feed_l": "L",
    "base_l": "L",
    "evaporated_l": "L",
    "sampled_l": "L",
    "discharged_l": "L",
    "harvested_l": "L",
    "o2_consumed_mol": "mol",
    "co2_produced_mol": "mol",
    "rq": "mol/mol",
    "carbon_closure": "1",
    "energy_kwh.agitator": "kWh",
    "energy_kwh.compressor": "kWh",
    "energy_kwh.chiller": "kWh",
    "energy_kwh.total": "kWh",
    "steam_kg": "kg",
    "cooling_water_l": "L",
    "heat_metabolic_kwh": "kWh",
    "heat_removed_kwh": "kWh",
    "recovery.*.product_in_g": "g",
    "recovery.*.product_out_g": "g",
    "recovery.*.step_yield": "g/g",
    "recovery.*.volume_in_l": "L",
    "recovery.*.volume_out_l": "L",
    "recovery.*.concentration_in_g_per_l": "g/L",
    "recovery.*.concentration_out_g_per_l": "g/L",
    "recovery.*.purity_in": "g/g",
    "recovery.*.purity_out": "g/g",
    "recovery.*.purification_factor": "1",
    "recovery.*.concentration_factor": "1",
    "recovery.*.buffer_l": "L",
    "recovery.*.water_l": "L",
    "recovery.*.energy_kwh": "kWh",
    "recovery.*.hours": "h",
    "overall.product_harvested_g": "g",
    "overall.product_purified_g": "g",
    "overall.recovery_yield": "g/g",
    "overall.energy_kwh": "kWh",
    "overall.kwh_per_kg_purified": "kWh/kg",
    "samples.*.volume_l": "L",
    "samples.*.true/measured": "g/L",
}

DEFINITIONS: dict[str, str] = {
    "product_formed_g": "V_end·P_end + Σ samples V_i·P_i + ∫F_discharge·P dt (end = harvest start)",
    "substrate_consumed_g": "V_0·S_0 + ∫F_feed·S_feed dt − V_end·S_end − glucose in samples and discharges",
    "biomass_formed_g": "V_end·X_end + biomass in samples and discharges − inoculated biomass",
    "titer_g_per_l": "P at harvest start (after the final sample)",
    "batch_hours": "inoculation to harvest start",
    "run_hours": "fill start to harvest end (the batch id is shown)",
    "mean_volume_l": "∫V dt / batch_hours",
    "volumetric_productivity_g_per_l_h": "product_formed_g / (mean_volume_l · batch_hours)",
    "energy_kwh.*": "∫ published power dt over the run (fill start to harvest end)",
    "carbon_closure": "C-mol out (biomass formed, product, CO2, glucose left/removed) / C-mol in (glucose)",
    "recovery.*.step_yield": "product out / product in of the unit (outlet volume × outlet concentration)",
    "recovery.*.purity_*": "product / total protein",
    "overall.recovery_yield": "product out of the last unit / product harvested (Π step yields)",
    "effect.*": "this run / its counterfactual twin (same seed, no campaign change) − 1",
}


# the signals on which a process fault shows (its cause itself is not measured for oxygen transfer)
FAULT_SIGNALS: dict[FaultKind, tuple[str, ...]] = {
    FaultKind.FEED_PUMP: ("FeedRate",),
    FaultKind.OXYGEN_TRANSFER: ("DissolvedOxygen", "AgitatorSpeed", "AirFlow"),
}


def fermentation_kpis(tot: fm.Totals, params: fm.FermenterParams) -> dict[str, Any]:
    """The fermentation KPIs of a finished run (see the module docstring)."""
    product = tot.p_final_g + tot.p_sampled_g + tot.p_discharged_g
    consumed = tot.s_initial_g + tot.substrate_fed_g - tot.s_final_g - tot.s_sampled_g - tot.s_discharged_g
    biomass = tot.x_final_g + tot.x_sampled_g + tot.x_discharged_g - tot.x_initial_g
    batch_h = tot.t_harvest_start - tot.t_inoculation
    mean_v = tot.volume_hours / batch_h if batch_h > 0 else 0.0
    c_in = (tot.s_initial_g + tot.substrate_fed_g) / fm.GLUCOSE_G_PER_CMOL
    c_out = (
        biomass / fm.BIOMASS_G_PER_CMOL
        + product / params.product_g_per_cmol
        + tot.co2_mol
        + (tot.s_final_g + tot.s_sampled_g + tot.s_discharged_g) / fm.GLUCOSE_G_PER_CMOL
    )
    return {
        "product_formed_g": product,
        "product_harvested_g": tot.p_final_g,
        "product_sampled_g": tot.p_sampled_g,
        "product_discharged_g": tot.p_discharged_g,
        "substrate_initial_g": tot.s_initial_g,
        "substrate_fed_g": tot.substrate_fed_g,
        "substrate_final_g": tot.s_final_g,
        "substrate_sampled_g": tot.s_sampled_g,
        "substrate_discharged_g": tot.s_discharged_g,
        "substrate_consumed_g": consumed,
        "biomass_inoculated_g": tot.x_initial_g,
        "biomass_final_g": tot.x_final_g,
        "biomass_sampled_g": tot.x_sampled_g,
        "biomass_discharged_g": tot.x_discharged_g,
        "biomass_formed_g": biomass,
        "product_yield_g_per_g": product / consumed if consumed > 0 else 0.0,
        "biomass_yield_g_per_g": biomass / consumed if consumed > 0 else 0.0,
        "product_per_biomass_g_per_g": product / biomass if biomass > 0 else 0.0,
        "titer_g_per_l": tot.p_final_g / tot.v_final if tot.v_final > 0 else 0.0,
        "initial_volume_l": tot.v_initial,
        "final_volume_l": tot.v_final,
        "mean_volume_l": mean_v,
        "batch_hours": batch_h,
        "run_hours": tot.t_harvest_end,
        "volumetric_productivity_g_per_l_h": product / (mean_v * batch_h) if mean_v * batch_h > 0 else 0.0,
        "feed_l": tot.feed_l,
        "base_l": tot.base_l,
        "evaporated_l": tot.evaporated_l,
        "sampled_l": tot.sampled_l,
        "discharged_l": tot.discharged_l,
        "harvested_l": tot.harvested_l,
        "o2_consumed_mol": tot.o2_mol,
        "co2_produced_mol": tot.co2_mol,
        "rq": tot.co2_mol / tot.o2_mol if tot.o2_mol > 0 else 0.0,
        "carbon_closure": c_out / c_in if c_in > 0 else 0.0,
        "energy_kwh": {
            "agitator": tot.e_agitator_kwh,
            "compressor": tot.e_compressor_kwh,
            "chiller": tot.e_chiller_kwh,
            "total": tot.e_agitator_kwh + tot.e_compressor_kwh + tot.e_chiller_kwh,
        },
        "steam_kg": tot.steam_kg,
        "cooling_water_l": tot.cooling_water_l,
        "heat_metabolic_kwh": tot.heat_metabolic_kwh,
        "heat_removed_kwh": tot.heat_removed_kwh,
    }


def unit_kpis(plan: rc.Plan, tot: rc.UnitTotals) -> dict[str, float]:
    return {
        "product_in_g": tot.product_in_g,
        "product_out_g": tot.product_out_g,
        "step_yield": tot.product_out_g / tot.product_in_g if tot.product_in_g > 0 else 0.0,
        "volume_in_l": tot.feed_l,
        "volume_out_l": tot.outlet_l,
        "concentration_in_g_per_l": plan.feed.concentration,
        "concentration_out_g_per_l": plan.out.concentration,
        "purity_in": plan.feed.purity,
        "purity_out": plan.out.purity,
        "purification_factor": plan.out.purity / plan.feed.purity if plan.feed.purity > 0 else 0.0,
        "concentration_factor": tot.feed_l / tot.outlet_l if tot.outlet_l > 0 else 0.0,
        "buffer_l": tot.buffer_l,
        "water_l": tot.water_l,
        "energy_kwh": tot.energy_kwh,
        "hours": tot.hours,
    }


def _flat(kpis: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in kpis.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _chain_out(harvest: rc.Feed, chain: list[rc.UnitParams]) -> float:
    feed = harvest
    for params in chain:
        feed = rc.plan(feed, params).out
    return feed.product_g


EFFECT_KPIS = (
    "product_formed_g",
    "titer_g_per_l",
    "product_yield_g_per_g",
    "substrate_consumed_g",
    "biomass_formed_g",
    "o2_consumed_mol",
    "energy_kwh.agitator",
    "energy_kwh.compressor",
    "energy_kwh.chiller",
    "energy_kwh.total",
    "overall.product_purified_g",
)


class TruthBook:
    """Builds the truth documents from the engine's events; writes them when `directory` is set."""

    def __init__(
        self, scenario: Scenario, start: datetime, dt_h: float, directory: Path | None = None
    ) -> None:
        self.scenario = scenario
        self.start = start
        self.dt_h = dt_h
        self.directory = directory
        self.docs: dict[str, dict[str, Any]] = {}

    def _iso(self, t_h: float) -> str:
        return (self.start + timedelta(microseconds=round(t_h * 3.6e9))).isoformat()

    def fermentation(self, ev: FermentationEnded) -> dict[str, Any]:
        plan, tot = ev.plan, ev.totals
        kpis = fermentation_kpis(tot, plan.fermenter)
        t0 = ev.start_t_h
        doc: dict[str, Any] = {
            "format": FORMAT,
            "batch_id": ev.batch_id,
            "equipment": ev.equipment,
            "scenario": self.scenario.scenario.name,
            "seed": self.scenario.seed,
            "run": plan.number,
            "campaign": plan.campaign.name,
            "campaign_code": plan.campaign.code,
            "run_in_campaign": plan.number_in_campaign,
            "declared_effects": dict(plan.campaign.effects),
            "effect_mechanisms": {k: EFFECTS[k].mechanism for k in plan.campaign.effects},
            "changes": dict(plan.campaign.changes),
            "parameters": dataclasses.asdict(plan.fermenter),
            "units": UNITS,
            "definitions": DEFINITIONS,
            "fermentation": {
                "times": {
                    "fill_start": self._iso(t0),
                    "inoculation": self._iso(t0 + tot.t_inoculation),
                    "feed_start": self._iso(t0 + tot.t_feed_start) if tot.t_feed_start >= 0 else None,
                    "harvest_start": self._iso(t0 + tot.t_harvest_start),
                    "harvest_end": self._iso(t0 + tot.t_harvest_end),
                },
                "kpis": kpis,
            },
            "samples": [
                {
                    "sample_id": s.sample_id,
                    "sampled_at": self._iso(s.t_h),
                    "reported_at": self._iso(s.report_t_h),
                    "volume_l": s.volume_l,
                    "final": s.final,
                    "true": s.true,
                    "measured": s.measured,
                }
                for s in ev.samples
            ],
            "faults": self._faults(ev),
            "recovery": {eq: None for eq, _ in ev.chain},
            "overall": {},
        }
        harvest = rc.Feed(ev.batch_id, tot.v_final, tot.p_final_g, plan.fermenter.purity, tot.x_final_g)
        expected_out = _chain_out(harvest, [plan.units[k] for _, k in ev.chain])
        if plan.counterfactual is not None and plan.counterfactual_units is not None:
            twin = simulate_run(
                plan.counterfactual, self.scenario.lab, [self.scenario.seed, plan.number, 1], self.dt_h
            ).totals
            cf = fermentation_kpis(twin, plan.counterfactual)
            cf_harvest = rc.Feed(
                ev.batch_id, twin.v_final, twin.p_final_g, plan.counterfactual.purity, twin.x_final_g
            )
            cf_out = _chain_out(cf_harvest, [plan.counterfactual_units[k] for _, k in ev.chain])
            cf_flat = _flat(cf) | {"overall.product_purified_g": cf_out}
            actual = _flat(kpis) | {"overall.product_purified_g": expected_out}
            doc["counterfactual"] = {"fermentation": {"kpis": cf}, "overall": {"product_purified_g": cf_out}}
            doc["effect"] = {k: actual[k] / cf_flat[k] - 1 for k in EFFECT_KPIS if cf_flat.get(k)}
        self.docs[ev.batch_id] = doc
        self._overall(doc)
        self._write(ev.batch_id)
        return doc

    def _faults(self, ev: FermentationEnded) -> list[dict[str, Any]]:
        """The scenario's faults in this run: kind, what they hit, their window (ISO-8601 UTC), the signals
        they show on, and their parameters."""
        out = []
        for f in self.scenario.faults:
            target = f.signal or f.equipment or f.source or ""
            equipment = target.split("/", 1)[0] if target and target != "opcua" else None
            if f.run is not None:
                if f.run != ev.plan.number:
                    continue
                start = ev.start_t_h + f.at_h
            else:
                start = f.at_h
                if not ev.start_t_h <= start < ev.t_h or equipment not in (None, ev.equipment):
                    continue
            signals = [f.signal.split("/", 1)[1]] if f.signal else list(FAULT_SIGNALS.get(f.kind, ()))
            params = f.model_dump(mode="json", exclude_defaults=True, exclude={"kind", "run", "at_h"})
            if f.kind in PROCESS_FAULTS:
                params.setdefault("factor", f.factor)
            out.append(
                {
                    "kind": f.kind.value,
                    "target": target,
                    "start": self._iso(start),
                    "end": self._iso(start + f.duration_h) if f.duration_h > 0 else None,
                    "signals": signals,
                    "parameters": params,
                }
            )
        return out

    def unit(self, ev: UnitRunEnded) -> dict[str, Any] | None:
        doc = self.docs.get(ev.batch_id)
        if doc is None:  # its fermentation ended before this book existed (live mode restarted)
            return None
        doc["recovery"][ev.equipment] = {
            "kind": ev.kind.value,
            "position": ev.position,
            "start": self._iso(ev.start_t_h),
            "end": self._iso(ev.start_t_h + ev.totals.hours),
            "kpis": unit_kpis(ev.plan, ev.totals),
        }
        self._overall(doc)
        self._write(ev.batch_id)
        return doc

    def _overall(self, doc: dict[str, Any]) -> None:
        ferm = doc["fermentation"]["kpis"]
        units = [u for u in doc["recovery"].values() if u is not None]
        harvested = ferm["product_harvested_g"]
        energy = ferm["energy_kwh"]["total"] + sum(u["kpis"]["energy_kwh"] for u in units)
        overall: dict[str, Any] = {"product_harvested_g": harvested, "energy_kwh": energy, "complete": False}
        if doc["recovery"] and len(units) == len(doc["recovery"]):
            last = max(units, key=lambda u: u["position"])
            purified = last["kpis"]["product_out_g"]
            overall.update(
                complete=True,
                product_purified_g=purified,
                recovery_yield=purified / harvested if harvested > 0 else 0.0,
                kwh_per_kg_purified=energy / (purified / 1000) if purified > 0 else None,
            )
        doc["overall"] = overall

    def _write(self, batch_id: str) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = inside(self.directory, f"{batch_id}.json", "batch id")
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.docs[batch_id], indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
