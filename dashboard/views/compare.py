"""Compare runs page: several runs laid over each other by aligned time, one row per signal (by role, so
runs of different vessels compare), with their KPIs side by side."""

from __future__ import annotations

import streamlit as st

from dashboard.charts import aligned_figure
from dashboard.data import PageData

DEFAULT_ROLES = ("dissolved_oxygen", "feed_rate", "offgas_co2", "volume")


def render(data: PageData) -> None:
    st.title("Compare runs")
    runs = data.runs()
    reviewable = [r for r in runs if data.review_tags(r.id)]
    if len(reviewable) < 1:
        st.info("No runs whose series you may see.")
        return
    ids = [r.id for r in reviewable]
    chosen = st.multiselect("Runs", ids, default=ids[: min(3, len(ids))], key="compare_runs")
    if not chosen:
        st.info("Choose runs to compare.")
        return
    roles: list[str] = []
    for run_id in chosen:
        roles += [t.role.value for t in data.review_tags(run_id) if t.role.value not in roles]
    choices = data.alignment_choices(chosen[0])
    left, right = st.columns([3, 2])
    default = [r for r in DEFAULT_ROLES if r in roles] or roles[:2]
    picked = left.multiselect("Signals (by role)", roles, default=default, key="compare_roles")
    label = right.selectbox("Alignment", [c.label for c in choices], key="compare_alignment")
    choice = next(c for c in choices if c.label == label)
    review = data.review(chosen, picked, choice, by_role=True, envelope=False)
    if review.traces:
        st.plotly_chart(aligned_figure(review), key="compare_chart")
    else:
        st.info("No data of these signals in these runs.")
    for note in review.notes:
        st.caption(f"⚠ {note}")
    table = data.kpi_table(chosen)
    if table:
        st.subheader("KPIs", anchor=False)
        st.dataframe(table, hide_index=True, key="compare_kpis")
    st.download_button(
        "Download the shown data (CSV)",
        review.csv,
        file_name="compare.csv",
        mime="text/csv",
        key="compare_csv",
    )
