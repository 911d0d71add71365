"""BioPilot dashboard: the router. Run with `biopilot dashboard` (or `biopilot demo`)."""

from __future__ import annotations

import functools

import streamlit as st

from dashboard.data import DashboardData
from dashboard.views import live, runs


@st.cache_resource(show_spinner=False)
def _data() -> DashboardData:
    return DashboardData.from_environment()


def main() -> None:
    st.set_page_config(page_title="BioPilot", page_icon=":material/biotech:", layout="wide")
    data = _data()
    nav = st.navigation(
        [
            st.Page(
                functools.partial(live.render, data),
                title="Live",
                url_path="live",
                icon=":material/monitoring:",
                default=True,
            ),
            st.Page(
                functools.partial(runs.render, data), title="Runs", url_path="runs", icon=":material/science:"
            ),
        ]
    )
    st.sidebar.caption(f"{data.config.site.name}\n\nStore: `{data.database}`")
    nav.run()


main()
