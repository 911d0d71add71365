"""The evidence pack's charts, drawn with matplotlib (Agg, no pyplot state, no browser) from the pack's
tables (processing.evidence.tables) to PNG bytes: the verdict per KPI with its intervals against the margin,
the runs' values (trial vs baseline), and the baseline's individuals chart."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

DPI = 200
WIDTH_IN = 7.0  # the page's text width (180 mm)
WORD_COLOURS = {
    "better": "#1a7f37",
    "not worse": "#1a7f37",
    "equivalent": "#1f5fa8",
    "worse": "#c62828",
    "inconclusive": "#8a6d00",
    "not judgeable": "#555555",
}
TRIAL_COLOUR = "#1f5fa8"
BASELINE_COLOUR = "#444444"
FLAG_COLOUR = "#c62828"
TREND_COLOUR = "#e07b00"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def common_prefix(ids: Sequence[str]) -> str:
    """The prefix all run ids share, up to and with its last separator (':', '-', '_', '/', '.', ' ');
    "" for a single id or none shared."""
    ids = list(dict.fromkeys(ids))
    if len(ids) < 2:
        return ""
    prefix = os.path.commonprefix(ids)  # noqa: RUF071 (character-wise is meant: a shared text prefix)
    return prefix[: max(prefix.rfind(c) for c in ":-_/. ") + 1]


def short_ids(ids: Sequence[str], width: int = 14) -> dict[str, str]:
    """Short, distinct labels for run ids on a chart's axis: the common prefix (`common_prefix`) left
    out, then at most `width` characters (the end kept, '…' in front); numbers #1… when they would
    collide."""
    ids = list(dict.fromkeys(ids))
    cut = len(common_prefix(ids))
    labels = {i: i[cut:] or i for i in ids}
    labels = {i: (s if len(s) <= width else "…" + s[-(width - 1) :]) for i, s in labels.items()}
    if len(set(labels.values())) < len(ids):
        labels = {i: f"#{n + 1}" for n, i in enumerate(ids)}
    return labels


def _g(v: float) -> str:
    return f"{v:.3g}".replace("-", "−")


# -- the verdict per KPI ------------------------------------------------------------------------------
def ci_chart(kpis: Sequence[Mapping[str, Any]], *, margin: float, margin_unit: str, alpha: float) -> bytes:
    """One row per KPI (rows of the verdict_kpis table, set "judged"; the primary first): the difference,
    signed so that + is better, with its 1 − α interval (thin, capped) and 1 − 2α interval (thick), the
    point estimate, zero, and for the primary KPI the ±Δ margin lines. In % of the baseline where the KPI
    has it, except an absolute margin's primary KPI, drawn in its unit against that margin."""
    relative = margin_unit == "%"
    n = len(kpis)
    fig = Figure(figsize=(WIDTH_IN, 0.55 + 0.85 * n))
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, k in zip(axes, kpis, strict=True):
        _ci_row(ax, k, margin=margin, relative=relative, alpha=alpha)
    handles = [
        Line2D(
            [], [], color="black", lw=1, marker="|", markersize=8, label=f"{100 * (1 - alpha):g} % interval"
        ),
        Line2D([], [], color="black", lw=5, alpha=0.45, label=f"{100 * (1 - 2 * alpha):g} % interval"),
        Line2D([], [], color="black", lw=0, marker="o", markersize=5, label="estimate"),
    ]
    if margin > 0:
        handles.append(
            Line2D(
                [],
                [],
                color=FLAG_COLOUR,
                lw=1,
                ls="--",
                label=f"±Δ margin ({_g(margin)} {margin_unit})",
            )
        )
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=7.5, frameon=False)
    fig.subplots_adjust(
        left=0.25,
        right=0.83,
        top=1 - 0.42 / fig.get_figheight(),
        bottom=0.5 / fig.get_figheight(),
        hspace=1.1,
    )
    return _png(fig)


