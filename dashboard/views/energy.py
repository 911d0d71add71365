"""Energy & utilities page: kWh per consumer and per unit operation, kWh/kg, steam, water and CO2e per run
and per kg, across runs. Values are the runs' KPI records (processing/kpi/utilities.py); a KPI that is not
metered or could not be computed shows "—" and its flags say why, never 0."""

from __future__ import annotations

import streamlit as st

from dashboard.charts import energy_figure, intensity_figure, unit_operation_figure
from dashboard.data import EnergyRow, PageData

# (column, EnergyRow attribute, format)
_COLUMNS: list[tuple[str, str, str]] = [
    ("product [kg]", "product_kg", "{:,.3f}"),
    ("energy [kWh]", "kwh", "{:,.1f}"),
    ("kWh/kg", "kwh_per_kg", "{:,.2f}"),
    ("steam [kg]", "steam_kg", "{:,.1f}"),
    ("steam [kg/kg]", "steam_per_kg", "{:,.2f}"),
    ("water [m³]", "water_m3", "{:,.3f}"),
    ("water [m³/kg]", "water_per_kg", "{:,.3f}"),
    ("CO2e [kg]", "co2e_kg", "{:,.2f}"),
    ("CO2e [kg/kg]", "co2e_per_kg", "{:,.3f}"),
]
MISSING = "—"


def _cell(value: float | None, fmt: str) -> str:
    return fmt.format(value) if value is not None else MISSING


def _row(r: EnergyRow) -> dict[str, str]:
    row = {"run": r.run_id, "end": "live" if r.live else "closed"}
    row |= {title: _cell(getattr(r, attr), fmt) for title, attr, fmt in _COLUMNS}
    row["flags"] = ", ".join(f for f in r.flags if f != "provisional")
    return row


def render(data: PageData) -> None:
    st.title("Energy & utilities")
    rows = data.energy_rows()
    if not rows:
        st.info("No runs yet: energy and utilities are computed per run.")
        return
    st.dataframe(
        [_row(r) for r in rows],
        hide_index=True,
        width="stretch",
        column_config={
            "run": st.column_config.TextColumn(pinned=True),
            **{title: st.column_config.TextColumn(alignment="right") for title, _, _ in _COLUMNS},
            "flags": st.column_config.TextColumn(width="large"),
        },
        key="energy_table",
    )
    st.caption(
        "Per run: electricity ∫P dt of the power tags and differenced energy totalizers, steam ∫ of the "
        "steam flows, water ∫ of the water flows, CO2e with the site's emission factors; per kg of product "
        "formed (fermenter) or out of the step (recovery). — : not metered, or not computable (flags: "
        "missing_input:<tag> no usable data, no_emission_factor:<utility> no factor configured, incomplete "
        "an input had gaps)."
    )
    if any(r.consumers for r in rows):
        st.subheader("kWh per consumer")
        st.plotly_chart(energy_figure(rows), key="energy_chart")

    st.subheader("Per kg of product")
    intensities = {
        "kWh/kg": ("kwh_per_kg", "kWh/kg"),
        "steam kg/kg": ("steam_per_kg", "kg/kg"),
        "water m³/kg": ("water_per_kg", "m³/kg"),
        "CO2e kg/kg": ("co2e_per_kg", "kg CO2e/kg"),
    }
    which = st.radio("Intensity", list(intensities), horizontal=True, key="energy_intensity")
    st.plotly_chart(intensity_figure(rows, *intensities[which]), key="energy_intensity_chart")

    heads = data.fermenter_runs()
    if not heads:
        return
    st.subheader("Per unit operation")
    chosen = st.selectbox("Batch", [r.id for r in heads], key="energy_batch")
    batch = data.batch_energy(chosen)
    if batch is None:
        return
    st.dataframe(
        [
            {
                "run": o.run_id,
                "unit operation": f"{o.equipment} · {o.name}",
                "energy [kWh]": _cell(o.kwh, "{:,.1f}"),
                "steam [kg]": _cell(o.steam_kg, "{:,.1f}"),
                "water [m³]": _cell(o.water_m3, "{:,.3f}"),
                "CO2e [kg]": _cell(o.co2e_kg, "{:,.2f}"),
            }
            for o in batch.operations
        ],
        hide_index=True,
        width="stretch",
        key="energy_operations",
    )
    c1, c2, c3 = st.columns(3)
    c1.metric("Batch energy [kWh]", _cell(batch.kwh, "{:,.1f}"))
    c2.metric("Product out of the last step [kg]", _cell(batch.product_kg, "{:,.3f}"))
    c3.metric("kWh per kg of product", _cell(batch.kwh_per_kg, "{:,.2f}"))
    if batch.flags:
        st.caption("Not computable: " + ", ".join(batch.flags))
    st.plotly_chart(unit_operation_figure(batch), key="energy_operations_chart")
