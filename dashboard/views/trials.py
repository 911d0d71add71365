"""Trials page: the trials the viewer may see; for the chosen one its runs with their KPIs and the host
plant's baseline as aggregates only — each KPI's mean with its 95 % confidence interval, and the envelope
of a signal over hours since the start — computed on the server from runs this page never receives.

(The trials feature adds charters and verdicts here.)"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from dashboard.data import PageData

_ENVELOPE_ROLES = ["dissolved_oxygen", "offgas_co2", "feed_rate", "volume", "temperature", "ph"]


def render(data: PageData) -> None:
    st.title("Trials")
    trials = data.trials()
    if not trials:
        st.info(
            "No trials for you to see. An admin creates trials (`biopilot trials create`) and invites "
            "partners to them."
        )
        return
    st.dataframe(
        [
            {
                "trial": t.id,
                "title": t.title,
                "startup": t.startup,
                "equipment": ", ".join(t.equipment),
                "product": t.product or "",
            }
            for t in trials
        ],
        hide_index=True,
        width="stretch",
    )
    chosen = st.selectbox("Trial", [t.id for t in trials], key="trial_choice")
    runs = data.trial_runs(chosen)
    st.subheader("Runs in the trial", anchor=False)
    if runs:
        rows = []
        for run in runs:
            kpis = {k.name: k for k in data.run_kpis(run.id)}
            row = {"run": run.id, "kind": run.kind, "status": "live" if run.is_open else "closed"}
            for name in ("titer", "yield_product_substrate", "energy.total"):
                k = kpis.get(name)
                row[name] = f"{k.value:.4g}" if k is not None and k.value is not None else ""
            rows.append(row)
        st.dataframe(rows, hide_index=True, width="stretch", key="trial_runs")
    else:
        st.caption("No runs in this trial yet.")

    summary = data.baseline(chosen)
    st.subheader("Baseline (aggregates)", anchor=False)
    if summary is None or summary.n_runs == 0:
        st.caption("No closed baseline runs on this trial's equipment yet.")
        return
    st.caption(
        f"{summary.n_runs} baseline runs on {', '.join(summary.equipment)}"
        + (f", product {summary.product}" if summary.product else "")
        + ". Mean and 95 % confidence interval of each KPI; single runs are not shown."
    )
    st.dataframe(
        [
            {
                "KPI": k.name,
                "unit": k.unit,
                "n": k.n,
                "mean": k.mean,
                "95 % CI": f"{k.ci_low:.4g} – {k.ci_high:.4g}" if k.ci_low is not None else "",
                "flags": ", ".join(k.flags),
            }
            for k in summary.kpis
        ],
        hide_index=True,
        width="stretch",
        key="baseline_kpis",
        column_config={"mean": st.column_config.NumberColumn(format="%.5g")},
    )
    role = st.selectbox("Envelope of", _ENVELOPE_ROLES, key="envelope_role")
    env = data.baseline_envelope(chosen, role)
    if env is None or env.n_runs == 0 or not len(env.hours):
        st.caption("No baseline data for this signal.")
        return
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=env.hours, y=env.upper, mode="lines", line={"width": 0}, showlegend=False))
    fig.add_trace(
        go.Scatter(
            x=env.hours,
            y=env.lower,
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(31,119,180,0.18)",
            name="mean ± 2 sd",
        )
    )
    fig.add_trace(go.Scatter(x=env.hours, y=env.mean, mode="lines", name="mean", line={"color": "#1f77b4"}))
    fig.update_layout(
        height=320,
        margin={"l": 60, "r": 10, "t": 10, "b": 40},
        xaxis_title="hours since start",
        yaxis_title=env.unit,
    )
    st.plotly_chart(fig, key="baseline_envelope")
    st.caption(f"Envelope over {env.n_runs} baseline runs; points covered by fewer runs are left out.")
