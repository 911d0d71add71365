"""Figures for the dashboard pages (plotly), built from data-module objects only."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.data import BatchEnergy, EnergyRow, EnvelopeBand, Review, Trend, YieldChain

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


# -- ops: energy & utilities, yield waterfall (issue 11) --------------------------------------------------
def energy_figure(rows: list[EnergyRow]) -> go.Figure:
    """kWh per run, stacked by consumer (energy.<tag>); a run without energy figures has no bar."""
    runs = [r.run_id for r in rows]
    consumers = sorted({c for r in rows for c in r.consumers})
    fig = go.Figure()
    for i, consumer in enumerate(consumers):
        fig.add_trace(
            go.Bar(
                x=runs,
                y=[r.consumers.get(consumer) for r in rows],
                name=consumer,
                marker_color=_COLORS[i % len(_COLORS)],
            )
        )
    fig.update_layout(
        barmode="stack",
        height=320,
        margin={"l": 60, "r": 10, "t": 10, "b": 80},
        yaxis_title="kWh",
        legend={"orientation": "h", "y": -0.35},
    )
    return fig


def intensity_figure(rows: list[EnergyRow], attr: str, unit: str) -> go.Figure:
    """One utility per kg of product across runs (attr of EnergyRow); a run without it has no bar and is
    labelled "missing" (never a bar at 0)."""
    values = [getattr(r, attr) for r in rows]
    fig = go.Figure(
        go.Bar(
            x=[r.run_id for r in rows],
            y=values,
            text=[f"{v:,.3g}" if v is not None else "missing" for v in values],
            textposition="outside",
            marker_color=_COLORS[2],
        )
    )
    fig.update_layout(height=300, margin={"l": 60, "r": 10, "t": 20, "b": 80}, yaxis_title=unit)
    return fig


def unit_operation_figure(batch: BatchEnergy) -> go.Figure:
    ops = batch.operations
    fig = go.Figure(
        go.Bar(
            x=[f"{o.equipment} · {o.name}" for o in ops],
            y=[o.kwh for o in ops],
            text=[f"{o.kwh:,.1f} kWh" if o.kwh is not None else "missing" for o in ops],
            marker_color=_COLORS[0],
        )
    )
    fig.update_layout(height=260, margin={"l": 60, "r": 10, "t": 10, "b": 40}, yaxis_title="kWh")
    return fig


def waterfall_figure(chain: YieldChain) -> go.Figure:
    """Product [kg] from the harvest through each recovery step: a transfer bar where a step took in other
    than the level before it, the step's loss (out − in) with its yield; a missing step drops to zero and
    says "missing" (the level after it is unknown, never carried on as if the step kept 100 %)."""
    x: list[str] = []
    measure: list[str] = []
    y: list[float] = []
    text: list[str] = []
    level = chain.harvested_kg
    x.append("harvest")
    if level is None:
        measure.append("absolute")
        y.append(0.0)
        text.append("missing")
    else:
        measure.append("absolute")
        y.append(level)
        text.append(f"{level:,.3f} kg")
    for step in chain.steps:
        if step.missing:
            x.append(f"{step.equipment}: missing")
            measure.append("absolute")
            y.append(0.0)
            text.append("missing")
            level = None
            continue
        p_in, p_out = step.product_in_kg, step.product_out_kg
        assert p_out is not None and step.step_yield is not None  # not missing
        if p_in is not None and (level is None or abs(p_in - level) > 1e-9):
            x.append(f"into {step.equipment}")
            measure.append("absolute" if level is None else "relative")
            y.append(p_in if level is None else p_in - level)
            text.append(f"{p_in:,.3f} kg in")
            level = p_in
        x.append(f"{step.equipment} ({step.step_yield:.1%})")
        if level is None:
            measure.append("absolute")
            y.append(p_out)
        else:
            measure.append("relative")
            y.append(p_out - level)
        text.append(f"{p_out:,.3f} kg")
        level = p_out
    if chain.final_kg is not None:
        x.append("purified product")
        measure.append("absolute")
        y.append(chain.final_kg)
        text.append(f"{chain.final_kg:,.3f} kg")
    fig = go.Figure(
        go.Waterfall(
            x=x,
            y=y,
            measure=measure,
            text=text,
            textposition="outside",
            decreasing={"marker": {"color": "#d62728"}},
            increasing={"marker": {"color": "#2ca02c"}},
            totals={"marker": {"color": "#1f77b4"}},
            connector={"line": {"color": "#999", "width": 1}},
        )
    )
    fig.update_layout(
        height=380, margin={"l": 60, "r": 10, "t": 30, "b": 40}, yaxis_title="product [kg]", showlegend=False
    )
    return fig


# -- trials ----------------------------------------------------------------------------------------------
def ci_figure(kpis: list[dict[str, Any]], *, margin: float, margin_unit: str) -> go.Figure:
    """One row per KPI (verdict JSON objects): the difference in % of the baseline (positive is better) with
    its confidence interval, against 0 and the charter's margin (a relative margin only: an absolute one is
    in the primary KPI's unit, shown in its caption)."""
    fig = go.Figure()
    names = [k["kpi"] for k in kpis][::-1]
    for k in kpis:
        ci = k.get("ci_pct")
        if not ci or k.get("difference_pct") is None or ci[0] is None or ci[1] is None:
            continue
        d = k["difference_pct"]
        fig.add_trace(
            go.Scatter(
                x=[d],
                y=[k["kpi"]],
                mode="markers",
                marker={"size": 11, "color": _WORD_COLORS.get(k["word"], "#555")},
                error_x={"type": "data", "symmetric": False, "array": [ci[1] - d], "arrayminus": [d - ci[0]]},
                name=f"{k['kpi']}: {k['word']}",
                hovertemplate=f"{k['kpi']}: %{{x:.2f}} % [{ci[0]:.2f}, {ci[1]:.2f}]<extra></extra>",
            )
        )
    fig.add_vline(x=0, line={"color": "#444", "width": 1})
    if margin_unit == "%" and margin > 0:
        for x in (margin, -margin):
            fig.add_vline(x=x, line={"color": "#d62728", "width": 1, "dash": "dash"})
    fig.update_layout(
        height=90 + 60 * max(len(kpis), 1),
        margin={"l": 10, "r": 10, "t": 10, "b": 40},
        xaxis_title="difference, % of the baseline (positive = better)",
        yaxis={"categoryorder": "array", "categoryarray": names},
        showlegend=False,
    )
    return fig


