"""BioPilot dashboard: the router. Run with `biopilot dashboard` (or `biopilot demo`).

It signs the person in (local account, or the plant's identity provider through st.login), and hands every
page a PageData for that viewer — never the store or the catalog. Login is required whenever the server
listens beyond 127.0.0.1 or the data directory has users; without either, the dashboard is open to this
machine only, and says so on every page.
"""

from __future__ import annotations

import functools
from typing import Any

import streamlit as st

from biopilot.access import Viewer
from dashboard.data import DashboardData
from dashboard.views import compare, data_quality, energy, live, login, review, runs, trials, waterfall

_TOKEN = "bp_session"


@st.cache_resource(show_spinner=False)
def _data() -> DashboardData:
    return DashboardData.from_environment()


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all
        return False


def _oidc_subject() -> str | None:
    if not _oidc_configured() or not st.user.is_logged_in:
        return None
    subject: Any = st.user.get("email") or st.user.get("sub")
    return str(subject) if subject else None


def _sign_in(data: DashboardData) -> Viewer | None:
    """The signed-in viewer, or None after drawing the sign-in (or password) page."""
    address = st.context.ip_address  # the WebSocket peer; None on this machine (and a mock under AppTest)
    address = address if isinstance(address, str) else None
    listening = st.get_option("server.address")
    if not data.login_required(listening):
        return Viewer.local_admin()
    user, why = data.auth.resume(st.session_state.get(_TOKEN))
    if user is None and st.session_state.get(_TOKEN):
        del st.session_state[_TOKEN]
    if user is None:
        subject = _oidc_subject()
        if subject is not None and not st.session_state.get("bp_oidc_refused"):
            result = data.auth.oidc_login(subject, address)
            if result.ok:
                st.session_state[_TOKEN] = result.token
                user = data.user(result.viewer.name) if result.viewer else None
            else:
                st.session_state["bp_oidc_refused"] = result.message
    if user is None:

        def sign_in(name: str, password: str) -> str | None:
            result = data.auth.login(name, password, address)
            if not result.ok:
                return result.message
            st.session_state[_TOKEN] = result.token
            st.rerun()
            return None

        message = why or st.session_state.get("bp_oidc_refused", "")
        login.render_login(data.site_name, sign_in, message, st.login if _oidc_configured() else None)
        return None
    if user.must_change_password:

        def change(old: str, new: str, again: str) -> str | None:
            if new != again:
                return "The new passwords differ."
            try:
                data.auth.change_password(user.name, old, new)
            except Exception as exc:  # AuthError: said to the person
                return str(exc)
            st.rerun()
            return None

        login.render_change_password(user.name, change, forced=True)
        return None
    return user.viewer


def _sign_out(data: DashboardData) -> None:
    data.auth.logout(st.session_state.pop(_TOKEN, None))
    if _oidc_subject() is not None:
        st.logout()


def main() -> None:
    st.set_page_config(page_title="BioPilot", page_icon=":material/biotech:", layout="wide")
    data = _data()
    viewer = _sign_in(data)
    if viewer is None:
        return
    page = data.page(viewer)
    nav = st.navigation(
        [
            st.Page(
                functools.partial(live.render, page),
                title="Live",
                url_path="live",
                icon=":material/monitoring:",
                default=True,
            ),
            st.Page(
                functools.partial(runs.render, page), title="Runs", url_path="runs", icon=":material/science:"
            ),
            st.Page(
                functools.partial(trials.render, page),
                title="Trials",
                url_path="trials",
                icon=":material/handshake:",
            ),
            # -- run review and compare runs (issue 11 B2) --
            st.Page(
                functools.partial(review.render, page),
                title="Run review",
                url_path="review",
                icon=":material/timeline:",
            ),
            st.Page(
                functools.partial(compare.render, page),
                title="Compare",  # not "… runs": a link text that contains "Runs" is not the Runs page's
                url_path="compare",
                icon=":material/compare_arrows:",
            ),
            # -- ops pages (issue 11) --
            st.Page(
                functools.partial(energy.render, page),
                title="Energy & utilities",
                url_path="energy",
                icon=":material/bolt:",
            ),
            st.Page(
                functools.partial(waterfall.render, page),
                title="Yield waterfall",
                url_path="yield",
                icon=":material/waterfall_chart:",
            ),
            st.Page(
                functools.partial(data_quality.render, page),
                title="Data quality & collectors",
                url_path="data-quality",
                icon=":material/rule:",
            ),
        ]
    )
    # where the data lives is the host's business: admins and operators only
    host = viewer.role.value in ("admin", "operator")
    st.sidebar.caption(f"{data.site_name}\n\nStore: `{data.database}`" if host else data.site_name)
    if (
        viewer.name == "local"
        and viewer.is_admin
        and not data.login_required(st.get_option("server.address"))
    ):
        st.sidebar.warning(
            "**Open dashboard, no login**: this data directory has no users and the dashboard listens on "
            "this machine only. Anyone on this machine sees everything. `biopilot users add` turns login on."
        )
    else:
        st.sidebar.markdown(f"Signed in as **{viewer.name}** · {viewer.role.value}")
        st.sidebar.button("Sign out", key="sign_out", on_click=_sign_out, args=(data,))
    nav.run()


main()
