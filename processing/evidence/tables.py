"""Gathering: every number an evidence pack shows, as tables (`gather`), written as CSV and Parquet
(`write_csv`, `write_parquet`). The PDF (processing.evidence.pdf) and its charts draw from these tables and
from the verdict's JSON, never from elsewhere, so every number in the PDF is in the data files at full
precision.

The verdict's numbers come from its JSON (processing.verdict.verdict_to_json): a table cell equals the JSON
value exactly (floats written as Python's shortest round-trip repr). Bytes are deterministic: the same inputs
give the same CSV and Parquet files.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from processing.evidence.inputs import EvidenceInputs

_TYPES = {
    "str": pa.string(),
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "time": pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # "str" | "float" | "int" | "bool" | "time" (timezone-aware UTC)
    doc: str


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]

    def records(self) -> list[dict[str, Any]]:
        names = [c.name for c in self.columns]
        return [dict(zip(names, r, strict=True)) for r in self.rows]


def _table(name: str, doc: str, columns: Sequence[tuple[str, str, str]], rows: Iterable[Mapping[str, Any]]):
    cols = tuple(Column(*c) for c in columns)
    out = []
    for row in rows:
        extra = set(row) - {c.name for c in cols}
        if extra:
            raise ValueError(f"table {name}: unknown columns {sorted(extra)}")
        out.append(tuple(_check(name, c, row.get(c.name)) for c in cols))
    return Table(name, doc, cols, tuple(out))


def _check(table: str, c: Column, v: Any) -> Any:
    if v is None:
        return None
    if c.type == "float":
        v = float(v)
        return v if math.isfinite(v) else None
    if c.type == "int":
        return int(v)
    if c.type == "bool":
        return bool(v)
    if c.type == "time":
        v = datetime.fromisoformat(v) if isinstance(v, str) else v
        if v.tzinfo is None:
            raise ValueError(f"table {table}: {c.name} is a naive time")
        return v
    return str(v)


# -- the tables ---------------------------------------------------------------------------------------
def gather(inputs: EvidenceInputs, verdict_json: Mapping[str, Any]) -> dict[str, Table]:
    """Every table of the pack, by name (in the order the PDF shows them)."""
    tables = [
        charter_versions(inputs),
        runs(inputs),
        kpis(inputs),
        kpi_inputs(inputs),
        verdict_kpis(verdict_json),
        verdict_runs(verdict_json),
        stability(verdict_json),
        money_inputs(verdict_json),
        money_runs(verdict_json),
        money_parts(verdict_json),
        money_ranges(verdict_json),
        exclusions(inputs),
        imports(inputs),
    ]
    return {t.name: t for t in tables}


def charter_versions(inputs: EvidenceInputs) -> Table:
    first = inputs.first_trial_start
    return _table(
        "charter_versions",
        "Every version of the trial's charter; charter/v<N>.json is its canonical JSON (SHA-256 of "
        "the bytes)",
        [
            ("version", "int", "version number, 1 = the first lock"),
            ("sha256", "str", "SHA-256 (hex) of the canonical JSON"),
            ("reason", "str", "why this version was made (empty for the first lock)"),
            ("by", "str", "who made it"),
            ("at", "time", "when it was made (UTC)"),
            ("after_first_trial_start", "bool", "made after the first trial run started"),
            ("judged", "bool", "the version the verdict uses"),
        ],
        (
            {
                "version": v.version,
                "sha256": v.sha256,
                "reason": v.reason,
                "by": v.by,
                "at": v.at,
                "after_first_trial_start": first is not None and v.at > first,
                "judged": v.version == inputs.verdict.charter_version,
            }
            for v in inputs.charter_versions
        ),
    )


def runs(inputs: EvidenceInputs) -> Table:
    excluded = {e.run_id: e.reason for e in inputs.exclusions}
    rows = []
    for group, r in inputs.runs:
        s = inputs.source(r.run_id)
        rows.append(
            {
                "run": r.run_id,
                "group": group,
                "start": r.start,
                "origin": s.origin if s else None,
                "site_config_sha256": s.site_config_sha256 if s else None,
                "biopilot_version": s.biopilot_version if s else None,
                "imported_files": len(s.imports) if s else None,
                "excluded": excluded.get(r.run_id),
            }
        )
    return _table(
        "runs",
        "The trial's runs and where their data came from",
        [
            ("run", "str", "run id"),
            ("group", "str", "trial or baseline"),
            ("start", "time", "start of the run (UTC)"),
            ("origin", "str", "live (collected), import (a historian file) or manual; empty when unknown"),
            ("site_config_sha256", "str", "SHA-256 of the site config the run was recorded with"),
            ("biopilot_version", "str", "BioPilot version that recorded the run"),
            ("imported_files", "int", "files imported into the run (see imports)"),
            ("excluded", "str", "the exclusion's written reason; empty when the run counts"),
        ],
        rows,
    )


def kpis(inputs: EvidenceInputs) -> Table:
    rows = [
        {
            "run": r.run_id,
            "group": group,
            "kpi": name,
            "value": k.value,
            "unit": k.unit,
            "coverage": k.coverage,
            "flags": ";".join(k.flags),
            "final": k.final,
            "kpi_version": k.version,
            "computed": k.computed,
        }
        for group, r in inputs.runs
        for name, k in sorted(r.kpis.items())
    ]
    return _table(
        "kpis",
        "Every KPI of every run as the catalog holds it",
        [
            ("run", "str", "run id"),
            ("group", "str", "trial or baseline"),
            ("kpi", "str", "KPI name"),
            ("value", "float", "value in `unit`; empty when it cannot be trusted (see flags)"),
            ("unit", "str", "the KPI's unit"),
            ("coverage", "float", "share of the run covered by the least covered input, 0..1"),
            ("flags", "str", "flags, separated by ';'"),
            ("final", "bool", "final (the run is closed) or provisional"),
            ("kpi_version", "str", "version of the KPI code"),
            ("computed", "time", "when the KPI was computed (UTC)"),
        ],
        rows,
    )


def kpi_inputs(inputs: EvidenceInputs) -> Table:
    rows = [
        {"run": r.run_id, "kpi": name, "input": inp, "coverage": cov}
        for _, r in inputs.runs
        for name, k in sorted(r.kpis.items())
        for inp, cov in sorted(k.inputs.items())
    ]
    return _table(
        "kpi_inputs",
        "The inputs of every KPI of every run and how much of the run each covered",
        [
            ("run", "str", "run id"),
            ("kpi", "str", "KPI name"),
            ("input", "str", "input (a tag or a lab analyte)"),
            ("coverage", "float", "share of the run this input covered, 0..1"),
        ],
        rows,
    )


# the scalar fields of a KPI verdict (processing.verdict.kpi_to_json), then the [low, high] pairs
_KPI_SCALARS = [
    ("kpi", "str", "KPI name"),
    ("role", "str", "primary or secondary"),
    ("unit", "str", "the KPI's unit"),
    ("direction", "str", "higher or lower is better"),
    ("word", "str", "the verdict word for this KPI"),
    ("n_trial", "int", "trial runs counted"),
    ("n_baseline", "int", "baseline runs counted"),
    ("mean_trial", "float", "mean of the trial runs [unit]"),
    ("mean_baseline", "float", "mean of the baseline runs [unit]"),
    ("sd_trial", "float", "standard deviation of the trial runs [unit]"),
    ("sd_baseline", "float", "standard deviation of the baseline runs [unit]"),
    ("difference", "float", "difference, signed so that positive is better [unit]"),
    ("difference_pct", "float", "the difference in % of the baseline (see pct_method)"),
    ("ci_level", "float", "level of ci and ci_pct, 1 − α"),
    ("df_welch", "float", "Welch–Satterthwaite degrees of freedom"),
    ("scale", "str", "log_ratio or difference: the scale of the word and the p-values"),
    ("pct_method", "str", "log_ratio (ratio of geometric means) or baseline_mean"),
    ("p_welch", "float", "Welch's p, two-sided, against no difference"),
    ("p_permutation", "float", "permutation test p, two-sided, against no difference"),
    ("p_tost", "float", "TOST p (equivalence only)"),
    ("p_welch_holm", "float", "Holm-corrected Welch p (secondary KPIs)"),
    ("p_permutation_holm", "float", "Holm-corrected permutation p (secondary KPIs)"),
    ("hedges_g", "float", "Hedges' g on the signed values"),
    ("mde", "float", "minimum detectable effect at mde_power [unit]"),
    ("mde_pct", "float", "the same in %"),
    ("mde_power", "float", "power of the MDE"),
]
_KPI_PAIRS = [
    ("ci", "the 1 − α interval of the difference [unit]"),
    ("ci_pct", "the 1 − α interval in %"),
    ("ci_2alpha", "the 1 − 2α interval of the difference [unit]"),
    ("ci_2alpha_pct", "the 1 − 2α interval in %"),
    ("hedges_g_ci", "the 1 − α interval of Hedges' g"),
]
VERDICT_SETS = {"judged": "as judged (exclusions left out)", "every_run": "with every run (no exclusions)"}


def _kpi_sets(verdict_json: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    out = [("judged", k) for k in (verdict_json["primary"], *verdict_json["secondary"])]
    w = verdict_json.get("without_exclusions")
    if w is not None:
        out += [("every_run", k) for k in (w["primary"], *w["secondary"])]
    return out


def verdict_kpis(verdict_json: Mapping[str, Any]) -> Table:
    rows = []
    for s, k in _kpi_sets(verdict_json):
        row: dict[str, Any] = {"set": s}
        row.update({name: k[name] for name, _, _ in _KPI_SCALARS})
        for name, _ in _KPI_PAIRS:
            pair = k[name] or [None, None]
            row[f"{name}_low"], row[f"{name}_high"] = pair
        perm = k["permutation"] or {}
        row["permutation_method"] = perm.get("method")
        row["permutation_count"] = perm.get("count")
        row["permutation_seed"] = perm.get("seed")
        row["reason"] = k["reason"]
        row["disagreement"] = k["disagreement"]
        rows.append(row)
    columns = [("set", "str", "judged: as judged; every_run: with every run, exclusions ignored")]
    columns += _KPI_SCALARS
    for name, doc in _KPI_PAIRS:
        columns += [
            (f"{name}_low", "float", f"{doc}, low end"),
            (f"{name}_high", "float", f"{doc}, high end"),
        ]
    columns += [
        ("permutation_method", "str", "exact or monte_carlo"),
        ("permutation_count", "int", "relabellings counted"),
        ("permutation_seed", "int", "seed of a Monte Carlo permutation test"),
        ("reason", "str", "the word's one-sentence reason"),
        ("disagreement", "str", "where Welch and the permutation test disagreed"),
    ]
    return _table("verdict_kpis", "The verdict per KPI (the numbers of verdict.json)", columns, rows)


def verdict_runs(verdict_json: Mapping[str, Any]) -> Table:
    rows = [
        {
            "set": s,
            "kpi": k["kpi"],
            "run": r["run"],
            "group": r["group"],
            "start": r["start"],
            "value": r["value"],
            "coverage": r["coverage"],
            "flags": ";".join(r["flags"]),
            "problem": r["problem"],
            "excluded": r["excluded"],
        }
        for s, k in _kpi_sets(verdict_json)
        for r in k["runs"]
    ]
    return _table(
        "verdict_runs",
        "Each run's value of each judged KPI and whether the verdict counted it",
        [
            ("set", "str", "judged or every_run (see verdict_kpis)"),
            ("kpi", "str", "KPI name"),
            ("run", "str", "run id"),
            ("group", "str", "trial or baseline"),
            ("start", "time", "start of the run (UTC)"),
            ("value", "float", "the KPI's value [unit of verdict_kpis]"),
            ("coverage", "float", "the KPI's coverage, 0..1"),
            ("flags", "str", "flags, separated by ';'"),
            ("problem", "str", "why the value cannot be used (the KPI is then not judgeable)"),
            ("excluded", "str", "the exclusion's reason; empty when the run counts"),
        ],
        rows,
    )


def stability(verdict_json: Mapping[str, Any]) -> Table:
    s = verdict_json["baseline_stability"]
    starts = {r["run"]: r["start"] for r in verdict_json["primary"]["runs"]}
    values = s["values"]
    rows = [
        {
            "kpi": s["kpi"],
            "order": i + 1,
            "run": run,
            "start": starts.get(run),
            "value": values[i],
            "moving_range": abs(values[i] - values[i - 1]) if i else None,
            "centre": s["centre"],
            "lower": s["lower"],
            "upper": s["upper"],
            "mr_bar": s["mr_bar"],
            "mr_upper": s["mr_upper"],
            "outside": run in s["outside"],
            "trend": run in s["trend"],
            "span_days": s["span_days"],
        }
        for i, run in enumerate(s["runs"] if values else [])
    ]
    return _table(
        "stability",
        "The individuals chart of the baseline's primary KPI (usable baseline runs in start order)",
        [
            ("kpi", "str", "the primary KPI"),
            ("order", "int", "position in start order, from 1"),
            ("run", "str", "baseline run id"),
            ("start", "time", "start of the run (UTC)"),
            ("value", "float", "the KPI's value"),
            ("moving_range", "float", "|value − previous value|"),
            ("centre", "float", "centre line: the mean"),
            ("lower", "float", "lower natural process limit, centre − 2.66 · mr_bar"),
            ("upper", "float", "upper natural process limit, centre + 2.66 · mr_bar"),
            ("mr_bar", "float", "mean moving range"),
            ("mr_upper", "float", "upper limit of the moving ranges, 3.268 · mr_bar"),
            ("outside", "bool", "outside the limits"),
            ("trend", "bool", "part of a trend of six steadily rising or falling values"),
            ("span_days", "float", "days between the first and last baseline run's start"),
        ],
        rows,
    )


def money_inputs(verdict_json: Mapping[str, Any]) -> Table:
    m = verdict_json.get("money")
    rows: list[dict[str, Any]] = []
    if m is not None:
        for name, p in m["prices"].items():
            rows.append(
                {"item": name, "value": p["price"], "unit": p["unit"], "kpi": p["kpi"], "source": p["source"]}
            )
        t = m["throughput"]
        if t is not None:
            if t.get("batches_per_year") is not None:
                value, unit = t["batches_per_year"], "batches/year"
            else:
                value, unit = t["kg_per_year"], "kg/year"
            rows.append({"item": "throughput", "value": value, "unit": unit, "source": t["source"]})
        q = m["quote"]
        if q is not None:
            rows.append({"item": "quote", "value": q["eur"], "unit": "€", "source": q["source"]})
    return _table(
        "money_inputs",
        "The charter's prices, the plant's throughput and the startup's quote, each with its source",
        [
            ("item", "str", "priced component (substrate:<name>, electricity, …), throughput or quote"),
            ("value", "float", "price, throughput or quoted price"),
            ("unit", "str", "its unit"),
            ("kpi", "str", "the run KPI priced (the amount)"),
            ("source", "str", "where the figure comes from"),
        ],
        rows,
    )


def money_runs(verdict_json: Mapping[str, Any]) -> Table:
    m = verdict_json.get("money")
    rows = [
        {
            "run": r["run"],
            "group": r["group"],
            "product_kg": r["product_kg"],
            "eur": r["eur"],
            "eur_per_kg": r["eur_per_kg"],
            "missing": "; ".join(r["missing"]),
        }
        for r in (m["runs"] if m else [])
    ]
    return _table(
        "money_runs",
        "Each counted run's cost: the sum of its priced components over its product",
        [
            ("run", "str", "run id"),
            ("group", "str", "trial or baseline"),
            ("product_kg", "float", "product [kg]"),
            ("eur", "float", "cost of the run [€]; empty when a priced input is missing"),
            ("eur_per_kg", "float", "cost per kg of product [€/kg]"),
            ("missing", "str", "what is missing, separated by '; '"),
        ],
        rows,
    )


def money_parts(verdict_json: Mapping[str, Any]) -> Table:
    m = verdict_json.get("money")
    rows = [
        {"run": r["run"], "component": name, "eur": eur}
        for r in (m["runs"] if m else [])
        for name, eur in r["parts"].items()
    ]
    return _table(
        "money_parts",
        "Each run's cost by component",
        [
            ("run", "str", "run id"),
            ("component", "str", "priced component"),
            ("eur", "float", "its cost in this run [€]"),
        ],
        rows,
    )


MONEY_RANGES = {
    "cost_trial": "cost per kg, trial runs",
    "cost_baseline": "cost per kg, baseline runs",
    "difference": "cost per kg, trial − baseline",
    "saving_per_kg": "saving per kg (baseline − trial)",
    "annual_savings": "savings per year",
    "payback_years": "payback of the quoted price",
}


def money_ranges(verdict_json: Mapping[str, Any]) -> Table:
    m = verdict_json.get("money")
    rows = []
    for key in MONEY_RANGES:
        r = m.get(key) if m else None
        if r is not None:
            rows.append(
                {"quantity": key, **{k: r[k] for k in ("low", "high", "estimate", "unit", "level", "note")}}
            )
    return _table(
        "money_ranges",
        "Money as ranges: the interval at `level` with the estimate inside it (never a single number)",
        [
            ("quantity", "str", ", ".join(MONEY_RANGES)),
            ("low", "float", "low end"),
            ("high", "float", "high end; empty when unbounded (payback)"),
            ("estimate", "float", "the point estimate inside the range"),
            ("unit", "str", "unit"),
            ("level", "float", "confidence level of the range"),
            ("note", "str", "method or caveat"),
        ],
        rows,
    )


def exclusions(inputs: EvidenceInputs) -> Table:
    return _table(
        "exclusions",
        "Runs left out of the verdict, each with its written reason, who and when",
        [
            ("run", "str", "run id"),
            ("reason", "str", "the written reason"),
            ("by", "str", "who excluded it"),
            ("at", "time", "when (UTC)"),
        ],
        ({"run": e.run_id, "reason": e.reason, "by": e.by, "at": e.at} for e in inputs.exclusions),
    )


def imports(inputs: EvidenceInputs) -> Table:
    rows = []
    for _, r in inputs.runs:
        s = inputs.source(r.run_id)
        for i in s.imports if s else ():
            rows.append(
                {
                    "run": r.run_id,
                    "file": i.file,
                    "sha256": i.sha256,
                    "rows": i.rows,
                    "samples": i.samples,
                    "imported": i.imported,
                }
            )
    return _table(
        "imports",
        "Files imported into the runs (historian exports), with the SHA-256 the catalog recorded",
        [
            ("run", "str", "run id"),
            ("file", "str", "the file's name when imported"),
            ("sha256", "str", "SHA-256 of the file's bytes"),
            ("rows", "int", "rows read"),
            ("samples", "int", "samples stored"),
            ("imported", "time", "when (UTC)"),
        ],
        rows,
    )


# -- writing ------------------------------------------------------------------------------------------
def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)


def csv_bytes(t: Table) -> bytes:
    """The table as CSV (UTF-8, comma, "\\n" line ends, a header row; floats as Python's shortest
    round-trip repr, empty for null, booleans true/false, times ISO-8601 with their UTC offset)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.name for c in t.columns])
    for row in t.rows:
        w.writerow([_csv_cell(v) for v in row])
    return buf.getvalue().encode("utf-8")


def arrow_table(t: Table) -> pa.Table:
    fields = [pa.field(c.name, _TYPES[c.type], nullable=True, metadata={"doc": c.doc}) for c in t.columns]
    schema = pa.schema(fields, metadata={"table": t.name, "doc": t.doc})
    data = {c.name: [r[i] for r in t.rows] for i, c in enumerate(t.columns)}
    return pa.Table.from_pydict(data, schema=schema)


def write_csv(t: Table, path: Path) -> None:
    path.write_bytes(csv_bytes(t))


def write_parquet(t: Table, path: Path) -> None:
    """Parquet (pyarrow, zstd); the columns' descriptions in the schema's field metadata."""
    pq.write_table(arrow_table(t), path, compression="zstd")


def schema_doc(tables: Mapping[str, Table]) -> dict[str, Any]:
    """What each table and column means (written as data/tables.json)."""
    return {
        t.name: {"doc": t.doc, "columns": [{"name": c.name, "type": c.type, "doc": c.doc} for c in t.columns]}
        for t in tables.values()
    }