def runs_figure(kpi: dict[str, Any], band: tuple[float, float, float] | None) -> go.Figure:
    """The runs' values of one KPI (a verdict JSON object): trial runs as dots; baseline runs as dots when
    the object lists them, else the baseline as its mean with a confidence band (aggregates only)."""
    fig = go.Figure()
    groups = {"baseline": [], "trial": []}  # type: dict[str, list[dict[str, Any]]]
    for r in kpi.get("runs", []):
        if r.get("value") is not None:
            groups[r["group"]].append(r)
    for group, color in (("baseline", "#1f77b4"), ("trial", "#d62728")):
        rows = groups[group]
        if not rows:
            continue
        fig.add_trace(
            go.Scatter(
                x=[group] * len(rows),
                y=[r["value"] for r in rows],
                mode="markers",
                marker={
                    "size": 10,
                    "color": color,
                    "symbol": ["x" if r.get("excluded") else "circle" for r in rows],
                },
                text=[r["run"] for r in rows],
                hovertemplate="%{text}: %{y:.4g}<extra></extra>",
                name=group,
            )
        )
    if not groups["baseline"] and band is not None:
        mean, low, high = band
        fig.add_trace(
            go.Scatter(
                x=["baseline"],
                y=[mean],
                mode="markers",
                marker={"size": 12, "color": "#1f77b4", "symbol": "diamond"},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [high - mean],
                    "arrayminus": [mean - low],
                },
                name="baseline mean ± CI",
                hovertemplate=f"baseline mean %{{y:.4g}} [{low:.4g}, {high:.4g}]<extra></extra>",
            )
        )
    fig.update_layout(
        height=320,
        margin={"l": 60, "r": 10, "t": 10, "b": 30},
        yaxis_title=f"{kpi['kpi']} [{kpi['unit']}]",
        xaxis={"categoryorder": "array", "categoryarray": ["baseline", "trial"]},
        showlegend=False,
    )
    return fig


def stability_figure(s: dict[str, Any], unit: str, n_runs: int = 2) -> go.Figure:
    """The baseline's individuals chart (verdict JSON "baseline_stability"): the runs' values in start
    order when listed, the centre line and the natural process limits (over n_runs runs when the values
    are not listed: the baseline as aggregates)."""
    fig = go.Figure()
    values = s.get("values") or []
    n = max(len(values), n_runs, 2)
    if values:
        flagged = set(s.get("outside", [])) | set(s.get("trend", []))
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(values) + 1)),
                y=values,
                mode="lines+markers",
                marker={"color": ["#d62728" if r in flagged else "#1f77b4" for r in s.get("runs", [])]},
                line={"color": "#1f77b4"},
                text=s.get("runs", []),
                hovertemplate="%{text}: %{y:.4g}<extra></extra>",
                name="baseline runs",
            )
        )
    for key, dash in (("centre", "solid"), ("lower", "dash"), ("upper", "dash")):
        if s.get(key) is not None:
            fig.add_trace(
                go.Scatter(
                    x=[1, n],
                    y=[s[key], s[key]],
                    mode="lines",
                    line={"color": "#444" if key == "centre" else "#d62728", "dash": dash, "width": 1},
                    name=key,
                    hovertemplate=f"{key} %{{y:.4g}}<extra></extra>",
                )
            )
    fig.update_layout(
        height=280,
        margin={"l": 60, "r": 10, "t": 10, "b": 40},
        xaxis_title="baseline run, in start order",
        yaxis_title=f"{s.get('kpi', '')} [{unit}]",
        showlegend=False,
    )
    return fig


_WORD_COLORS = {
    "better": "#2ca02c",
    "equivalent": "#2ca02c",
    "not worse": "#2ca02c",
    "worse": "#d62728",
    "inconclusive": "#ff7f0e",
    "not judgeable": "#7f7f7f",
}


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
