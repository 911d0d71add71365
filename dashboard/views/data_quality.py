"""Data quality & collectors page: per tag its last value, gaps, flatline, spikes, bad and uncertain samples
over a window of process time (processing/quality.py), rejected inputs; per collector connection its state,
reconnects, outages and quarantined inputs; the spool backlog."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import streamlit as st

from dashboard.data import PageData

WINDOWS = {"6 h": timedelta(hours=6), "24 h": timedelta(hours=24), "7 days": timedelta(days=7)}


def render(data: PageData) -> None:
    st.title("Data quality & collectors")
    tz = ZoneInfo(data.site.timezone)
    label = st.selectbox("Window (process time)", list(WINDOWS), index=1, key="dq_window")
    view = data.data_quality(WINDOWS[label])
    if view is None:
        st.info("No data yet.")
        return
    st.caption(f"{view.start.astimezone(tz):%Y-%m-%d %H:%M} → {view.end.astimezone(tz):%Y-%m-%d %H:%M} {tz}")
    if view.connections or view.spool_bytes is not None:
        st.subheader("Collectors")
        if view.connections:
            st.dataframe(
                [
                    {
                        "connection": c.name,
                        "state": c.state,
                        "reconnects": str(c.reconnects),
                        "outages": f"{c.outages} (one open)" if c.open_outage else str(c.outages),
                        "quarantined": str(sum(c.quarantined.values())),
                        "reasons": ", ".join(f"{r} {n}" for r, n in c.quarantined.items()),
                    }
                    for c in view.connections
                ],
                hide_index=True,
                width="stretch",
                key="dq_connections",
            )
        if view.spool_bytes is not None:
            fill = f" ({view.spool_fill:.1%} of the spool)" if view.spool_fill is not None else ""
            st.markdown(f"Spool backlog: **{view.spool_bytes / 1e6:.2f} MB** not yet stored{fill}")
    st.subheader(f"Tags · last {label}")
    if not view.tags:
        st.info("No tags to show.")
        return
    rows = []
    for t in view.tags:
        q = t.quality
        rows.append(
            {
                "tag": t.tag,
                "last seen": f"{t.last_seen.astimezone(tz):%d %b %H:%M:%S}" if t.last_seen else "—",
                "newest value": f"{t.last_value.astimezone(tz):%d %b %H:%M}" if t.last_value else "—",
                "samples": str(q.samples),
                "gaps": str(q.gaps.count),
                "longest gap [h]": f"{q.gaps.longest_h:.2f}" if q.gaps.count else "",
                "flatline [h]": f"{q.flatline_h:.1f}" if q.flatline else "",
                "spikes": str(q.spikes),
                "bad": str(q.bad),
                "uncertain": str(q.uncertain),
                "rejected": str(t.rejected),
                "flags": ", ".join(q.flags),
            }
        )
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        height=35 * (len(rows) + 1) + 3,
        column_config={
            "tag": st.column_config.TextColumn(pinned=True),
            **{
                c: st.column_config.TextColumn(alignment="right")
                for c in ("samples", "gaps", "longest gap [h]", "flatline [h]", "spikes", "bad", "uncertain")
            },
        },
        key="dq_tags",
    )
    st.caption(
        "last seen: when the collectors last received a value (wall clock; — without collector health). "
        "gaps: intervals longer than 5 × the local sampling interval. flatline: a value stuck (unchanged) "
        "for ≥ 1 h during a run of its equipment (the whole window when it had no run). spikes: Hampel "
        "identifier (median ± 8 · 1.4826 · MAD of 31 samples). bad / uncertain: "
        "by OPC UA status severity. rejected: inputs the collectors quarantined. README, Data quality."
    )
