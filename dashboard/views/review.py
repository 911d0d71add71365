"""Run review page: one run's trends on an aligned axis with its phases shaded, lab results as points, the
stored golden-batch envelope and (admin, operator) the baseline runs laid over; its KPIs and alarms; the shown
data as CSV."""

from __future__ import annotations

import streamlit as st

from dashboard.charts import aligned_figure
from dashboard.data import PageData

DEFAULT_TAGS = 4


def render(data: PageData) -> None:
    st.title("Run review")
    runs = [r for r in data.runs()]
    if not runs:
        st.info("No runs you may review yet.")
        return
    ids = [r.id for r in runs]
    wanted = st.query_params.get("run")
    index = ids.index(wanted) if wanted in ids else 0
    left, right = st.columns([2, 3])
    run_id = left.selectbox("Run", ids, index=index, key="review_run")
    tags = data.review_tags(run_id)
    if not tags:
        st.info("This run's series are not yours to see (its KPIs and evidence are on the Trials page).")
        return
    choices = data.alignment_choices(run_id)
    label = right.selectbox("Alignment", [c.label for c in choices], key="review_alignment")
    choice = next(c for c in choices if c.label == label)
    names = [t.name for t in tags]
    enveloped = [n for n in names if n in set(data.envelope_tags(run_id, choice))]
    default = (enveloped or names)[:DEFAULT_TAGS]
    chosen = st.multiselect("Tags", names, default=default, key="review_tags")
    baseline = data.baseline_runs(run_id)
    overlay: list[str] = []
    if baseline:
        overlay_on = st.checkbox(
            f"Lay the {len(baseline)} baseline runs over it", value=True, key="review_overlay"
        )
        overlay = [r.id for r in baseline] if overlay_on else []
    review = data.review([run_id], chosen, choice, overlay=overlay)
    if not review.traces and not review.bands:
        st.info("No data of these tags in this run.")
    else:
        st.plotly_chart(aligned_figure(review), key="review_chart")
    if review.bands:
        n = max(b.n_runs for b in review.bands.values())
        st.caption(
            f"Envelope: 95 % prediction band of the stored golden batch (n = {n} baseline runs; "
            "mean ± t(0.975, n−1)·s·√(1+1/n) per aligned point). Grey: baseline runs. "
            "Series are bucket means read downsampled in the store."
        )
    elif chosen:
        st.caption("No stored envelope for these tags on this alignment (`biopilot baseline build`).")
    for note in review.notes:
        st.caption(f"⚠ {note}")
    st.download_button(
        "Download the shown data (CSV)",
        review.csv,  # made when the button is clicked (a function), not on every run of the page
        file_name=f"{run_id.replace(':', '_')}-review.csv",
        mime="text/csv",
        key="review_csv",
    )
    _kpis(data, run_id)
    alarms = data.alarms(run_id=run_id)
    if alarms:
        st.subheader("Alarms", anchor=False)
        st.dataframe(
            [
                {
                    "#": a.id,
                    "tag": a.tag if a.kind != "mspc" else f"{a.tag} → {a.variable or '?'}",
                    "direction": a.direction,
                    "raised": f"{a.raised:%Y-%m-%d %H:%M}",
                    "size": a.size,
                    "state": a.state,
                    "acknowledged": a.ack_by or "",
                }
                for a in alarms
            ],
            hide_index=True,
            key="review_alarms",
        )


def _kpis(data: PageData, run_id: str) -> None:
    kpis = data.run_kpis(run_id)
    st.subheader("KPIs", anchor=False)
    if not kpis:
        st.caption("No KPIs computed for this run yet.")
        return
    st.dataframe(
        [
            {"KPI": k.name, "value": k.value, "unit": k.unit, "flags": ", ".join(k.flags), "final": k.final}
            for k in kpis
        ],
        hide_index=True,
        key="review_kpis",
        column_config={"value": st.column_config.NumberColumn(format="%.5g")},
    )
