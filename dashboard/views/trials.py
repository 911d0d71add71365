"""Trials page: the trials the viewer may see; for the chosen one its charter (version, SHA-256, the keys,
its history), the verdict in words with its reason, a confidence-interval chart per KPI against the margin,
the runs (trial against baseline: dots for who may see the baseline run by run, else the baseline's mean
with its confidence band), money as ranges, the baseline's stability (individuals chart), the exclusions,
and the evidence pack download (admins and operators of the baseline's equipment); then the runs with their
KPIs and the host plant's baseline as aggregates only — each KPI's mean with its 95 % confidence interval,
and the envelope of a signal over hours since the start — computed on the server from runs this page never
receives. Every number of the verdict is the one `biopilot verdict TRIAL --json` prints for the viewer."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard.charts import ci_figure, runs_figure, stability_figure
from dashboard.data import PageData, baseline_band

_ENVELOPE_ROLES = ["dissolved_oxygen", "offgas_co2", "feed_rate", "volume", "temperature", "ph"]


def render(data: PageData) -> None:
    st.title("Trials")
    trials = data.trials()
    if not trials:
        st.info(
            "No trials for you to see. An admin creates trials (`biopilot trials create`) and invites "
            "partners to them."
        )
        return
    st.dataframe(
        [
            {
                "trial": t.id,
                "title": t.title,
                "startup": t.startup,
                "equipment": ", ".join(t.equipment),
                "product": t.product or "",
            }
            for t in trials
        ],
        hide_index=True,
        width="stretch",
    )
    chosen = st.selectbox("Trial", [t.id for t in trials], key="trial_choice")
    _charter_and_verdict(data, chosen)
    runs = data.trial_runs(chosen)
    st.subheader("Runs in the trial", anchor=False)
    if runs:
        rows = []
        for run in runs:
            kpis = {k.name: k for k in data.run_kpis(run.id)}
            row = {"run": run.id, "kind": run.kind, "status": "live" if run.is_open else "closed"}
            for name in ("titer", "yield_product_substrate_consumed", "energy.total"):
                k = kpis.get(name)
                row[name] = f"{k.value:.4g}" if k is not None and k.value is not None else ""
            rows.append(row)
        st.dataframe(rows, hide_index=True, width="stretch", key="trial_runs")
    else:
        st.caption("No runs in this trial yet.")

    summary = data.baseline(chosen)
    st.subheader("Baseline (aggregates)", anchor=False)
    if summary is None or summary.n_runs == 0:
        st.caption("No closed baseline runs on this trial's equipment yet.")
        return
    st.caption(
        f"{summary.n_runs} baseline runs on {', '.join(summary.equipment)}"
        + (f", product {summary.product}" if summary.product else "")
        + ". Mean and 95 % confidence interval of each KPI; single runs are not shown."
    )
    st.dataframe(
        [
            {
                "KPI": k.name,
                "unit": k.unit,
                "n": k.n,
                "mean": k.mean,
                "95 % CI": f"{k.ci_low:.4g} – {k.ci_high:.4g}" if k.ci_low is not None else "",
                "flags": ", ".join(k.flags),
            }
            for k in summary.kpis
        ],
        hide_index=True,
        width="stretch",
        key="baseline_kpis",
        column_config={"mean": st.column_config.NumberColumn(format="%.5g")},
    )
    role = st.selectbox("Envelope of", _ENVELOPE_ROLES, key="envelope_role")
    env = data.baseline_envelope(chosen, role)
    if env is None or env.n_runs == 0 or not len(env.hours):
        st.caption("No baseline data for this signal.")
        return
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=env.hours, y=env.upper, mode="lines", line={"width": 0}, showlegend=False))
    fig.add_trace(
        go.Scatter(
            x=env.hours,
            y=env.lower,
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(31,119,180,0.18)",
            name="mean ± 2 sd",
        )
    )
    fig.add_trace(go.Scatter(x=env.hours, y=env.mean, mode="lines", name="mean", line={"color": "#1f77b4"}))
    fig.update_layout(
        height=320,
        margin={"l": 60, "r": 10, "t": 10, "b": 40},
        xaxis_title="hours since start",
        yaxis_title=env.unit,
    )
    st.plotly_chart(fig, key="baseline_envelope")
    st.caption(f"Envelope over {env.n_runs} baseline runs; points covered by fewer runs are left out.")


# -- charter and verdict ----------------------------------------------------------------------------------
def g(v: float | None, digits: int = 4) -> str:
    """A number as the page shows it (and the browser test reads it back): `digits` significant digits."""
    return "—" if v is None else f"{v:.{digits}g}"


def pct(v: float | None) -> str:
    return "—" if v is None else f"{v:+.2f} %"


def interval(p: list[float | None] | None, as_pct: bool = False) -> str:
    if not p or p[0] is None or p[1] is None:
        return "—"
    return f"{pct(p[0])} to {pct(p[1])}" if as_pct else f"{g(p[0])} to {g(p[1])}"


def _charter_and_verdict(data: PageData, trial_id: str) -> None:
    versions = data.charter_versions(trial_id)
    st.subheader("Charter", anchor=False)
    if not versions:
        st.caption(
            f"No charter yet: an admin writes one (`biopilot trials charter-edit {trial_id} --charter FILE`) "
            "and locks it before the first trial run."
        )
        return
    current = versions[-1]
    c = current.charter
    if not current.locked:
        st.warning(
            f"The charter is a draft, not locked: no verdict until it is (`biopilot trials lock {trial_id}`)."
        )
    else:
        st.markdown(
            f"Version **{current.version}**, locked by {current.by} on {current.at:%Y-%m-%d %H:%M} UTC · "
            f"SHA-256 `{current.sha256}`"
        )
    st.table(
        pd.DataFrame(
            [
                ("primary KPI", f"{c.primary_kpi} ({c.direction.value} is better)"),
                ("hypothesis", f"{c.hypothesis.value.replace('_', '-')} by {c.margin:g} {c.margin_unit}"),
                ("α", f"{c.alpha:g}"),
                ("planned trial runs", str(c.planned_runs)),
                (
                    "secondary KPIs",
                    ", ".join(f"{s.kpi} ({s.direction.value})" for s in c.secondary_kpis) or "none",
                ),
                ("minimum coverage", f"{c.min_coverage:g}"),
            ],
            columns=["key", "value"],
        ).set_index("key")
    )
    if len([v for v in versions if v.locked]) > 1:
        st.caption("Charter history")
        st.table(
            pd.DataFrame(
                [
                    {
                        "version": v.version,
                        "at (UTC)": f"{v.at:%Y-%m-%d %H:%M}",
                        "by": v.by,
                        "reason": v.reason,
                    }
                    for v in versions
                    if v.locked
                ]
            ).set_index("version")
        )
    doc = data.verdict(trial_id)
    if doc is None:
        return
    _verdict(doc)
    _runs_and_stability(doc)
    _money(doc.get("money"))
    _exclusions(doc)
    _pack(data, trial_id, doc)


_WORD_BOX = {
    "better": st.success,
    "equivalent": st.success,
    "not worse": st.success,
    "worse": st.error,
    "inconclusive": st.warning,
    "not judgeable": st.warning,
}


def _verdict(doc: dict[str, Any]) -> None:
    st.subheader("Verdict", anchor=False)
    for w in doc["warnings"]:
        if w.startswith("THE CHARTER WAS CHANGED"):
            st.error(w)
    _WORD_BOX.get(doc["word"], st.info)(f"**Verdict: {doc['word']}** — {doc['reason']}")
    st.caption(
        f"By charter version {doc['charter_version']} (SHA-256 {doc['charter_sha256'][:16]}…); the same as "
        "`biopilot verdict --json`."
    )
    kpis = [doc["primary"], *doc["secondary"]]
    rows = [
        ("role", lambda k: k["role"]),
        ("word", lambda k: k["word"]),
        ("unit", lambda k: k["unit"]),
        ("n trial / baseline", lambda k: f"{k['n_trial']} / {k['n_baseline']}"),
        ("mean trial", lambda k: g(k["mean_trial"])),
        ("mean baseline", lambda k: g(k["mean_baseline"])),
        ("difference (better > 0)", lambda k: g(k["difference"])),
        ("difference %", lambda k: pct(k["difference_pct"])),
        (f"CI % ({kpis[0]['ci_level'] * 100:g} %)", lambda k: interval(k["ci_pct"], as_pct=True)),
        ("p Welch", lambda k: g(k["p_welch"], 3)),
        ("p permutation", lambda k: g(k["p_permutation"], 3)),
        ("Hedges g", lambda k: g(k["hedges_g"], 3)),
        ("MDE %", lambda k: g(k["mde_pct"], 3)),
    ]
    st.table(
        pd.DataFrame(
            {k["kpi"]: [cell(k) for _, cell in rows] for k in kpis}, index=[name for name, _ in rows]
        )
    )
    st.plotly_chart(ci_figure(kpis, margin=doc["margin"], margin_unit=doc["margin_unit"]), key="verdict_ci")
    st.caption(
        f"Each KPI's difference from the baseline in % (positive is better) with its "
        f"{doc['primary']['ci_level'] * 100:g} % confidence interval; the line at 0"
        + (
            f" and the charter's margin ±{doc['margin']:g} % (dashed)"
            if doc["margin_unit"] == "%" and doc["margin"] > 0
            else f" (margin {doc['margin']:g} {doc['margin_unit']})"
        )
        + "."
    )
    others = [w for w in doc["warnings"] if not w.startswith("THE CHARTER WAS CHANGED")]
    for w in others:
        st.warning(w)


def _runs_and_stability(doc: dict[str, Any]) -> None:
    primary = doc["primary"]
    band = baseline_band(primary)
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Runs: {primary['kpi']}**")
        st.plotly_chart(runs_figure(primary, band), key="verdict_runs")
        if band is not None and not any(r["group"] == "baseline" for r in primary["runs"]):
            st.caption(
                f"Baseline as aggregates: mean {g(band[0])} with its {primary['ci_level'] * 100:g} % "
                f"confidence interval {g(band[1])} to {g(band[2])} over {primary['n_baseline']} runs."
            )
        else:
            st.caption("Each dot is a run; a cross is an excluded run.")
    with right:
        s = doc["baseline_stability"]
        st.markdown("**Baseline stability (individuals chart)**")
        st.plotly_chart(stability_figure(s, primary["unit"], primary["n_baseline"]), key="verdict_stability")
        span = f"{s['span_days']:.0f} days" if s.get("span_days") is not None else "—"
        state = "stable" if s.get("stable") else "NOT stable"
        st.caption(
            f"{state}: centre {g(s.get('centre'))}, natural process limits {g(s.get('lower'))} to "
            f"{g(s.get('upper'))}; the baseline spans {span}."
        )


def money(v: float) -> str:
    """An amount as the page shows it: whole units with thousands separators from 1 000 on."""
    return f"{v:,.0f}" if abs(v) >= 1000 else g(v)


def _range(r: dict[str, Any] | None) -> str:
    if not r or r.get("low") is None or r.get("high") is None:
        return "—"
    return f"{money(r['low'])} to {money(r['high'])} {r.get('unit', '')}".strip()


def _money(m: dict[str, Any] | None) -> None:
    if not m:
        return
    st.subheader("Money", anchor=False)
    st.table(
        pd.DataFrame(
            [
                ("cost per kg, trial", _range(m.get("cost_trial"))),
                ("cost per kg, baseline", _range(m.get("cost_baseline"))),
                ("saving per kg of product", _range(m.get("saving_per_kg"))),
                ("annual savings", _range(m.get("annual_savings"))),
                ("payback of the quote", _range(m.get("payback_years"))),
            ],
            columns=["", f"range ({m['level'] * 100:g} %)"],
        ).set_index("")
    )
    if m.get("reason"):
        st.caption(m["reason"])
    sources = "; ".join(f"{name}: {p['source']}" for name, p in m.get("prices", {}).items())
    if sources:
        st.caption(f"Prices: {sources}")


def _exclusions(doc: dict[str, Any]) -> None:
    if not doc["exclusions"]:
        return
    st.subheader("Exclusions", anchor=False)
    st.table(pd.DataFrame(doc["exclusions"]).set_index("run"))
    w = doc.get("without_exclusions")
    if w:
        st.caption(f"Without the exclusions (every run counted): {w['word']} — {w['reason']}")


def _pack(data: PageData, trial_id: str, doc: dict[str, Any]) -> None:
    st.subheader("Evidence pack", anchor=False)

    def build() -> bytes:
        pack = data.evidence_pack_zip(trial_id)
        return pack[1] if pack is not None else b""

    st.download_button(
        "Download the evidence pack (PDF, CSV, Parquet, manifest)",
        data=build,
        file_name=f"evidence-{trial_id}.zip",
        mime="application/zip",
        key="evidence_pack",
    )
    if not any(r["group"] == "baseline" for r in doc["primary"]["runs"]):
        st.caption("In your pack the baseline is shown as aggregates, as on this page.")