def _ci_row(ax: Axes, k: Mapping[str, Any], *, margin: float, relative: bool, alpha: float) -> None:
    primary = k["role"] == "primary"
    in_pct = k["ci_pct_low"] is not None and (relative or not primary)
    if in_pct:
        est, ci, ci2 = (
            k["difference_pct"],
            (k["ci_pct_low"], k["ci_pct_high"]),
            (k["ci_2alpha_pct_low"], k["ci_2alpha_pct_high"]),
        )
        unit = "%"
    else:
        est, ci, ci2 = k["difference"], (k["ci_low"], k["ci_high"]), (k["ci_2alpha_low"], k["ci_2alpha_high"])
        unit = k["unit"]
    colour = WORD_COLOURS.get(k["word"], "black")
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    label = f"{k['kpi']}\n({'primary' if primary else 'secondary'}, {k['direction']} is better)"
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7.5)
    ax.text(
        1.02, 0.5, k["word"], transform=ax.transAxes, color=colour, fontsize=9, fontweight="bold", va="center"
    )
    ax.axvline(0, color="#888888", lw=0.8)
    xs = [0.0]
    if est is None or ci[0] is None:
        ax.text(
            0.5,
            0.5,
            "not judgeable: no interval",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=8,
            color=WORD_COLOURS["not judgeable"],
        )
        ax.set_xticks([])
        ax.set_ylim(-1, 1)
        return
    if ci2[0] is not None:
        ax.plot(ci2, [0, 0], color=colour, lw=6, alpha=0.45, solid_capstyle="butt")
    ax.plot(ci, [0, 0], color=colour, lw=1.2, marker="|", markersize=10)
    ax.plot([est], [0], "o", color=colour, markersize=5)
    xs += [*ci, est]
    if primary and margin > 0:
        m = margin if relative or not in_pct else None
        if m is not None:
            for x in (-m, m):
                ax.axvline(x, color=FLAG_COLOUR, lw=1, ls="--")
            xs += [-m, m]
    lo, hi = min(xs), max(xs)
    pad = 0.08 * (hi - lo or 1.0)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(-1, 1)
    ax.tick_params(axis="x", labelsize=7)
    if in_pct:
        text = f"{est:+.1f} % ({ci[0]:+.1f} to {ci[1]:+.1f} %)".replace("-", "−")
    else:
        text = f"{_g(est)} ({_g(ci[0])} to {_g(ci[1])}) {unit}"
    ax.set_xlabel(f"difference, + is better [{unit}]:  {text} at {100 * (1 - alpha):g} %", fontsize=7)


# -- the runs' values ---------------------------------------------------------------------------------
def dot_plot(runs: Sequence[Mapping[str, Any]], kpis: Sequence[Mapping[str, Any]]) -> bytes:
    """Each judged KPI's run values, baseline vs trial (rows of verdict_runs, set "judged"): counted runs
    filled, excluded runs hollow, runs that make the KPI not judgeable as red crosses; a bar at each group's
    mean of the counted runs."""
    names = [k["kpi"] for k in kpis]
    cols = min(3, len(names))
    rows_n = math.ceil(len(names) / cols)
    fig = Figure(figsize=(WIDTH_IN, 0.4 + 2.3 * rows_n))
    axes = fig.subplots(rows_n, cols, squeeze=False).ravel()
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    for ax, k in zip(axes, kpis, strict=False):
        mine = [r for r in runs if r["kpi"] == k["kpi"]]
        labels: list[str] = []
        for x, group, colour in ((0, "baseline", BASELINE_COLOUR), (1, "trial", TRIAL_COLOUR)):
            pts = [r for r in mine if r["group"] == group]
            offsets = _spread(len(pts))
            counted = []
            for off, r in zip(offsets, pts, strict=True):
                if r["value"] is None:
                    continue
                if r["excluded"] is not None:
                    ax.plot(x + off, r["value"], "o", mfc="white", mec="#999999", markersize=5)
                elif r["problem"] is not None:
                    ax.plot(x + off, r["value"], "x", color=FLAG_COLOUR, markersize=6)
                else:
                    ax.plot(x + off, r["value"], "o", color=colour, markersize=4.5, alpha=0.85)
                    counted.append(r["value"])
            if counted:
                m = sum(counted) / len(counted)
                ax.plot([x - 0.28, x + 0.28], [m, m], color=colour, lw=1.6)
            elif not pts and group == "baseline" and k.get("mean_baseline") is not None:
                # the baseline as aggregates (a pack for a startup or a partner): its mean only
                m = k["mean_baseline"]
                ax.plot([x - 0.28, x + 0.28], [m, m], color=colour, lw=1.6)
                labels.append(f"baseline\nmean of {k['n_baseline']}")
                continue
            no_value = sum(1 for r in pts if r["value"] is None and r["excluded"] is None)
            if no_value:
                ax.annotate(
                    f"{no_value} without\na value",
                    (x, 0.03),
                    xycoords=("data", "axes fraction"),
                    ha="center",
                    fontsize=6,
                    color=FLAG_COLOUR,
                )
            labels.append(f"{group}\n{len(counted)} counted")
        ax.set_xticks([0, 1], labels, fontsize=7)
        ax.set_xlim(-0.6, 1.6)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(k["kpi"], fontsize=8)
        ax.set_ylabel(k["unit"] or "(no unit)", fontsize=7)
        ax.margins(y=0.15)
        for side in ("right", "top"):
            ax.spines[side].set_visible(False)
    handles = [
        Line2D([], [], color=BASELINE_COLOUR, marker="o", lw=0, markersize=4.5, label="counted"),
        Line2D([], [], color="#999999", mfc="white", marker="o", lw=0, markersize=5, label="excluded"),
        Line2D([], [], color=FLAG_COLOUR, marker="x", lw=0, markersize=6, label="not usable"),
        Line2D([], [], color=BASELINE_COLOUR, lw=1.6, label="mean of counted runs"),
    ]
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=7.5, frameon=False)
    fig.subplots_adjust(
        left=0.09, right=0.98, top=1 - 0.45 / fig.get_figheight(), bottom=0.12, wspace=0.45, hspace=0.55
    )
    return _png(fig)


