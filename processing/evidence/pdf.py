"""Drawing: the evidence pack's PDF, from the gathered tables and the verdict's JSON only.

Pages: the title page (trial, host plant equipment, startup, product, the verdict word and its reason, the
charter version and SHA-256, when and by which BioPilot version it was generated, a loud notice when the
charter changed after the first trial run started); 1 the charter and its history; 2 the verdict per KPI
(intervals against the margin, the runs' values); 3 the runs and the judged KPIs with coverage and flags;
4 the baseline's stability; 5 money (ranges only); 6 exclusions and the verdict without them; 7 the data
sources and the files of the pack; appendix: every KPI of every run (landscape). Every page has its
number and a footer with the trial id and how to verify the pack (processing.evidence.document).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace

from processing.evidence import charts
from processing.evidence.document import (
    GREY,
    RED,
    SANS,
    Document,
    coverage,
    interval,
    num,
    pct,
    pval,
    rgb,
    when,
)
from processing.evidence.tables import MONEY_RANGES, Table


# -- the pages ----------------------------------------------------------------------------------------
def render(
    tables: Mapping[str, Table],
    verdict: Mapping[str, Any],
    *,
    trial_id: str,
    site: str,
    charter: Mapping[str, Any],
    generated: datetime,
    biopilot_version: str,
    data_files: Sequence[tuple[str, str, int]],
) -> bytes:
    """The PDF's bytes. charter: the judged charter as JSON (biopilot.charter model dump); data_files:
    (path, SHA-256, bytes) of the pack's other files, listed on the data-sources page."""
    doc = Document(trial_id, generated)
    _title(doc, tables, verdict, trial_id, site, charter, generated, biopilot_version)
    _charter(doc, tables, charter)
    _verdict(doc, tables, verdict)
    _runs(doc, tables, verdict)
    _stability(doc, tables, verdict)
    _money(doc, tables, verdict)
    _exclusions(doc, tables, verdict)
    _sources(doc, tables, data_files)
    _appendix(doc, tables)
    return bytes(doc.output())


