"""Yield waterfall page: from titer in the fermenter to kg of product out of the last recovery step, through
each step (the runs' KPI records, processing/kpi/downstream.py), for a batch and its downstream runs. A step
without a product out or a yield is shown as missing, never as 100 %."""

from __future__ import annotations

import streamlit as st

from dashboard.charts import waterfall_figure
from dashboard.data import PageData, YieldStep

MISSING = "missing"


def _kg(value: float | None) -> str:
    return f"{value:,.3f}" if value is not None else MISSING


def _pct(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else MISSING


def _step(i: int, s: YieldStep) -> dict[str, str]:
    return {
        "step": str(i),
        "run": s.run_id,
        "equipment": s.equipment,
        "product in [kg]": _kg(s.product_in_kg),
        "product out [kg]": _kg(s.product_out_kg),
        "step yield": _pct(s.step_yield),
        "overall yield": _pct(s.overall_yield),
        "flags": ", ".join(f for f in s.flags if f != "provisional"),
    }


def render(data: PageData) -> None:
    st.title("Yield waterfall")
    heads = data.fermenter_runs()
    if not heads:
        st.info("No runs yet.")
        return
    # open on the newest finished batch: a live one has no recovery runs yet
    first = next((i for i, r in enumerate(heads) if r.end is not None), 0)
    chosen = st.selectbox("Batch", [r.id for r in heads], index=first, key="waterfall_batch")
    chain = data.yield_chain(chosen)
    if chain is None:
        return
    titer = f"{chain.titer_g_l:.2f} g/L" if chain.titer_g_l is not None else "missing"
    harvested = f"{chain.harvested_kg:,.3f} kg" if chain.harvested_kg is not None else "missing"
    st.markdown(f"Titer at harvest **{titer}** · product harvested **{harvested}**")
    if not chain.steps:
        st.info("No recovery runs recorded for this batch (none downstream of it, or none you may see).")
        return
    st.plotly_chart(waterfall_figure(chain), key="waterfall_chart")
    st.dataframe(
        [_step(i, s) for i, s in enumerate(chain.steps, start=1)],
        hide_index=True,
        width="stretch",
        column_config={
            c: st.column_config.TextColumn(alignment="right")
            for c in ("product in [kg]", "product out [kg]", "step yield", "overall yield")
        },
        key="waterfall_steps",
    )
    if chain.final_kg is not None:
        st.markdown(f"Purified product: **{_kg(chain.final_kg)} kg**")
    else:
        st.markdown("Purified product: **unknown** (a step is missing)")
    st.caption(
        "Step yield = product out / product in of the step; overall yield = Π step yields, i.e. product out "
        "of this step / product into the first step (its feed, not the harvest). A bar 'into …' is product "
        "that did not reach the next step's feed (hold-up, transfer) or its feed measured differently: it is "
        "in no yield. A missing step has no product out or yield (flags say why): the chain after it is "
        "unknown."
    )
