"""Evidence-pack inputs for the tests (and for looking at the PDF): a campaign simulated by the validation
study's fast path (benchmarks/verdict_validation.py: the fermenter model per run, the measured yield),
completed with hand-made KPIs (secondaries, money amounts, a few others with flags and partial coverage),
an exclusion, a charter history and data sources; and a `not judgeable` case."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from biopilot.charter import Charter, load_charter
from biopilot.records import ImportRecord, KpiRecord
from processing.evidence import CharterVersion, EvidenceInputs, RunSource
from processing.kpis import KPI_UNITS
from processing.trial_inputs import Exclusion, RunRecord
from processing.verdict import judge

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "trials" / "example-charter.toml"
T0 = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
LOCKED = datetime(2025, 1, 20, 9, 30, tzinfo=UTC)
SITE_SHA = hashlib.sha256(b"config/pilot-line.toml as it was").hexdigest()
PRIMARY = "yield_product_substrate"


def _validation_module() -> Any:
    name = "verdict_validation"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "verdict_validation.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def simulated_yields(scenario: str = "+6 % yield", seed_offset: int = 0) -> list[tuple[str, float]]:
    """(campaign code BL/TR, measured yield [g/g]) of the 11 runs of one seeded campaign, by the fast path
    of the validation study (the same model, plan and lab draws as `biopilot simulate --historical`)."""
    vv = _validation_module()
    c = vv.one_campaign((scenario, seed_offset))
    return [(r.campaign, float(r.measured_yield)) for r in c.runs]


def example_charter() -> Charter:
    return load_charter(EXAMPLE, KPI_UNITS)


def _rec(
    name: str,
    value: float | None,
    *,
    coverage: float = 1.0,
    flags: Sequence[str] = (),
    inputs: dict[str, float] | None = None,
) -> KpiRecord:
    return KpiRecord(
        name,
        value,
        KPI_UNITS.get(name, "kWh" if name.startswith("energy.") else ""),
        coverage,
        tuple(flags),
        True,
        "kpi-2",
        T0 + timedelta(days=30),
        inputs if inputs is not None else {"F-101.feed_rate": 1.0, "lab:titer": coverage},
    )


def campaign_runs(
    yields: Sequence[tuple[str, float]], charter: Charter
) -> tuple[list[RunRecord], list[RunRecord]]:
    """Trial and baseline runs with the charter's run ids: the simulated yield as the primary KPI, the rest
    drawn from a seeded generator around plausible pilot values (trial runs 5 % more titer)."""
    rng = np.random.default_rng(7)
    ids = {"BL": list(charter.baseline_runs), "TR": list(charter.trial_runs)}
    trial: list[RunRecord] = []
    baseline: list[RunRecord] = []
    for n, (code, y) in enumerate(yields):
        run_id = ids[code].pop(0)
        substrate = 100 + 3 * rng.standard_normal()
        product = y * substrate
        hours = 48 + rng.standard_normal()
        energy = 500 + 20 * rng.standard_normal()
        kpis = {
            PRIMARY: _rec(
                PRIMARY, y, inputs={"F-101.feed_rate": 1.0, "F-101.weight": 0.998, "lab:titer": 1.0}
            ),
            "titer": _rec("titer", (12.0 if code == "BL" else 12.6) + 0.4 * rng.standard_normal()),
            "specific_energy": _rec("specific_energy", energy / product),
            "substrate_fed": _rec("substrate_fed", substrate, inputs={"F-101.feed_rate": 1.0}),
            "product_formed": _rec("product_formed", product),
            "energy.total": _rec("energy.total", energy, inputs={"F-101.power": 1.0}),
            "steam": _rec("steam", 2000 + 50 * rng.standard_normal(), inputs={"F-101.steam_flow": 1.0}),
            "water": _rec("water", 10 + 0.5 * rng.standard_normal(), inputs={"F-101.water_flow": 1.0}),
            "batch_duration": _rec("batch_duration", hours, inputs={"F-101.batch_id": 1.0}),
            "mu_max": _rec("mu_max", 0.21 + 0.01 * rng.standard_normal()),
            "rq": _rec(
                "rq",
                1.02 + 0.03 * rng.standard_normal(),
                inputs={"F-101.offgas_co2": 1.0, "F-101.offgas_o2": 1.0},
            ),
            "carbon_balance_closure": _rec("carbon_balance_closure", 0.97 + 0.02 * rng.standard_normal()),
        }
        if n == 2:  # a baseline run with a short off-gas gap and an assumption: flagged, but usable
            kpis["rq"] = _rec(
                "rq",
                1.05,
                coverage=0.962,
                flags=("incomplete", "uncertain_inputs"),
                inputs={"F-101.offgas_co2": 0.962, "F-101.offgas_o2": 0.97},
            )
            kpis["carbon_balance_closure"] = _rec(
                "carbon_balance_closure",
                None,
                coverage=0.962,
                flags=("missing_input", "closure_out_of_range"),
            )
        start = T0 + timedelta(days=2 * n)
        (trial if code == "TR" else baseline).append(RunRecord(run_id, start, kpis))
    return trial, baseline


def sources(runs: Sequence[RunRecord]) -> tuple[RunSource, ...]:
    out = []
    for i, r in enumerate(runs):
        if i < 3:  # the first baseline runs came from the historian
            data = f"historian export of {r.run_id}".encode()
            imp = ImportRecord(
                hashlib.sha256(data).hexdigest(),
                r.run_id,
                f"F101_export_{i + 1:02d}.csv",
                5760,
                80640,
                LOCKED - timedelta(days=3),
            )
            out.append(RunSource(r.run_id, "import", (imp,), SITE_SHA, "0.1.0"))
        else:
            out.append(RunSource(r.run_id, "live", (), SITE_SHA, "0.1.0"))
    return tuple(out)


def yield_inputs(
    *,
    changed_after_start: bool = False,
    exclude: bool = True,
    yields: Sequence[tuple[str, float]] | None = None,
) -> EvidenceInputs:
    """The simulated +6 % campaign judged by the example charter: one baseline run excluded (a written
    reason), a charter history of two versions (the second made before the first trial run, or after it
    when `changed_after_start`)."""
    v1 = Charter.model_validate({**example_charter().model_dump(), "planned_runs": 4})
    charter = example_charter()
    trial, baseline = campaign_runs(yields if yields is not None else simulated_yields(), charter)
    first_trial = min(r.start for r in trial)
    v2_at = first_trial + timedelta(hours=30) if changed_after_start else LOCKED + timedelta(days=5)
    versions = (
        CharterVersion.of(1, v1, reason="", by="anna.berg@hostplant.example", at=LOCKED),
        CharterVersion.of(
            2,
            charter,
            reason="three trial runs, not four: the startup's strain bank holds three vials",
            by="anna.berg@hostplant.example",
            at=v2_at,
        ),
    )
    exclusions = (
        (
            Exclusion(
                baseline[4].run_id,
                "foam-over at 31 h, antifoam pump failed; the run was harvested early",
                "lars.holm@hostplant.example",
                baseline[4].start + timedelta(days=3),
            ),
        )
        if exclude
        else ()
    )
    verdict = judge(
        charter,
        trial,
        baseline,
        exclusions=exclusions,
        charter_version=2,
        charter_changed_after_start=changed_after_start,
    )
    return EvidenceInputs(
        "HY2-F101-2025",
        versions,
        verdict,
        tuple(trial),
        tuple(baseline),
        sources([*baseline, *trial]),
        "Pilot Hall 3, Kalundborg",
    )


def not_judgeable_inputs(yields: Sequence[tuple[str, float]] | None = None) -> EvidenceInputs:
    """The same campaign, but trial run 2's yield is flagged implausible (no value) and baseline run 3's
    covers 80 % of its inputs: the verdict is `not judgeable`, naming both."""
    charter = example_charter()
    trial, baseline = campaign_runs(yields if yields is not None else simulated_yields(), charter)
    t2 = trial[1]
    bad = replace(t2.kpis[PRIMARY], value=None, flags=("implausible_yield_above_stoichiometric",))
    trial[1] = RunRecord(t2.run_id, t2.start, {**t2.kpis, PRIMARY: bad})
    b3 = baseline[2]
    low = replace(
        b3.kpis[PRIMARY],
        coverage=0.8,
        flags=("incomplete",),
        inputs={"F-101.feed_rate": 0.8, "F-101.weight": 1.0, "lab:titer": 1.0},
    )
    baseline[2] = RunRecord(b3.run_id, b3.start, {**b3.kpis, PRIMARY: low})
    version = CharterVersion.of(1, charter, reason="", by="anna.berg@hostplant.example", at=LOCKED)
    verdict = judge(charter, trial, baseline)
    return EvidenceInputs(
        "HY2-F101-2025", (version,), verdict, tuple(trial), tuple(baseline), sources([*baseline, *trial]), ""
    )


def stress_inputs(n_baseline: int = 14, n_trial: int = 5) -> EvidenceInputs:
    """A hard layout: long run ids, an equivalence charter with an absolute margin, six secondary KPIs, a
    baseline with a drift, long flag lists, no prices (no money), no sources for some runs."""
    rng = np.random.default_rng(11)
    secondaries = ["titer", "specific_energy", "mu_max", "rq", "batch_duration", "carbon_balance_closure"]
    base = example_charter().model_dump()
    long = "F-101:PILOTHALL3-F101-CAMPAIGN-2025-SPRING-ENZYME-X-"
    b_ids = [f"{long}BASELINE-{i + 1:03d}" for i in range(n_baseline)]
    t_ids = [f"{long}HY2-TRIAL-{i + 1:03d}" for i in range(n_trial)]
    charter = Charter.model_validate(
        {
            **base,
            "hypothesis": "equivalence",
            "margin": 0.004,
            "margin_unit": "g/g",
            "planned_runs": n_trial,
            "secondary_kpis": [
                {"kpi": k, "direction": "lower" if k in ("specific_energy", "batch_duration") else "higher"}
                for k in secondaries
            ],
            "baseline_runs": b_ids,
            "trial_runs": t_ids,
            "prices": {},
        }
    )
    flags = (
        "incomplete",
        "uncertain_inputs",
        "assumed:initial_volume_from_recipe",
        "counter_reset",
        "closure_out_of_range",
        "no_emission_factor:steam",
    )

    def run(i: int, run_id: str, drift: float) -> RunRecord:
        kpis = {
            PRIMARY: _rec(PRIMARY, 0.064 + drift + 0.0015 * rng.standard_normal()),
            "titer": _rec("titer", 12 + 0.4 * rng.standard_normal()),
            "specific_energy": _rec("specific_energy", 80 + 3 * rng.standard_normal()),
            "mu_max": _rec("mu_max", 0.21 + 0.01 * rng.standard_normal()),
            "rq": _rec(
                "rq",
                1.02 + 0.03 * rng.standard_normal(),
                coverage=0.97 if i % 4 == 1 else 1.0,
                flags=flags[: 1 + i % len(flags)] if i % 4 == 1 else (),
            ),
            "batch_duration": _rec("batch_duration", 48 + rng.standard_normal()),
            "carbon_balance_closure": _rec("carbon_balance_closure", 0.97 + 0.02 * rng.standard_normal()),
        }
        return RunRecord(run_id, T0 + timedelta(days=2 * i), kpis)

    baseline = [run(i, r, 0.00025 * i) for i, r in enumerate(b_ids)]
    trial = [run(n_baseline + i, r, 0.0) for i, r in enumerate(t_ids)]
    version = CharterVersion.of(1, charter, reason="", by="anna.berg@hostplant.example", at=LOCKED)
    exclusions = (
        Exclusion(
            b_ids[3], "sterility breach: contamination confirmed by plating on day 2, " * 3, "q.a.", LOCKED
        ),
        Exclusion(
            t_ids[4], "operator error: the feed was started 6 h late", "lars.holm@hostplant.example", None
        ),
    )
    verdict = judge(charter, trial, baseline, exclusions=exclusions)
    return EvidenceInputs(
        "HY2-F101-2025-EQUIV-LONG-IDS",
        (version,),
        verdict,
        tuple(trial),
        tuple(baseline),
        sources(baseline[:5]),
        "Pilot Hall 3",
    )
