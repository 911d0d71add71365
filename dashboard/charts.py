"""Figures for the dashboard pages (plotly), built from data-module objects only."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.data import Trend

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


def trend_figure(trends: list[Trend], height_per_row: int = 130) -> go.Figure:
    """One row per tag on a shared time axis: the bucket mean as a line, min–max as a band."""
    rows = max(len(trends), 1)
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.03)
    for i, trend in enumerate(trends, start=1):
        color = _COLORS[(i - 1) % len(_COLORS)]
        label = f"{trend.tag} [{trend.unit}]" if trend.unit else trend.tag
        fig.add_trace(
            go.Scatter(
                x=trend.t, y=trend.max, mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"
            ),
            row=i,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=trend.t,
                y=trend.min,
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=_band(color),
                showlegend=False,
                hoverinfo="skip",
            ),
            row=i,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=trend.t, y=trend.mean, mode="lines", name=label, line={"color": color, "width": 1.6}
            ),
            row=i,
            col=1,
        )
        fig.update_yaxes(title_text=trend.unit or "", row=i, col=1, title_standoff=4)
        fig.add_annotation(
            text=trend.tag,
            xref="x domain",
            yref="y domain",
            x=0.005,
            y=0.97,
            showarrow=False,
            font={"size": 11, "color": color},
            row=i,
            col=1,
        )
    fig.update_layout(
        height=max(height_per_row * rows + 60, 220),
        margin={"l": 60, "r": 10, "t": 10, "b": 30},
        showlegend=False,
        uirevision="trend",  # keep zoom and pan across refreshes
        hovermode="x unified",
    )
    return fig


def _band(hex_color: str) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},0.18)"
