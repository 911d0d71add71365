"""Runs page: every run (live, imported, manual) with its headline KPIs and, for the chosen one, all its
KPIs with unit, coverage and flags, and its phases."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import streamlit as st

from biopilot.records import KpiRecord, Run, RunKind
from dashboard.data import PageData
from processing.kpis import KPI_UNITS

# headline KPIs in the runs table, in column order: (column title with its unit, KPI names in the order
# tried: a fermenter's product formed, a recovery step's product out, how the value is written). Cells are
# text, right-aligned, empty where a run has no such KPI (a fermenter has no step yield).
_HEADLINE: list[tuple[str, tuple[str, ...], str]] = [
    ("titer [g/L]", ("titer",), "{:.2f}"),
    ("product [kg]", ("product_formed", "product_out"), "{:.3f}"),
    ("Y P/S [g/g]", ("yield_product_substrate_consumed",), "{:.4f}"),
    ("step yield", ("step_yield",), "{:.1%}"),
    ("overall yield", ("overall_yield",), "{:.1%}"),
    ("energy [kWh]", ("energy.total",), "{:,.1f}"),
]
_RIGHT = ["hours", *(title for title, _, _ in _HEADLINE)]
_KPI_ORDER = {name: i for i, name in enumerate(KPI_UNITS)}


def _kpi_rank(name: str) -> tuple[int, str]:
    """KPIs in the engine's order (durations, titer, product, substrate, yields, off-gas, recovery,
    energy); per-consumer energies after the total."""
    if name.startswith("energy.") and name != "energy.total":
        return _KPI_ORDER["energy.total"], name
    return _KPI_ORDER.get(name, len(_KPI_ORDER)), name


def _row(
    run: Run, kpis: dict[str, KpiRecord], tz: ZoneInfo, with_kind: bool, with_trial: bool
) -> dict[str, str]:
    start = run.start.astimezone(tz)
    end = run.end.astimezone(tz) if run.end else None
    duration = kpis.get("batch_duration")
    hours = run.duration_h if run.duration_h is not None else (duration.value if duration else None)
    row = {"run": run.id}
    if with_kind:
        row["kind"] = run.kind
    if with_trial:
        row["trial"] = run.trial_id or ""
    row |= {
        "start": f"{start:%Y-%m-%d %H:%M}",
        # the end's date only when it differs from the start's
        "end": "live"
        if end is None
        else f"{end:%H:%M}"
        if end.date() == start.date()
        else f"{end:%d %b %H:%M}",
        "hours": f"{hours:.1f}" if hours is not None else "",
    }
    shown: list[KpiRecord] = []
    for title, names, fmt in _HEADLINE:
        k = next((kpis[n] for n in names if n in kpis), None)
        row[title] = fmt.format(k.value) if k is not None and k.value is not None else ""
        if k is not None:
            shown.append(k)
    # the flags of the KPIs in this row ("provisional" is what "live" in the end column says; a KPI whose
    # inputs did not cover the run says "incomplete")
    flags = [f for k in shown for f in k.flags if f != "provisional"]
    row["flags"] = ", ".join(dict.fromkeys(flags))
    return row


def render(data: PageData) -> None:
    st.title("Runs")
    tz = ZoneInfo(data.site.timezone)
    runs = data.runs()
    if not runs:
        st.info(
            "No runs yet. A run starts when an equipment's batch-id tag carries a batch id; "
            "past runs come in with `biopilot import`."
        )
        return
    # kind and trial columns only when some run is a baseline or trial run (they say nothing otherwise)
    with_kind = any(r.kind != RunKind.OTHER.value for r in runs)
    with_trial = any(r.trial_id for r in runs)
    rows = [_row(run, {k.name: k for k in data.run_kpis(run.id)}, tz, with_kind, with_trial) for run in runs]
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        column_config={
            "run": st.column_config.TextColumn(pinned=True),
            **{title: st.column_config.TextColumn(alignment="right") for title in _RIGHT},
            "flags": st.column_config.TextColumn(width="medium"),
        },
    )
    st.caption(
        "product: formed in a fermenter (harvested plus what left with samples and discharges), out of a "
        "recovery step. Overall yield: from the fermenter's harvest to the product out of this step. "
        "flags: of the KPIs in the row."
    )
    chosen = st.selectbox("Run", [r.id for r in runs], key="run_choice")
    kpis = sorted(data.run_kpis(chosen), key=lambda k: _kpi_rank(k.name))
    phases = data.run_phases(chosen)
    if phases:
        st.caption("Phases: " + " → ".join(f"{p.name} {p.start.astimezone(tz):%d %b %H:%M}" for p in phases))
    if not kpis:
        st.caption("No KPIs computed for this run yet.")
        return
    st.dataframe(
        [
            {
                "KPI": k.name,
                "value": k.value,
                "unit": k.unit,
                "coverage": f"{k.coverage:.1%}",
                "flags": ", ".join(k.flags),
                "final": k.final,
                "inputs": ", ".join(f"{name} {cov:.0%}" for name, cov in sorted(k.inputs.items())),
            }
            for k in kpis
        ],
        hide_index=True,
        width="stretch",
        height=35 * (len(kpis) + 1) + 3,  # every KPI visible without scrolling inside the table
        column_config={
            "KPI": st.column_config.TextColumn(pinned=True),
            "value": st.column_config.NumberColumn(format="%.5g", width=90),
            "unit": st.column_config.TextColumn(width=95),
            "final": st.column_config.CheckboxColumn(width="small"),
            "flags": st.column_config.TextColumn(width="medium"),
            "inputs": st.column_config.TextColumn(width="large"),
        },
    )
    st.caption(
        "coverage: the lowest share of the run any input of the KPI covered with usable data. "
        "Flags: provisional (live run), incomplete (an input had a gap it needed), "
        "missing_input:<input> (that input has no data: no value), implausible:… (physically impossible: "
        "no value), negative_values:<tag> (a tag that cannot be negative read negative), assumed:… (a "
        "documented default stood in for a measurement), closure_out_of_range (a balance outside "
        "0.95–1.05; :<balance> on the KPIs resting on it), overall_yield_mismatch (Π step yields ≠ product "
        "out / product harvested). README, section KPIs."
    )
