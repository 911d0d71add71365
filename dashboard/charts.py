"""Figures for the dashboard pages (plotly), built from data-module objects only."""

from __future__ import annotations

from dataclasses import replace

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.data import EnvelopeBand, Review, Trend

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


# -- run review, compare runs, live envelopes (issue 11 B2) ------------------------------------------------
_PHASE_FILL = ["rgba(120,120,120,0.07)", "rgba(31,119,180,0.07)"]
_BASELINE_LINE = {"color": "rgba(110,110,110,0.55)", "width": 0.9}
_ENVELOPE_FILL = "rgba(44,160,44,0.16)"


def aligned_figure(review: Review, height_per_row: int = 170) -> go.Figure:
    """One row per tag (or role) on the aligned axis: the envelope band behind, baseline runs in grey, the
    reviewed runs in colour; phases of the first run shaded; one row per lab analyte with its points."""
    rows = list(dict.fromkeys([t.tag for t in review.traces] + list(review.bands)))
    analytes = list(dict.fromkeys(p.analyte for p in review.lab))
    n = max(len(rows) + len(analytes), 1)
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.025)
    run_color = {r.id: _COLORS[i % len(_COLORS)] for i, r in enumerate(review.runs)}
    shown_in_legend: set[str] = set()
    notes: list[dict[str, object]] = []
    for i, name in enumerate(rows, start=1):
        band = review.bands.get(name)
        unit = band.unit if band is not None else ""
        if band is not None:
            fig.add_trace(
                go.Scatter(
                    x=band.t,
                    y=band.upper,
                    mode="lines",
                    line={"width": 0},
                    showlegend=False,
                    hoverinfo="skip",
                    name=f"envelope upper {name}",
                ),
                row=i,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=band.t,
                    y=band.lower,
                    mode="lines",
                    line={"width": 0},
                    fill="tonexty",
                    fillcolor=_ENVELOPE_FILL,
                    name=f"envelope (95 % prediction band, n = {band.n_runs})",
                    showlegend="envelope" not in shown_in_legend,
                    legendgroup="envelope",
                    hoverinfo="skip",
                ),
                row=i,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=band.t,
                    y=band.mean,
                    mode="lines",
                    line={"color": "#2ca02c", "width": 1, "dash": "dot"},
                    name="envelope mean",
                    showlegend=False,
                    legendgroup="envelope",
                ),
                row=i,
                col=1,
            )
            shown_in_legend.add("envelope")
        for tr in review.traces:
            if tr.tag != name:
                continue
            unit = unit or tr.unit
            if tr.baseline:
                line, legend, group = _BASELINE_LINE, "baseline runs", "baseline"
            else:
                line, legend, group = (
                    {"color": run_color.get(tr.run_id, "#1f77b4"), "width": 1.7},
                    tr.run_id,
                    tr.run_id,
                )
            fig.add_trace(
                go.Scatter(
                    x=tr.t,
                    y=tr.values,
                    mode="lines",
                    line=line,
                    name=legend,
                    legendgroup=group,
                    showlegend=group not in shown_in_legend,
                    hovertemplate=f"{tr.run_id}<br>%{{x:.2f}}, %{{y:.4g}} {tr.unit}<extra></extra>",
                ),
                row=i,
                col=1,
            )
            shown_in_legend.add(group)
        fig.update_yaxes(title_text=unit, row=i, col=1, title_standoff=4)
        notes.append(_row_label(name, i, "#333"))
    for j, analyte in enumerate(analytes, start=len(rows) + 1):
        pts = [p for p in review.lab if p.analyte == analyte]
        fig.add_trace(
            go.Scatter(
                x=[p.t for p in pts],
                y=[p.value for p in pts],
                mode="markers",
                marker={"size": 8, "color": "#ff7f0e", "symbol": "diamond"},
                name="lab results",
                legendgroup="lab",
                showlegend="lab" not in shown_in_legend,
            ),
            row=j,
            col=1,
        )
        shown_in_legend.add("lab")
        fig.update_yaxes(title_text=pts[0].unit if pts else "", row=j, col=1, title_standoff=4)
        notes.append(_row_label(f"lab: {analyte}", j, "#b35900"))
    # phases: one shape each over every row (the rows share their x axis), added at once (add_vrect per
    # row is slow: it inspects every subplot)
    shapes = []
    for k, p in enumerate(review.phases):
        if p.t1 > p.t0:
            shapes.append(
                {
                    "type": "rect",
                    "xref": "x",
                    "yref": "paper",
                    "x0": p.t0,
                    "x1": p.t1,
                    "y0": 0,
                    "y1": 1,
                    "fillcolor": _PHASE_FILL[k % 2],
                    "line": {"width": 0},
                    "layer": "below",
                }
            )
        notes.append(
            {
                "text": p.name,
                "x": p.t0,
                "xref": "x",
                "yref": "paper",
                "y": 1.0,
                "yanchor": "bottom",
                "xanchor": "left",
                "showarrow": False,
                "font": {"size": 10, "color": "#555"},
            }
        )
    fig.update_layout(shapes=shapes, annotations=notes)
    fig.update_xaxes(title_text=review.axis_label, row=n, col=1)
    fig.update_layout(
        height=max(height_per_row * n + 110, 260),
        margin={"l": 60, "r": 10, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.08 if n > 2 else -0.2},
        uirevision="aligned",
        hovermode="closest",
    )
    return fig


def _row_label(text: str, row: int, color: str) -> dict[str, object]:
    axis = "" if row == 1 else str(row)
    return {
        "text": text,
        "xref": f"x{axis} domain",
        "yref": f"y{axis} domain",
        "x": 0.005,
        "y": 0.97,
        "showarrow": False,
        "font": {"size": 11, "color": color},
    }


def live_envelopes(
    fig: go.Figure, trends: list[Trend], bands: dict[str, tuple[list, EnvelopeBand]]
) -> go.Figure:
    """Draw each trend's golden-batch envelope (in plant time) behind it in the live trend figure."""
    for i, trend in enumerate(trends, start=1):
        found = bands.get(trend.tag)
        if found is None:
            continue
        when, band = found
        if trend.t:  # the band over the trend's window only (not the batch still to come)
            keep = [trend.t[0] <= w <= trend.t[-1] for w in when]
            when = [w for w, k in zip(when, keep, strict=True) if k]
            band = replace(band, upper=band.upper[keep], lower=band.lower[keep])
        fig.add_trace(
            go.Scatter(
                x=when, y=band.upper, mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"
            ),
            row=i,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=when,
                y=band.lower,
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=_ENVELOPE_FILL,
                name=f"envelope {trend.tag}",
                showlegend=False,
                hoverinfo="skip",
            ),
            row=i,
            col=1,
        )
        # the band's traces go behind the trend's
        fig.data = (*fig.data[-2:], *fig.data[:-2])
    return fig