def _spread(n: int) -> list[float]:
    """Deterministic horizontal offsets for n points of one group, within ±0.18."""
    if n <= 1:
        return [0.0] * n
    return [-0.18 + 0.36 * i / (n - 1) for i in range(n)]


# -- the baseline's individuals chart -----------------------------------------------------------------
def individuals_chart(
    points: Sequence[Mapping[str, Any]], trial: Sequence[Mapping[str, Any]], unit: str
) -> bytes:
    """The baseline's individuals chart (rows of the stability table): values in start order, the centre
    line and the natural process limits, points outside the limits in red and points of a trend in orange;
    the trial runs' values after them (not part of the limits), for comparison."""
    fig = Figure(figsize=(WIDTH_IN, 3.1))
    ax = fig.subplots()
    p0 = points[0]
    n = len(points)
    xb = list(range(1, n + 1))
    ax.plot(xb, [p["value"] for p in points], "-", color=BASELINE_COLOUR, lw=0.8)
    for x, p in zip(xb, points, strict=True):
        colour = FLAG_COLOUR if p["outside"] else TREND_COLOUR if p["trend"] else BASELINE_COLOUR
        ax.plot(x, p["value"], "o", color=colour, markersize=5 if colour != BASELINE_COLOUR else 4)
    xt = list(range(n + 2, n + 2 + len(trial)))
    if trial:
        ax.axvline(n + 1, color="#bbbbbb", lw=0.8, ls=":")
        ax.plot(xt, [t["value"] for t in trial], "D", mfc="white", mec=TRIAL_COLOUR, markersize=5)
    right = (xt[-1] if xt else n) + 0.5
    for y, style, text in (
        (p0["upper"], "--", "upper limit"),
        (p0["centre"], "-", "centre"),
        (p0["lower"], "--", "lower limit"),
    ):
        ax.plot([0.5, n + 0.5], [y, y], style, color="#666666" if style == "-" else FLAG_COLOUR, lw=0.9)
        ax.text(n + 0.55, y, f" {text} {_g(y)}", va="center", fontsize=6.5, color="#444444")
    labels = short_ids([p["run"] for p in points] + [t["run"] for t in trial])
    ticks = xb + xt
    names = [labels[p["run"]] for p in points] + [labels[t["run"]] for t in trial]
    ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=6.5)
    ax.set_xlim(0.3, right + (2.2 if not trial else 0.3))
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel(f"{p0['kpi']} [{unit}]" if unit else p0["kpi"], fontsize=7.5)
    ax.margins(y=0.12)
    for side in ("right", "top"):
        ax.spines[side].set_visible(False)
    handles = [
        Line2D([], [], color=BASELINE_COLOUR, marker="o", markersize=4, lw=0.8, label="baseline run"),
        Line2D([], [], color=FLAG_COLOUR, marker="o", markersize=5, lw=0, label="outside the limits"),
        Line2D([], [], color=TREND_COLOUR, marker="o", markersize=5, lw=0, label="trend of six"),
    ]
    if trial:
        handles.append(
            Line2D(
                [],
                [],
                color=TRIAL_COLOUR,
                mfc="white",
                marker="D",
                markersize=5,
                lw=0,
                label="trial run (not in the limits)",
            )
        )
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 1.16),
        ncol=len(handles),
        fontsize=7,
        frameon=False,
    )
    fig.subplots_adjust(left=0.1, right=0.97, top=0.86, bottom=0.3)
    return _png(fig)
