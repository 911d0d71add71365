"""Runs page: every detected run and, for the chosen one, its KPIs with unit, coverage and flags."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import streamlit as st

from dashboard.data import DashboardData


def render(data: DashboardData) -> None:
    st.title("Runs")
    tz = ZoneInfo(data.config.site.timezone)
    runs = data.runs()
    if not runs:
        st.info("No runs yet. A run starts when an equipment's batch-id tag carries a batch id.")
        return
    rows = []
    for run in runs:
        kpis = {k.name: k for k in data.run_kpis(run.id)}
        energy = kpis.get("energy.total")
        end = run.end.astimezone(tz).strftime("%Y-%m-%d %H:%M") if run.end else "live"
        duration_h = ((run.end - run.start).total_seconds() / 3600) if run.end else None
        rows.append(
            {
                "run": run.id,
                "equipment": run.equipment,
                "batch": run.batch_id,
                "start": run.start.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
                "end": end,
                "duration [h]": round(duration_h, 1) if duration_h is not None else None,
                "energy [kWh]": energy.value if energy else None,
                "energy coverage": f"{energy.coverage:.0%}" if energy else "",
                "flags": ", ".join(energy.flags) if energy else "",
            }
        )
    st.dataframe(rows, hide_index=True, width="stretch")
    chosen = st.selectbox("Run", [r.id for r in runs], key="run_choice")
    kpis = data.run_kpis(chosen)
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
            }
            for k in kpis
        ],
        hide_index=True,
        width="stretch",
    )
