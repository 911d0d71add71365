"""Sign-in and password pages: layout only. The app hands in what to do with what was typed."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st


def render_login(
    site: str,
    sign_in: Callable[[str, str], str | None],
    message: str = "",
    oidc: Callable[[], None] | None = None,
    open_warning: str = "",
) -> None:
    """sign_in(user, password) -> an error to show, or None (signed in: the app reruns)."""
    st.title("BioPilot · sign in")
    st.caption(site)
    if message:
        st.warning(message)
    if open_warning:
        st.error(open_warning)
    with st.form("login", clear_on_submit=False):
        user = st.text_input("User", key="login_user", autocomplete="username")
        password = st.text_input(
            "Password", type="password", key="login_password", autocomplete="current-password"
        )
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        error = sign_in(user, password)
        if error:
            st.error(error)
    if oidc is not None:
        st.divider()
        st.button("Sign in with the plant's identity provider", on_click=oidc, key="login_oidc")


def render_change_password(name: str, change: Callable[[str, str, str], str | None], forced: bool) -> None:
    """change(old, new, repeated) -> an error to show, or None (changed: the app reruns)."""
    st.title("Choose your password")
    if forced:
        st.info(
            f"Signed in as **{name}** with a one-time password. Choose your own (at least 12 characters) "
            "before you go on."
        )
    with st.form("change_password"):
        old = st.text_input("Current (one-time) password", type="password", key="pw_old")
        new = st.text_input("New password", type="password", key="pw_new", autocomplete="new-password")
        again = st.text_input(
            "New password again", type="password", key="pw_again", autocomplete="new-password"
        )
        submitted = st.form_submit_button("Change password", type="primary")
    if submitted:
        error = change(old, new, again)
        if error:
            st.error(error)
