"""Live page: a tile per tag with its newest value and age, and a self-refreshing trend."""

from __future__ import annotations

from datetime import timedelta
from html import escape
from zoneinfo import ZoneInfo

import streamlit as st

from biopilot.config import Role
from dashboard.charts import live_envelopes, trend_figure
from dashboard.data import AlarmRow, EquipmentView, PageData, Progress, Tile

REFRESH_S = 2.0
WINDOWS = {
    "1 h": timedelta(hours=1),
    "6 h": timedelta(hours=6),
    "24 h": timedelta(hours=24),
    "48 h": timedelta(hours=48),
    "7 d": timedelta(days=7),
}
_DEFAULT_ROLES = (Role.DISSOLVED_OXYGEN, Role.AGITATION_SPEED, Role.OFFGAS_CO2, Role.FEED_RATE, Role.VOLUME)


def render(data: PageData) -> None:
    st.title("Live")
    numeric = data.numeric_tags()
    if not numeric:
        st.info(
            "No live data for you here: a startup sees the equipment while a run of its trials is on it; "
            "a partner sees its trials' evidence and the baseline as aggregates (Trials page)."
        )
        return
    defaults = [t.name for t in numeric if t.role in _DEFAULT_ROLES][:5]
    left, right = st.columns([4, 1])
    chosen = left.multiselect("Trend", [t.name for t in numeric], default=defaults, key="trend_tags")
    window = right.selectbox("Window (process time)", list(WINDOWS), index=2, key="trend_window")
    _live(data, chosen, WINDOWS[window])


@st.fragment(run_every=REFRESH_S)
def _live(data: PageData, chosen: list[str], window: timedelta) -> None:
    site = data.site
    tz = ZoneInfo(site.timezone)
    latest = data.latest_time()
    if latest is None:
        st.info("No data yet. Waiting for the collectors to store the first values…")
    else:
        simulated = " (simulated)" if site.simulated else ""
        st.caption(
            f"Plant time{simulated} {latest.astimezone(tz):%Y-%m-%d %H:%M:%S} {tz.key} · "
            f"refreshes every {REFRESH_S:.0f} s"
        )
    status = data.collection_status()
    if status:
        st.markdown(
            "Collection: "
            + " · ".join(
                f"{':green[●]' if s.alive else ':red[●]'} {s.name} {s.state}"
                + ("" if s.alive else f" ({s.detail})")
                for s in status
            ),
            help="\n\n".join(f"{s.name}: {s.state}, {s.detail}" for s in status),
        )
    progress = {p.equipment: p for p in data.progress()}
    for view in data.equipment_views():
        _equipment(view, progress.get(view.id))
    _alarms(data)
    if chosen:
        trends = data.trends(chosen, window)
        if trends:
            fig = live_envelopes(trend_figure(trends), trends, data.live_bands(chosen))
            st.plotly_chart(fig, key="trend_chart")


def _equipment(view: EquipmentView, progress: Progress | None = None) -> None:
    batch = f"batch **{view.batch_id}**" if view.batch_id else "no batch"
    phase = f" · phase **{view.phase}**" if view.phase else ""
    st.subheader(f"{view.id} · {view.name}", anchor=False)
    st.markdown(f"{batch}{phase}")
    if _progress(progress):
        st.caption(_progress(progress))
    st.markdown(
        _TILE_CSS
        + "".join(_tile_html(t) for t in view.tiles).join(
            (f'<div class="bp-tiles" data-equipment="{escape(view.id)}">', "</div>")
        ),
        unsafe_allow_html=True,
    )


def _tile_html(tile: Tile) -> str:
    if tile.age_s is None:
        age = "no value yet"
    else:
        age = f"{_age(tile.age_s)} ago"
        if tile.quality != "good":
            age += f' · <span class="bp-warn">{tile.quality}</span>'
        if tile.state in ("dead", "source-down"):
            age += ' · <span class="bp-bad">source down</span>'
        elif tile.state in ("stale", "failed", "rejected"):
            age += f' · <span class="bp-bad">{tile.state}</span>'
    tag = escape(tile.tag)
    return (
        f'<div class="bp-tile" data-tag="{tag}" data-quality="{tile.quality}" title="{tag}">'
        f'<div class="bp-label">{escape(tile.label)}</div>'
        f'<div class="bp-value">{escape(tile.value)}<span class="bp-unit">{escape(tile.unit)}</span></div>'
        f'<div class="bp-age">{age}</div></div>'
    )


_TILE_CSS = """<style>
.bp-tiles {display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px;
           margin-bottom: 8px;}
.bp-tile {border: 1px solid rgba(49, 51, 63, 0.2); border-radius: 8px; padding: 6px 10px; background: #fff;}
.bp-tile[data-quality="bad"], .bp-tile[data-quality="none"] {background: #fdf1f1;}
.bp-tile[data-quality="uncertain"] {background: #fff8e6;}
.bp-label {font-size: 0.8rem; color: rgba(49, 51, 63, 0.7); white-space: nowrap; overflow: hidden;
           text-overflow: ellipsis;}
.bp-value {font-size: 1.45rem; font-weight: 600; line-height: 1.5; white-space: nowrap;}
.bp-unit {font-size: 0.85rem; font-weight: 400; margin-left: 4px; color: rgba(49, 51, 63, 0.7);}
.bp-age {font-size: 0.75rem; color: rgba(49, 51, 63, 0.6);}
.bp-warn {color: #b36b00;} .bp-bad {color: #c62828; font-weight: 600;}
</style>"""


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -- envelope, alarms and batch progress (issue 11 B2) ------------------------------------------------------
def _progress(p: Progress | None) -> str:
    """'31.2 h into the batch (baseline 48 h, 65 %)' on the run's aligned axis."""
    if p is None or p.aligned_h != p.aligned_h:  # NaN: not aligned yet
        return ""
    text = f"{p.run_id}: {p.aligned_h:.1f} h into the batch"
    if p.reference_h:
        text += f" (baseline {p.reference_h:.0f} h, {100 * p.aligned_h / p.reference_h:.0f} %)"
    return text


def _alarms(data: PageData) -> None:
    alarms = data.alarms(open_only=False)
    open_ = [a for a in alarms if a.state == "open" or a.ack_by is None]
    if not alarms:
        return
    st.subheader(f"Alarms · {sum(a.state == 'open' for a in alarms)} open", anchor=False)
    tz = ZoneInfo(data.site.timezone)
    for a in open_[:20]:
        cols = st.columns([6, 1])
        cols[0].markdown(_alarm_line(a, tz))
        if a.ack_by is None and data.may_acknowledge() and cols[1].button("Acknowledge", key=f"ack_{a.id}"):
            why = data.acknowledge(a.id)
            if why:
                st.error(why)
            else:
                st.rerun()
    if len(alarms) > len(open_[:20]):
        st.caption(
            f"{len(alarms) - len(open_[:20])} more alarm(s) (acknowledged and over): `biopilot alarms list`"
        )


def _alarm_line(a: AlarmRow, tz: ZoneInfo) -> str:
    what = a.tag if a.kind != "mspc" else f"{a.tag} → {a.variable or '?'}"
    state = ":red[open]" if a.state == "open" else "over"
    ack = (
        f"acknowledged by {a.ack_by} {a.ack_at.astimezone(tz):%H:%M}"
        if a.ack_by and a.ack_at
        else "not acknowledged"
    )
    return (
        f"**#{a.id}** {state} · {a.run_id} · `{what}` {a.direction} · raised "
        f"{a.raised.astimezone(tz):%d %b %H:%M} · {a.size} · {ack}"
    )
