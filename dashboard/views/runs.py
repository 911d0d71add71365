"""Runs page: every run (live, imported, manual) with its headline KPIs and, for the chosen one, all its
KPIs with unit, coverage and flags, and its phases."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import streamlit as st

from dashboard.data import DashboardData

# headline KPIs in the runs table: (KPI name, column title with its unit)
_HEADLINE = [
    ("titer", "titer [g/L]"),
    ("product_formed", "product [kg]"),
    ("yield_product_substrate", "Y P/S [g/g]"),
]


def render(data: DashboardData) -> None:
    st.title("Runs")
    tz = ZoneInfo(data.config.site.timezone)
    runs = data.runs()
    if not runs:
        st.info(
            "No runs yet. A run starts when an equipment's batch-id tag carries a batch id; "
            "past runs come in with `biopilot import`."
        )
        return
    rows = []
    for run in runs:
        kpis = {k.name: k for k in data.run_kpis(run.id)}
        energy = kpis.get("energy.total")
        end = run.end.astimezone(tz).strftime("%Y-%m-%d %H:%M") if run.end else "live"
        duration_h = run.duration_h
        row: dict[str, object] = {
            "run": run.id,
            "equipment": run.equipment,
            "batch": run.batch_id,
            "kind": run.kind,
            "trial": run.trial_id or "",
            "start": run.start.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
            "end": end,
            "duration [h]": round(duration_h, 1) if duration_h is not None else None,
            "energy [kWh]": energy.value if energy else None,
            "energy coverage": f"{energy.coverage:.0%}" if energy else "",
            "flags": ", ".join(energy.flags) if energy else "",
        }
        for name, title in _HEADLINE:
            k = kpis.get(name)
            row[title] = k.value if k else None
        rows.append(row)
    st.dataframe(rows, hide_index=True, width="stretch")
    chosen = st.selectbox("Run", [r.id for r in runs], key="run_choice")
    kpis = data.run_kpis(chosen)
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
    )
    st.caption(
        "coverage: the lowest share of the run any input of the KPI covered with usable data. "
        "Flags: provisional (live run), incomplete (an input had a gap it needed), missing_input (no value), "
        "assumed:… (a documented default stood in for a measurement)."
    )