def _title(
    doc: Document,
    tables: Mapping[str, Table],
    v: Mapping[str, Any],
    trial_id: str,
    site: str,
    c: Mapping[str, Any],
    generated: datetime,
    version: str,
) -> None:
    doc.add_page()
    doc.set_font(SANS, size=9)
    doc.set_text_color(*GREY)
    doc.cell(0, 5, "BioPilot · evidence pack of a pilot trial", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    doc.set_text_color(0, 0, 0)
    doc.set_font(SANS, "B", 20)
    doc.multi_cell(0, 9, c["title"], new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L")
    doc.set_font(SANS, size=11)
    doc.multi_cell(0, 6, f"Trial {trial_id}", new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L")
    doc.ln(3)
    primary = v["primary"]
    counted_t = sum(1 for r in primary["runs"] if r["group"] == "trial" and r["excluded"] is None)
    counted_b = sum(1 for r in primary["runs"] if r["group"] == "baseline" and r["excluded"] is None)
    if not any(r["group"] == "baseline" for r in primary["runs"]):  # the baseline as aggregates
        counted_b = primary["n_baseline"]
    margin = f"{num(c['margin'])} {c['margin_unit']}"
    doc.kv(
        [
            ("Host plant", site or "—"),
            ("Equipment", c["equipment"]),
            ("Startup", c["startup"]),
            ("Product", c["product"]),
            ("Primary KPI", f"{c['primary_kpi']} ({c['direction']} is better)"),
            (
                "Hypothesis",
                f"{c['hypothesis'].replace('_', '-')}, margin Δ = {margin}, α = {num(c['alpha'])}",
            ),
            (
                "Runs",
                f"{counted_t} trial runs (planned {c['planned_runs']}) against {counted_b} baseline runs",
            ),
        ]
    )
    doc.ln(2)
    if v["charter_changed_after_start"]:
        versions = tables["charter_versions"].records()
        judged = next((r for r in versions if r["judged"]), None)
        made = f", made {when(judged['at'])}" if judged else ""
        doc.notice(
            "THE CHARTER WAS CHANGED AFTER THE FIRST TRIAL RUN STARTED. This verdict uses charter version "
            f"{v['charter_version']}{made}; judge the trial against the version locked before it (section 1)."
        )
    else:
        first = [r for r in tables["charter_versions"].records() if r["after_first_trial_start"]]
        if first and first[0]["version"] == min(r["version"] for r in tables["charter_versions"].records()):
            doc.notice("THE CHARTER WAS LOCKED AFTER THE FIRST TRIAL RUN STARTED (section 1).")
    colour = rgb(charts.WORD_COLOURS.get(v["word"], "#000000"))
    doc.set_font(SANS, size=10)
    doc.set_text_color(*GREY)
    doc.cell(0, 6, "Verdict", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    doc.set_text_color(*colour)
    doc.set_font(SANS, "B", 40)
    doc.cell(0, 18, v["word"].upper(), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    doc.set_text_color(0, 0, 0)
    doc.set_font(SANS, size=11)
    doc.multi_cell(0, 5.5, v["reason"] + ".", new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L")
    doc.ln(3)
    others = [w for w in v["warnings"] if not w.startswith("THE CHARTER WAS CHANGED")]
    if others:
        doc.para("Read with it:", size=9, style="B")
        doc.bullets(others)
    doc.ln(2)
    n_versions = len(tables["charter_versions"].rows)
    doc.kv(
        [
            ("Charter", f"version {v['charter_version']} of {n_versions}"),
            ("Charter SHA-256", v["charter_sha256"]),
            ("Generated", f"{when(generated)} by BioPilot {version}"),
            ("Verify", "biopilot report verify DIR  (every file's SHA-256 is in manifest.json)"),
        ],
        mono=("Charter SHA-256",),
    )
    doc.ln(2)
    doc.para("Contents", size=9, style="B")
    doc.set_font(SANS, size=8.5)
    for line in (
        "1  The charter and its history",
        "2  The verdict per KPI",
        "3  The runs and their KPIs",
        "4  The baseline's stability",
        "5  Money",
        "6  Exclusions",
        "7  Data sources and the files of this pack",
        "A  Appendix: every KPI of every run",
    ):
        doc.cell(0, 4.5, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _charter(doc: Document, tables: Mapping[str, Table], c: Mapping[str, Any]) -> None:
    doc.add_page()
    doc.h1("1  The charter and its history")
    doc.para(
        "The charter fixes, before the first trial run, what the trial is judged on. It is identified by the "
        "SHA-256 of its canonical JSON (charter/v<N>.json in this pack); any change of meaning makes a new "
        "version with a written reason."
    )
    secondary = ", ".join(f"{s['kpi']} ({s['direction']} is better)" for s in c["secondary_kpis"])
    secondary = f"{secondary} (Holm-corrected)" if secondary else "none"
    if c["baseline"] is not None:
        b = c["baseline"]
        baseline = (
            f"rule: {b['equipment']}, {b['product']}, kind {b['kind']}, started from {b['start']} to "
            f"{b['end']}"
        )
    else:
        baseline = ", ".join(c["baseline_runs"])
    doc.h2("The judged version")
    doc.kv(
        [
            ("Primary KPI", f"{c['primary_kpi']}, {c['direction']} is better"),
            ("Hypothesis", c["hypothesis"].replace("_", "-")),
            ("Margin Δ", f"{num(c['margin'])} {c['margin_unit']}"),
            ("α", num(c["alpha"])),
            ("Planned trial runs", str(c["planned_runs"])),
            ("Minimum coverage", f"{100 * c['min_coverage']:g} % of a run's inputs"),
            ("Secondary KPIs", secondary),
            ("Baseline runs", baseline),
            ("Trial runs", ", ".join(c["trial_runs"]) or "none listed"),
        ],
        size=8,
    )
    doc.h2("Versions")
    rows = []
    for r in tables["charter_versions"].records():
        notes = []
        if r["judged"]:
            notes.append("used by this verdict")
        if r["after_first_trial_start"]:
            notes.append("MADE AFTER THE FIRST TRIAL RUN STARTED")
        reason = r["reason"] or "first lock"
        rows.append(
            [str(r["version"]), f"{when(r['at'])}\n{r['by'] or '—'}", r["sha256"], reason, "; ".join(notes)]
        )
    records = tables["charter_versions"].records()
    doc.grid(
        ["ver.", "made (UTC), by", "SHA-256", "reason", "note"],
        rows,
        [5, 18, 34, 26, 17],
        mono=(2,),
        styles=lambda i, j: (
            FontFace(color=RED, emphasis="B") if j == 4 and records[i]["after_first_trial_start"] else None
        ),
    )


def _verdict(doc: Document, tables: Mapping[str, Table], v: Mapping[str, Any]) -> None:
    doc.add_page()
    doc.h1("2  The verdict per KPI")
    kpis = [r for r in tables["verdict_kpis"].records() if r["set"] == "judged"]
    alpha = v["alpha"]
    lvl, lvl2 = f"{100 * (1 - alpha):g} %", f"{100 * (1 - 2 * alpha):g} %"
    doc.para(
        f"Differences are signed so that + is better. The primary KPI is judged {_scale(v)}; its word stands "
        "only when Welch's interval and the exact permutation test agree. Secondary KPIs are Holm-corrected."
    )
    word_style = lambda i, j: (  # noqa: E731
        FontFace(color=rgb(charts.WORD_COLOURS.get(kpis[i]["word"], "#000000")), emphasis="B")
        if j == 2
        else None
    )
    doc.grid(
        ["KPI", "role", "word", "trial runs: mean", "baseline runs: mean", "unit"],
        [
            [
                _breakable(k["kpi"]),
                k["role"],
                k["word"],
                _mean(k["n_trial"], k["mean_trial"]),
                _mean(k["n_baseline"], k["mean_baseline"]),
                k["unit"] or "—",
            ]
            for k in kpis
        ],
        [30, 13, 14, 17, 17, 9],
        styles=word_style,
    )
    doc.grid(
        [
            "KPI",
            "difference",
            f"{lvl} interval",
            f"{lvl2} interval",
            "p Welch",
            "p permutation",
            "Hedges' g",
            "MDE",
        ],
        [
            [
                _breakable(k["kpi"]),
                f"{num(k['difference'])} ({pct(k['difference_pct'])})"
                if k["difference"] is not None
                else "—",
                _both(k, "ci"),
                _both(k, "ci_2alpha"),
                _p_cell(k["p_welch"], k["p_welch_holm"]),
                _p_cell(k["p_permutation"], k["p_permutation_holm"])
                + (
                    f"\n{k['permutation_method']}, {k['permutation_count']}"
                    if k["permutation_method"]
                    else ""
                ),
                f"{num(k['hedges_g'], 3)}\n[{num(k['hedges_g_ci_low'], 3)}, {num(k['hedges_g_ci_high'], 3)}]"
                if k["hedges_g"] is not None
                else "—",
                f"±{k['mde_pct']:.1f} %"
                if k["mde_pct"] is not None
                else (f"±{num(k['mde'])}" if k["mde"] else "—"),
            ]
            for k in kpis
        ],
        [25, 17, 21, 21, 10, 15, 12, 9],
        size=7,
    )
    tost = (
        f" TOST p of the equivalence: {pval(kpis[0]['p_tost'])}." if v["hypothesis"] == "equivalence" else ""
    )
    doc.para(
        "p-values are two-sided against no difference on the judged scale; for secondary KPIs the "
        "Holm-corrected p follows in brackets. MDE: the smallest true difference the design detects "
        "with power "
        f"{num(kpis[0]['mde_power'])}.{tost}",
        size=7.5,
        colour=GREY,
    )
    doc.figure(
        charts.ci_chart(kpis, margin=v["margin"], margin_unit=v["margin_unit"], alpha=alpha),
        f"Intervals against the margin ({lvl} thin, {lvl2} thick)",
    )
    runs = [r for r in tables["verdict_runs"].records() if r["set"] == "judged"]
    doc.figure(charts.dot_plot(runs, kpis), "The runs' values, trial against baseline")
    doc.h2("What each word rests on")
    doc.bullets([k["reason"] + "." for k in kpis], size=8)


def _mean(n: int, mean: float | None) -> str:
    return "—" if mean is None else f"n = {n}: {num(mean)}"


def _both(k: Mapping[str, Any], key: str) -> str:
    """An interval in % and in the KPI's unit, on two lines."""
    lines = [
        interval(k[f"{key}_pct_low"], k[f"{key}_pct_high"], as_pct=True),
        interval(k[f"{key}_low"], k[f"{key}_high"], k["unit"]),
    ]
    lines = [line for line in lines if line != "—"]
    return "\n".join(lines) or "—"


def _scale(v: Mapping[str, Any]) -> str:
    if v["margin_unit"] == "%":
        return "on the ratio trial / baseline (Welch's t on the logs, the interval back-transformed to %)"
    return f"on the difference of means in {v['margin_unit']}"


def _p_cell(p: float | None, holm: float | None) -> str:
    return pval(p) + (f" ({pval(holm)})" if holm is not None else "")


def _runs(doc: Document, tables: Mapping[str, Table], v: Mapping[str, Any], per_table: int = 6) -> None:
    """The runs (full ids, start, origin, exclusion), then the judged KPIs as runs × KPIs (at most
    `per_table` KPIs a table): value, coverage under it when below 100 %, a mark for flags, NOT USABLE for
    a value the verdict cannot use; what each mark means is listed under the table."""
    doc.add_page()
    doc.h1("3  The runs and their KPIs")
    runs = tables["runs"].records()
    doc.grid(
        ["run", "group", "start", "origin", "counted"],
        [
            [
                r["run"],
                r["group"],
                when(r["start"]),
                r["origin"] or "unknown",
                "excluded: " + r["excluded"] if r["excluded"] else "yes",
            ]
            for r in runs
        ],
        [34, 10, 18, 10, 28],
        styles=lambda i, j: FontFace(color=GREY, emphasis="I") if j == 4 and runs[i]["excluded"] else None,
    )
    kpis = [k for k in tables["verdict_kpis"].records() if k["set"] == "judged"]
    values = {(r["run"], r["kpi"]): r for r in tables["verdict_runs"].records() if r["set"] == "judged"}
    ids = [r["run"] for r in runs]
    prefix, labels = charts.common_prefix(ids), charts.short_ids(ids, width=60)
    doc.h2("The judged KPIs of each run")
    doc.para(
        f"Each judged KPI's value in its unit (primary: {kpis[0]['kpi']}). Under a value, its "
        "coverage when it "
        "is below 100 %; * marks flags, listed under the table with the reason a value is NOT USABLE (the "
        "KPI is then not judgeable). Excluded runs are in grey."
        + (f" Every run id begins with {prefix}" if prefix else ""),
        size=8,
    )
    excluded = {r["run"] for r in runs if r["excluded"]}
    size = math.ceil(len(kpis) / math.ceil(len(kpis) / per_table))
    for chunk in [kpis[i : i + size] for i in range(0, len(kpis), size)]:
        rows, cells, notes = [], [], []
        for r in runs:
            row, kinds = [_breakable(labels[r["run"]]), r["group"]], ["", ""]
            for k in chunk:
                text, kind, note = _kpi_cell(values.get((r["run"], k["kpi"])))
                row.append(text)
                kinds.append(kind)
                if note:
                    notes.append(f"{labels[r['run']]} · {k['kpi']}: {note}")
            rows.append(row)
            cells.append(kinds)

        def style(i: int, j: int, cells: list[list[str]] = cells) -> FontFace | None:
            if cells[i][j] == "bad":
                return FontFace(color=RED, emphasis="B")
            if runs[i]["run"] in excluded:
                return FontFace(color=(150, 150, 150), emphasis="I")
            if cells[i][j] == "flag":
                return FontFace(color=(150, 80, 0))
            return None

        doc.grid(
            ["run", "group", *[f"{_breakable(k['kpi'])}\n[{k['unit'] or '—'}]" for k in chunk]],
            rows,
            [24, 10, *[16] * len(chunk)],
            size=7,
            align=["L", "L", *["R"] * len(chunk)],
            styles=style,
            width=min(doc.epw, doc.epw * (34 + 16 * len(chunk)) / (34 + 16 * per_table)),
        )
        if notes:
            doc.bullets(notes, size=7)
    doc.para(
        "Every KPI of every run is in the appendix and in data/kpis.csv; each KPI's inputs and how "
        "much of the "
        "run each covered are in data/kpi_inputs.csv.",
        size=7.5,
        colour=GREY,
    )


def _breakable(name: str) -> str:
    """A KPI name or run id that may wrap after its separators (a zero-width space after each '_', '-',
    ':', '/' and '.')."""
    for sep in "_-:/.":
        name = name.replace(sep, sep + "\u200b")
    return name


def _kpi_cell(r: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """(cell text, kind "" | "flag" | "bad", the note under the table)."""
    if r is None:
        return "—", "", ""
    text = num(r["value"])
    if r["coverage"] is not None and r["coverage"] < 1:
        text += f"\n{coverage(r['coverage'])}"
    flags = r["flags"].replace(";", ", ")
    bad = r["problem"] is not None and r["excluded"] is None
    if bad:
        return (
            text + "\nNOT USABLE",
            "bad",
            f"NOT USABLE: {r['problem']}" + (f" (flags: {flags})" if flags else ""),
        )
    if flags:
        return text + " *", "flag", f"flags: {flags}"
    return text, "", ""


def _stability(doc: Document, tables: Mapping[str, Table], v: Mapping[str, Any]) -> None:
    doc.add_page()
    s = v["baseline_stability"]
    doc.h1("4  The baseline's stability")
    doc.para(
        f"An individuals chart of the primary KPI ({s['kpi']}) over the counted baseline runs in "
        "start order: "
        "centre line at the mean, natural process limits at the mean ± 2.66 × the mean moving range "
        "(Wheeler & "
        "Chambers 1992). A run outside the limits, or six runs rising or falling in a row, is flagged: the "
        "baseline may have jumped or drifted, and the comparison with it is then in doubt."
    )
    points = tables["stability"].records()
    if not points and s.get("centre") is not None:  # a pack with the baseline as aggregates
        verdict_line = "stable: no run outside the limits, no trend" if s["stable"] else "NOT STABLE"
        doc.kv(
            [
                ("Centre, limits", f"{num(s['centre'])}; {num(s['lower'])} to {num(s['upper'])}"),
                ("Mean moving range", f"{num(s['mr_bar'])} (upper limit {num(s['mr_upper'])})"),
                (
                    "Baseline span",
                    f"{when(_time(s['first_start']))} to {when(_time(s['last_start']))} "
                    f"({num(s['span_days'], 3)} days)",
                ),
                ("Finding", verdict_line),
            ],
            size=8,
        )
        doc.para(
            "This pack shows the baseline as aggregates: the single baseline runs and their values are not "
            "in it (the host plant's pack has them)."
        )
        return
    if not points:
        doc.para("Fewer than two baseline runs count: no chart.", style="B")
        return
    unit = next((k["unit"] for k in tables["verdict_kpis"].records() if k["kpi"] == s["kpi"]), "")
    trial = [
        r
        for r in tables["verdict_runs"].records()
        if r["set"] == "judged" and r["kpi"] == s["kpi"] and r["group"] == "trial" and r["value"] is not None
    ]
    trial.sort(key=lambda r: (r["start"], r["run"]))
    doc.figure(charts.individuals_chart(points, trial, unit))
    p0 = points[0]
    verdict_line = "stable: no run outside the limits, no trend" if s["stable"] else "NOT STABLE"
    doc.kv(
        [
            (
                "Centre, limits",
                f"{num(p0['centre'])}; {num(p0['lower'])} to {num(p0['upper'])} {unit}".strip(),
            ),
            ("Mean moving range", f"{num(p0['mr_bar'])} (upper limit {num(p0['mr_upper'])})"),
            (
                "Baseline span",
                f"{when(_time(s['first_start']))} to {when(_time(s['last_start']))} "
                f"({num(s['span_days'], 3)} days)",
            ),
            ("Finding", verdict_line),
        ],
        size=8,
    )
    msgs = [w for w in v["warnings"] if w.startswith(("baseline run", "the baseline's"))]
    if msgs:
        doc.bullets(msgs)
    doc.grid(
        ["#", "run", "start", "value", "moving range", "flag"],
        [
            [
                str(p["order"]),
                p["run"],
                when(p["start"]),
                num(p["value"]),
                num(p["moving_range"]),
                "outside the limits" if p["outside"] else "trend" if p["trend"] else "",
            ]
            for p in points
        ],
        [4, 34, 20, 11, 11, 14],
        align=["R", "L", "L", "R", "R", "L"],
        styles=lambda i, j: (
            FontFace(color=RED, emphasis="B")
            if j == 5 and (points[i]["outside"] or points[i]["trend"])
            else None
        ),
    )


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _money(doc: Document, tables: Mapping[str, Table], v: Mapping[str, Any]) -> None:
    doc.add_page()
    doc.h1("5  Money")
    m = v["money"]
    if m is None:
        doc.para("The charter prices nothing: no money assessment.", style="B")
        return
    doc.para(
        "Cost per kg of product per run = Σ (each priced amount of the run × its price) / the run's product. "
        "Aggregates are shown only as ranges: the interval at the charter's 1 − α with the estimate "
        "inside it. "
        "A range is what the trial supports; a single number would claim more than it knows."
    )
    doc.h2("Ranges")
    ranges = tables["money_ranges"].records()
    if ranges:
        doc.grid(
            ["quantity", "range", "estimate inside it", "level", "note"],
            [
                [
                    MONEY_RANGES[r["quantity"]],
                    _range(r),
                    f"{num(r['estimate'])} {r['unit']}",
                    f"{100 * r['level']:g} %",
                    r["note"],
                ]
                for r in ranges
            ],
            [24, 32, 16, 7, 21],
            styles=lambda i, j: FontFace(emphasis="B") if j == 1 else None,
        )
    if m["reason"]:
        doc.para(f"No range: {m['reason']}.", style="B")
    if m["payback_years"] is None and m["quote"] is not None and m["annual_savings"] is not None:
        doc.para("Payback: the savings' high end is not above 0, so the quoted price is never paid back.")
    doc.h2("Prices and figures, each with its source")
    inputs = tables["money_inputs"].records()
    doc.grid(
        ["item", "value", "KPI priced", "source"],
        [[r["item"], f"{num(r['value'])} {r['unit']}", r["kpi"] or "—", r["source"]] for r in inputs],
        [18, 16, 18, 48],
    )
    if m["not_priced"]:
        doc.para(f"Not priced (left out, not taken as 0): {', '.join(m['not_priced'])}.", size=8)
    doc.h2("Cost of each counted run")
    parts = tables["money_parts"].records()
    costs = tables["money_runs"].records()
    components = list(dict.fromkeys(p["component"] for p in parts))
    by_run = {(p["run"], p["component"]): p["eur"] for p in parts}
    doc.grid(
        [
            "run",
            "group",
            *[c.replace("substrate:", "").replace("_", " ") + " €" for c in components],
            "total €",
            "product kg",
            "€/kg",
        ],
        [
            [
                r["run"],
                r["group"],
                *[num(by_run.get((r["run"], c))) for c in components],
                num(r["eur"]),
                num(r["product_kg"]),
                num(r["eur_per_kg"]),
            ]
            for r in costs
        ],
        [26, 9, *[11] * len(components), 10, 9, 8],
        size=6.5,
        align=["L", "L", *["R"] * (len(components) + 3)],
    )
    missing = [f"{r['run']}: {r['missing']}" for r in costs if r["missing"]]
    if missing:
        doc.para("Runs without a cost:", size=8, style="B")
        doc.bullets(missing, size=7.5)


def _range(r: Mapping[str, Any]) -> str:
    high = "unbounded" if r["high"] is None else num(r["high"])
    return f"{num(r['low'])} to {high} {r['unit']}"


def _exclusions(doc: Document, tables: Mapping[str, Table], v: Mapping[str, Any]) -> None:
    doc.add_page()
    doc.h1("6  Exclusions")
    ex = tables["exclusions"].records()
    if not ex:
        doc.para("No run was excluded: the verdict counts every trial and baseline run.")
        return
    doc.para(
        "A run is left out only with a written reason, recorded with who and when. The verdict with "
        "every run "
        "counted is shown beside it, so the exclusions can be judged too."
    )
    doc.grid(
        ["run", "reason", "by", "when"],
        [[e["run"], e["reason"], e["by"] or "—", when(e["at"])] for e in ex],
        [27, 34, 25, 14],
    )
    w = v["without_exclusions"]
    if w is None:
        return
    doc.h2("With every run counted")
    colour = rgb(charts.WORD_COLOURS.get(w["word"], "#000000"))
    doc.para(w["word"].upper(), size=16, style="B", colour=colour)
    doc.para(w["reason"] + ".")
    both = {(k["set"], k["kpi"]): k for k in tables["verdict_kpis"].records()}
    rows = []
    for name in [k["kpi"] for k in (v["primary"], *v["secondary"])]:
        for s in ("judged", "every_run"):
            k = both.get((s, name))
            if k is None:
                continue
            rows.append(
                [
                    name if s == "judged" else "",
                    "as judged" if s == "judged" else "every run",
                    k["word"],
                    f"{k['n_trial']} / {k['n_baseline']}",
                    pct(k["difference_pct"]),
                    interval(k["ci_pct_low"], k["ci_pct_high"], as_pct=True),
                    pval(k["p_welch"]),
                    pval(k["p_permutation"]),
                ]
            )
    doc.grid(
        [
            "KPI",
            "runs",
            "word",
            "n trial / baseline",
            "difference",
            f"{100 * (1 - v['alpha']):g} % interval",
            "p Welch",
            "p perm.",
        ],
        rows,
        [26, 12, 13, 11, 11, 20, 8, 8],
        size=7,
    )


def _sources(doc: Document, tables: Mapping[str, Table], data_files: Sequence[tuple[str, str, int]]) -> None:
    doc.add_page()
    doc.h1("7  Data sources and the files of this pack")
    runs = tables["runs"].records()
    versions: dict[str, set[str]] = {}
    for k in tables["kpis"].records():
        versions.setdefault(k["run"], set()).add(k["kpi_version"] or "—")
    doc.h2("Where each run's data came from")
    doc.grid(
        ["run", "origin", "site config SHA-256", "BioPilot", "KPI code", "files"],
        [
            [
                r["run"],
                r["origin"] or "unknown",
                r["site_config_sha256"] or "—",
                r["biopilot_version"] or "—",
                ", ".join(sorted(versions.get(r["run"], {"—"}))),
                str(r["imported_files"] or 0),
            ]
            for r in runs
        ],
        [28, 9, 36, 9, 9, 6],
        size=7,
        mono=(2,),
    )
    imports = tables["imports"].records()
    if imports:
        doc.h2("Imported files (historian exports)")
        doc.grid(
            ["run", "file", "SHA-256 of the file", "rows", "imported"],
            [[i["run"], i["file"], i["sha256"], str(i["rows"]), when(i["imported"])] for i in imports],
            [24, 20, 36, 7, 13],
            size=7,
            mono=(2,),
        )
    doc.h2("The files of this pack")
    doc.para(
        "manifest.json lists every file of the pack with its SHA-256 and size, this PDF included; "
        "manifest.json.sha256 holds the manifest's own SHA-256. `biopilot report verify DIR` checks them all "
        "and names any file changed, missing or added. The data files, by SHA-256:",
        size=8,
    )
    doc.grid(
        ["file", "SHA-256", "bytes"],
        [[p, h, f"{n:,}"] for p, h, n in data_files],
        [30, 60, 10],
        size=6.5,
        mono=(1,),
        align=["L", "L", "R"],
    )


def _appendix(doc: Document, tables: Mapping[str, Table], per_page: int = 10) -> None:
    """Every KPI of every run: KPIs down, runs across (at most `per_page` runs a table, the runs shared
    evenly), landscape; a flagged or under-covered value is marked, its flags listed under the table."""
    kpis = tables["kpis"].records()
    runs = [r["run"] for r in tables["runs"].records()]
    groups = {r["run"]: r["group"] for r in tables["runs"].records()}
    names = sorted({k["kpi"] for k in kpis})
    units = {k["kpi"]: k["unit"] for k in kpis}
    cell = {(k["run"], k["kpi"]): k for k in kpis}
    prefix, labels = charts.common_prefix(runs), charts.short_ids(runs, width=40)
    per_table = math.ceil(len(runs) / max(1, math.ceil(len(runs) / per_page))) if runs else 1
    chunks = [runs[i : i + per_table] for i in range(0, len(runs), per_table)] or [[]]
    for n, chunk in enumerate(chunks):
        doc.add_page(orientation="landscape")
        if n == 0:
            doc.h1("A  Appendix: every KPI of every run")
            doc.para(
                "Values in each KPI's unit. A value marked * has flags, one marked ° covers less "
                "than 99 % of "
                "its inputs, — has no value; the flags of each marked value follow the table."
                + (f" Every run id begins with {prefix}" if prefix else ""),
                size=8,
            )
        else:
            first = n * per_table + 1
            doc.para(
                f"Every KPI of every run, continued (runs {first} to {first + len(chunk) - 1})", style="B"
            )
        rows, notes = [], []
        for name in names:
            row = [_breakable(name), units[name] or ""]
            for run in chunk:
                k = cell.get((run, name))
                if k is None:
                    row.append("")
                    continue
                low = k["coverage"] is not None and k["coverage"] < 0.99
                mark = ("*" if k["flags"] else "") + ("°" if low else "")
                row.append(num(k["value"]) + mark)
                if mark:
                    notes.append(
                        f"{run} · {name}: coverage {coverage(k['coverage'])}"
                        + (f"; {k['flags'].replace(';', ', ')}" if k["flags"] else "")
                    )
            rows.append(row)
        widths = [40, 14, *[21] * len(chunk)]
        doc.grid(
            ["KPI", "unit", *[f"{_breakable(labels[r])}\n{groups[r]}" for r in chunk]],
            rows,
            widths,
            size=6.5,
            align=["L", "L", *["R"] * len(chunk)],
            width=min(doc.epw, sum(widths)),
        )
        if notes:
            doc.para("Marked values:", size=7.5, style="B")
            doc.bullets(notes, size=6.5)
