"""The evidence pack (processing/evidence): built from a campaign simulated by the validation study's fast
path and from a `not judgeable` case; its data files against the verdict's JSON number by number, the PDF's
text (pypdf), determinism, and `biopilot report verify` catching a changed byte in every kind of file."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pypdf import PdfReader

from biopilot.app.cli import main
from biopilot.charter import Charter
from processing.evidence import (
    CharterVersion,
    EvidenceError,
    EvidenceInputs,
    build_evidence_pack,
    inputs_from_json,
    inputs_to_json,
    verify_pack,
)
from processing.evidence.charts import common_prefix, short_ids
from processing.evidence.document import num
from processing.evidence.tables import VERDICT_SETS
from processing.verdict import judge, verdict_to_json
from tests.processing import evidence_cases as ec

GENERATED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TABLES = (
    "charter_versions", "runs", "kpis", "kpi_inputs", "verdict_kpis", "verdict_runs", "stability",
    "money_inputs", "money_runs", "money_parts", "money_ranges", "exclusions", "imports",
)  # fmt: skip


# -- fixtures: one simulated campaign, three packs ------------------------------------------------------
@pytest.fixture(scope="module")
def yields() -> list[tuple[str, float]]:
    """The measured yields of one seeded +6 % campaign (8 baseline, 3 trial runs), simulated by the fermenter
    model exactly as the validation study's fast path does."""
    return ec.simulated_yields()


@pytest.fixture(scope="module")
def packs(yields, tmp_path_factory) -> dict[str, tuple[EvidenceInputs, Path]]:
    root = tmp_path_factory.mktemp("packs")
    cases = {
        "yield": ec.yield_inputs(yields=yields),
        "changed": ec.yield_inputs(yields=yields, changed_after_start=True),
        "not judgeable": ec.not_judgeable_inputs(yields=yields),
    }
    out = {}
    for name, inputs in cases.items():
        d = root / name.replace(" ", "-")
        build_evidence_pack(inputs, d, generated=GENERATED)
        out[name] = (inputs, d)
    return out


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def _cell(text: str) -> float | None:
    return None if text == "" else float(text)


def _pdf_text(pdf: Path) -> str:
    """The PDF's text, whitespace collapsed (lines wrap anywhere)."""
    text = "\n".join(page.extract_text() for page in PdfReader(pdf).pages)
    return re.sub(r"\s+", " ", text.replace("\u200b", ""))


# -- the files ------------------------------------------------------------------------------------------
def test_a_pack_has_the_pdf_the_data_the_charters_and_a_manifest_of_them(packs) -> None:
    inputs, d = packs["yield"]
    files = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
    expected = sorted(
        ["evidence.pdf", "verdict.json", "charter/v1.json", "charter/v2.json", "data/tables.json",
         "manifest.json", "manifest.json.sha256"]
        + [f"data/{t}.{ext}" for t in TABLES for ext in ("csv", "parquet")]
    )  # fmt: skip
    assert files == expected
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["format"] == "biopilot-evidence-1"
    assert manifest["trial"] == "HY2-F101-2025"
    assert manifest["charter_sha256"] == inputs.verdict.charter_sha256
    assert manifest["charter_version"] == 2
    assert manifest["verdict"] == inputs.verdict.word
    assert manifest["generated"] == GENERATED.isoformat()
    assert "biopilot report verify DIR" in manifest["purpose"]
    listed = {f["path"]: f for f in manifest["files"]}
    assert sorted(listed) == [f for f in expected if not f.startswith("manifest.json")]
    for path, f in listed.items():
        data = (d / path).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["bytes"] == len(data)
    digest = hashlib.sha256((d / "manifest.json").read_bytes()).hexdigest()
    assert (d / "manifest.json.sha256").read_text() == f"{digest}  manifest.json\n"  # as sha256sum writes it
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "-c", "--quiet", "manifest.json.sha256"], cwd=d, check=True)


def test_each_charter_file_hashes_to_its_version(packs) -> None:
    inputs, d = packs["yield"]
    for v in inputs.charter_versions:
        data = (d / "charter" / f"v{v.version}.json").read_bytes()
        assert hashlib.sha256(data).hexdigest() == v.sha256
    judged = (d / "charter" / f"v{inputs.verdict.charter_version}.json").read_bytes()
    assert hashlib.sha256(judged).hexdigest() == inputs.verdict.charter_sha256
    rows = _csv(d / "data" / "charter_versions.csv")
    assert [(r["version"], r["sha256"], r["judged"]) for r in rows] == [
        ("1", inputs.charter_versions[0].sha256, "false"),
        ("2", inputs.charter_versions[1].sha256, "true"),
    ]


def test_verdict_json_in_the_pack_is_the_verdicts(packs) -> None:
    for inputs, d in packs.values():
        assert json.loads((d / "verdict.json").read_text()) == json.loads(
            json.dumps(verdict_to_json(inputs.verdict))
        )


# -- every number in the data equals the verdict JSON's -------------------------------------------------
def _kpi_objects(v: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    out = {("judged", k["kpi"]): k for k in (v["primary"], *v["secondary"])}
    w = v["without_exclusions"]
    if w is not None:
        out.update({("every_run", k["kpi"]): k for k in (w["primary"], *w["secondary"])})
    return out


def _assert_same(cell: str, value: Any, what: str) -> None:
    if value is None:
        assert cell == "", what
    elif isinstance(value, bool):
        assert cell == ("true" if value else "false"), what
    elif isinstance(value, int | float):
        assert float(cell) == value, f"{what}: CSV {cell} != JSON {value!r}"  # exactly, not approximately
    else:
        assert cell == str(value), what


@pytest.mark.parametrize("case", ["yield", "not judgeable", "changed"])
def test_every_number_of_the_verdict_csv_equals_the_verdict_json(packs, case) -> None:
    _, d = packs[case]
    v = json.loads((d / "verdict.json").read_text())
    kpis = _kpi_objects(v)
    rows = _csv(d / "data" / "verdict_kpis.csv")
    assert {(r["set"], r["kpi"]) for r in rows} == set(kpis)
    assert set(VERDICT_SETS) >= {r["set"] for r in rows}
    numeric = 0
    for r in rows:
        k = kpis[(r["set"], r["kpi"])]
        for key, value in k.items():
            if key in ("runs", "unusable", "excluded", "permutation"):
                continue
            if isinstance(value, list) or (value is None and f"{key}_low" in r):
                pair = value or [None, None]
                _assert_same(r[f"{key}_low"], pair[0], f"{r['kpi']}.{key}[0]")
                _assert_same(r[f"{key}_high"], pair[1], f"{r['kpi']}.{key}[1]")
                numeric += 2
            else:
                _assert_same(r[key], value, f"{r['kpi']}.{key}")
                numeric += isinstance(value, float)
        perm = k["permutation"] or {}
        for key in ("method", "count", "seed"):
            _assert_same(r[f"permutation_{key}"], perm.get(key), f"{r['kpi']}.permutation.{key}")
    assert numeric > 20
    # each run's value as the verdict used it
    runs = _csv(d / "data" / "verdict_runs.csv")
    expected = [(s, k["kpi"], run) for (s, _), k in kpis.items() for run in k["runs"]]
    assert len(runs) == len(expected)
    for row, (s, name, run) in zip(runs, expected, strict=True):
        assert (row["set"], row["kpi"], row["run"], row["group"]) == (s, name, run["run"], run["group"])
        _assert_same(row["value"], run["value"], f"{name} {run['run']} value")
        _assert_same(row["coverage"], run["coverage"], f"{name} {run['run']} coverage")
        assert (row["flags"].split(";") if row["flags"] else []) == run["flags"]
        _assert_same(row["problem"], run["problem"], "problem")
        _assert_same(row["excluded"], run["excluded"], "excluded")


def test_the_stability_csv_is_the_individuals_chart_of_the_verdict(packs) -> None:
    _, d = packs["yield"]
    s = json.loads((d / "verdict.json").read_text())["baseline_stability"]
    rows = _csv(d / "data" / "stability.csv")
    assert [r["run"] for r in rows] == s["runs"] and len(rows) == len(s["values"]) >= 2
    for i, r in enumerate(rows):
        _assert_same(r["value"], s["values"][i], "value")
        for key in ("centre", "lower", "upper", "mr_bar", "mr_upper", "span_days"):
            _assert_same(r[key], s[key], key)
        assert r["outside"] == ("true" if r["run"] in s["outside"] else "false")
        if i:
            assert float(r["moving_range"]) == abs(s["values"][i] - s["values"][i - 1])


def test_money_in_the_data_is_the_verdicts_money_as_ranges(packs) -> None:
    _, d = packs["yield"]
    m = json.loads((d / "verdict.json").read_text())["money"]
    ranges = {r["quantity"]: r for r in _csv(d / "data" / "money_ranges.csv")}
    assert set(ranges) == {k for k in ("cost_trial", "cost_baseline", "difference", "saving_per_kg",
                                       "annual_savings", "payback_years") if m[k] is not None}  # fmt: skip
    assert {"difference", "annual_savings", "payback_years"} <= set(ranges)
    for key, r in ranges.items():
        for field in ("low", "high", "estimate", "unit", "level", "note"):
            _assert_same(r[field], m[key][field], f"{key}.{field}")
        assert r["low"] != "" and (r["high"] == "" or float(r["low"]) <= float(r["high"]))
    costs = _csv(d / "data" / "money_runs.csv")
    assert [c["run"] for c in costs] == [r["run"] for r in m["runs"]]
    for c, r in zip(costs, m["runs"], strict=True):
        for field in ("product_kg", "eur", "eur_per_kg"):
            _assert_same(c[field], r[field], f"{r['run']}.{field}")
    parts = _csv(d / "data" / "money_parts.csv")
    assert [(p["run"], p["component"], float(p["eur"])) for p in parts] == [
        (r["run"], name, eur) for r in m["runs"] for name, eur in r["parts"].items()
    ]
    prices = {p["item"]: p for p in _csv(d / "data" / "money_inputs.csv")}
    for name, p in m["prices"].items():
        assert float(prices[name]["value"]) == p["price"] and prices[name]["source"] == p["source"]
    assert float(prices["quote"]["value"]) == m["quote"]["eur"]


def test_the_kpi_tables_hold_every_kpi_record_and_input(packs) -> None:
    inputs, d = packs["yield"]
    kpis = {(r["run"], r["kpi"]): r for r in _csv(d / "data" / "kpis.csv")}
    records = {(run.run_id, name): k for _, run in inputs.runs for name, k in run.kpis.items()}
    assert set(kpis) == set(records)
    for key, k in records.items():
        row = kpis[key]
        _assert_same(row["value"], k.value, f"{key} value")
        _assert_same(row["coverage"], k.coverage, f"{key} coverage")
        assert row["unit"] == k.unit and row["flags"] == ";".join(k.flags) and row["final"] == "true"
    inputs_rows = _csv(d / "data" / "kpi_inputs.csv")
    assert len(inputs_rows) == sum(len(k.inputs) for k in records.values())
    for r in inputs_rows:
        assert float(r["coverage"]) == records[(r["run"], r["kpi"])].inputs[r["input"]]
    ex = _csv(d / "data" / "exclusions.csv")
    assert [(e["run"], e["reason"], e["by"]) for e in ex] == [
        (e.run_id, e.reason, e.by) for e in inputs.exclusions
    ]
    imports = _csv(d / "data" / "imports.csv")
    assert [i["sha256"] for i in imports] == [
        imp.sha256 for _, r in inputs.runs if (s := inputs.source(r.run_id)) for imp in s.imports
    ]


@pytest.mark.parametrize("table", TABLES)
def test_parquet_holds_what_the_csv_holds(packs, table) -> None:
    _, d = packs["yield"]
    rows = _csv(d / "data" / f"{table}.csv")
    pt = pq.read_table(d / "data" / f"{table}.parquet")
    assert pt.column_names == (list(rows[0]) if rows else pt.column_names)
    assert pt.num_rows == len(rows)
    for i, row in enumerate(pt.to_pylist()):
        for key, value in row.items():
            cell = rows[i][key]
            if isinstance(value, datetime):
                assert datetime.fromisoformat(cell) == value
            else:
                _assert_same(cell, value, f"{table}[{i}].{key}")


# -- the PDF --------------------------------------------------------------------------------------------
def test_the_pdf_says_the_verdict_its_reason_the_charter_hash_and_every_run(packs) -> None:
    inputs, d = packs["yield"]
    text = _pdf_text(d / "evidence.pdf")
    v = inputs.verdict
    assert v.word.upper() in text
    assert re.sub(r"\s+", " ", v.reason) in text
    assert v.charter_sha256 in text
    for _, run in inputs.runs:
        assert run.run_id in text
    for e in inputs.exclusions:
        assert e.reason in text
    assert "THE CHARTER WAS CHANGED AFTER THE FIRST TRIAL RUN STARTED" not in text
    pages = PdfReader(d / "evidence.pdf").pages
    for i, page in enumerate(pages, 1):
        footer = re.sub(r"\s+", " ", page.extract_text())
        assert f"page {i} of {len(pages)}" in footer and "verify: biopilot report verify DIR" in footer
        assert "Trial HY2-F101-2025" in footer
    # money only as ranges, each "low to high unit" as the data has it; the verdict with every run counted
    for r in _csv(d / "data" / "money_ranges.csv"):
        high = "unbounded" if r["high"] == "" else num(float(r["high"]))
        assert f"{num(float(r['low']))} to {high} {r['unit']}" in text
    assert v.without_exclusions is not None and re.sub(r"\s+", " ", v.without_exclusions.reason) in text


def test_the_pdf_says_loudly_when_the_charter_changed_after_the_first_trial_run(packs) -> None:
    inputs, d = packs["changed"]
    text = _pdf_text(d / "evidence.pdf")
    assert inputs.verdict.charter_changed_after_start
    assert "THE CHARTER WAS CHANGED AFTER THE FIRST TRIAL RUN STARTED" in text
    assert "MADE AFTER THE FIRST TRIAL RUN STARTED" in text  # the version's row in the history


def test_a_not_judgeable_pack_names_the_runs(packs) -> None:
    inputs, d = packs["not judgeable"]
    v = inputs.verdict
    assert v.word == "not judgeable"
    text = _pdf_text(d / "evidence.pdf")
    assert "NOT JUDGEABLE" in text and re.sub(r"\s+", " ", v.reason) in text
    assert "F-101:F101-250203T0600-TR02" in v.reason and "F-101:F101-250203T0600-BL03" in v.reason
    assert "NOT USABLE" in text and "implausible_yield_above_stoichiometric" in text
    assert v.charter_sha256 in text
    for _, run in inputs.runs:
        assert run.run_id in text
    row = next(r for r in _csv(d / "data" / "verdict_kpis.csv") if r["role"] == "primary")
    assert row["word"] == "not judgeable" and row["ci_low"] == "" and row["p_welch"] == ""


def test_long_ids_many_kpis_equivalence_and_no_money(tmp_path) -> None:
    """The hard layout (evidence_cases.stress_inputs): 19 runs with 70-character ids, seven judged KPIs, long
    flag lists, no prices, runs without a source. Every run id is in the PDF (ids may wrap: compared without
    spaces), and the money tables are empty but present."""
    inputs = ec.stress_inputs()
    m = build_evidence_pack(inputs, tmp_path / "pack", generated=GENERATED)
    text = _pdf_text(tmp_path / "pack" / "evidence.pdf")
    for _, run in inputs.runs:
        assert run.run_id in text.replace(" ", "")
    assert "The charter prices nothing: no money assessment." in text
    assert "EQUIVALENT" in text  # the verdict with every run counted differs: shown beside
    assert m.word == inputs.verdict.word
    assert _csv(tmp_path / "pack" / "data" / "money_ranges.csv") == []
    assert verify_pack(tmp_path / "pack").ok


def test_a_trial_without_trial_runs_still_makes_a_pack(tmp_path) -> None:
    """Before the first trial run (one baseline run, no secondaries, no exclusions, no sources): not
    judgeable, no interval, no stability chart, no money range; the pack is whole and verifies."""
    charter = Charter.model_validate(
        {**ec.example_charter().model_dump(), "secondary_kpis": [], "trial_runs": []}
    )
    _, baseline = ec.campaign_runs([("BL", 0.063)], ec.example_charter())
    v = judge(charter, [], baseline)
    version = CharterVersion.of(1, charter, reason="", by="", at=ec.LOCKED)
    inputs = EvidenceInputs("EMPTY", (version,), v, (), tuple(baseline))
    build_evidence_pack(inputs, tmp_path / "pack", generated=GENERATED)
    text = _pdf_text(tmp_path / "pack" / "evidence.pdf")
    assert "NOT JUDGEABLE" in text and "0 trial and 1 baseline runs count" in text
    assert "Fewer than two baseline runs count: no chart." in text
    assert "interim verdict: 0 of 3 planned trial runs" in text
    assert _csv(tmp_path / "pack" / "data" / "stability.csv") == []
    assert verify_pack(tmp_path / "pack").ok


# -- determinism ----------------------------------------------------------------------------------------
def test_the_same_inputs_give_the_same_bytes(packs, tmp_path) -> None:
    """Data files are identical whatever the generated time; with the same time, every file (the PDF too).
    And the output directory may exist when it is empty, but not with anything in it."""
    inputs, d = packs["yield"]
    first = {f["path"]: f["sha256"] for f in json.loads((d / "manifest.json").read_text())["files"]}
    (tmp_path / "later").mkdir()
    later = build_evidence_pack(inputs, tmp_path / "later", generated=datetime(2026, 1, 1, tzinfo=UTC))
    again = {f.path: f.sha256 for f in later.files}
    assert {p for p in first if first[p] != again[p]} == {"evidence.pdf"}
    same = build_evidence_pack(inputs, tmp_path / "same", generated=GENERATED)
    assert {f.path: f.sha256 for f in same.files} == first
    assert same.sha256 == hashlib.sha256((d / "manifest.json").read_bytes()).hexdigest()
    with pytest.raises(EvidenceError, match="exists and is not an empty directory"):
        build_evidence_pack(inputs, tmp_path / "same", generated=GENERATED)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["later", "same"]  # no temporary directory left
    assert verify_pack(tmp_path / "later").ok


# -- verify ---------------------------------------------------------------------------------------------
def _flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def pack_copy(packs, tmp_path) -> Path:
    _, d = packs["yield"]
    return Path(shutil.copytree(d, tmp_path / "copy"))


def test_verify_says_an_intact_pack_is_intact(pack_copy, capsys) -> None:
    assert main(["report", "verify", str(pack_copy)]) == 0
    out = capsys.readouterr().out
    digest = hashlib.sha256((pack_copy / "manifest.json").read_bytes()).hexdigest()
    n = len(json.loads((pack_copy / "manifest.json").read_text())["files"])
    assert f"manifest SHA-256 {digest}" in out and f"intact, {n} files match the manifest" in out
    assert main(["report", "verify", str(pack_copy), "--expect", digest]) == 0


@pytest.mark.parametrize(
    "path",
    ["evidence.pdf", "data/verdict_kpis.csv", "data/money_ranges.parquet", "charter/v2.json", "verdict.json"],
)
def test_verify_names_a_file_with_one_changed_byte(pack_copy, path, capsys) -> None:
    _flip(pack_copy / path)
    assert main(["report", "verify", str(pack_copy)]) == 1
    out = capsys.readouterr().out
    assert f"changed: {path} (SHA-256" in out and "NOT intact, 1 problem" in out


def test_verify_catches_a_changed_byte_in_the_manifest_itself(pack_copy, capsys) -> None:
    """A byte of the generated time changed: still a valid manifest whose files all match, but its digest no
    longer does (manifest.json.sha256, or the digest published with the pack)."""
    raw = (pack_copy / "manifest.json").read_bytes()
    original = hashlib.sha256(raw).hexdigest()
    _flip(pack_copy / "manifest.json", raw.index(b'"generated": "2025') + len(b'"generated": "202'))
    json.loads((pack_copy / "manifest.json").read_text())  # still valid JSON
    assert main(["report", "verify", str(pack_copy)]) == 1
    out = capsys.readouterr().out
    assert "changed: manifest.json or manifest.json.sha256" in out
    # the sidecar rewritten to match: the digest published elsewhere still catches it
    digest = hashlib.sha256((pack_copy / "manifest.json").read_bytes()).hexdigest()
    (pack_copy / "manifest.json.sha256").write_text(f"{digest}  manifest.json\n")
    assert main(["report", "verify", str(pack_copy)]) == 0
    assert main(["report", "verify", str(pack_copy), "--expect", original]) == 1
    assert f"changed: manifest.json: its SHA-256 is {digest}, expected {original}" in capsys.readouterr().out


def test_verify_catches_a_manifest_that_lies_about_a_file(pack_copy) -> None:
    """A file changed and its entry in the manifest changed to match: the manifest's digest catches it."""
    target = pack_copy / "data" / "verdict_kpis.csv"
    _flip(target)
    doc = json.loads((pack_copy / "manifest.json").read_text())
    for f in doc["files"]:
        if f["path"] == "data/verdict_kpis.csv":
            f["sha256"] = hashlib.sha256(target.read_bytes()).hexdigest()
    (pack_copy / "manifest.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    result = verify_pack(pack_copy)
    assert not result.ok and result.problems[0].startswith("changed: manifest.json or manifest.json.sha256")


def test_verify_catches_a_broken_manifest_and_a_changed_digest_file(pack_copy) -> None:
    _flip(pack_copy / "manifest.json.sha256", 3)
    assert verify_pack(pack_copy).problems[0].startswith("changed: manifest.json or manifest.json.sha256")
    shutil.copy(pack_copy / "manifest.json", pack_copy.parent / "keep.json")
    (pack_copy / "manifest.json").write_bytes(b"{not json")
    problems = verify_pack(pack_copy).problems
    assert any(p.startswith("changed: manifest.json cannot be read as a manifest") for p in problems)


def test_verify_names_missing_and_extra_files(pack_copy, capsys) -> None:
    (pack_copy / "data" / "kpis.parquet").unlink()
    (pack_copy / "data" / "notes.txt").write_text("added later")
    (pack_copy / "manifest.json.sha256").unlink()
    assert main(["report", "verify", str(pack_copy)]) == 1
    out = capsys.readouterr().out
    assert "missing: data/kpis.parquet" in out
    assert "extra: data/notes.txt (not in the manifest)" in out
    assert "missing: manifest.json.sha256" in out
    assert "NOT intact, 3 problems" in out


def test_verify_refuses_a_directory_that_is_no_pack(tmp_path, capsys) -> None:
    assert main(["report", "verify", str(tmp_path)]) == 2
    assert "no manifest.json, so not an evidence pack" in capsys.readouterr().err


def test_the_installed_command_verifies(packs) -> None:
    """`biopilot report verify` as a user runs it (the console script of this checkout)."""
    _, d = packs["yield"]
    exe = Path(sys.executable).with_name("biopilot")
    if not exe.exists():
        pytest.skip("the biopilot console script is not installed (pip install -e .)")
    r = subprocess.run([str(exe), "report", "verify", str(d)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "intact" in r.stdout


# -- building -------------------------------------------------------------------------------------------
def test_inconsistent_inputs_are_refused(packs) -> None:
    inputs, _ = packs["yield"]
    v1 = inputs.charter_versions[0]
    with pytest.raises(EvidenceError, match="which is not in the history"):
        replace(inputs, charter_versions=(v1, replace(inputs.charter_versions[1], version=3)))
    with pytest.raises(EvidenceError, match="that version's SHA-256"):
        replace(inputs, charter_versions=(v1, replace(v1, version=2)))
    with pytest.raises(EvidenceError, match="not the runs the verdict judged"):
        replace(inputs, trial_runs=inputs.trial_runs[:2])
    with pytest.raises(EvidenceError, match="is not that of its canonical JSON"):
        CharterVersion(1, v1.canonical_json, "0" * 64, "", "", v1.at)


def test_the_inputs_json_round_trips_through_the_dev_command(packs, tmp_path, capsys) -> None:
    """inputs_to_json → file → `biopilot report build-json` (judges again) → the same verdict."""
    inputs, _ = packs["yield"]
    doc = inputs_to_json(inputs)
    again = inputs_from_json(json.loads(json.dumps(doc)))
    assert verdict_to_json(again.verdict) == verdict_to_json(inputs.verdict)
    path = tmp_path / "inputs.json"
    path.write_text(json.dumps(doc))
    assert main(["report", "build-json", str(path), "--out", str(tmp_path / "pack")]) == 0
    out = capsys.readouterr().out
    assert f"evidence pack of trial HY2-F101-2025 in {tmp_path / 'pack'}: {inputs.verdict.word}" in out
    assert verify_pack(tmp_path / "pack").ok
    assert main(["report", "build-json", str(tmp_path / "nope.json"), "--out", str(tmp_path / "p2")]) == 2


# -- charts' labels -------------------------------------------------------------------------------------
def test_short_run_labels_drop_the_shared_prefix_and_stay_distinct() -> None:
    ids = ["F-101:F101-250203T0600-BL01", "F-101:F101-250203T0600-BL02", "F-101:F101-250203T0600-TR01"]
    assert common_prefix(ids) == "F-101:F101-250203T0600-"
    assert short_ids(ids) == {ids[0]: "BL01", ids[1]: "BL02", ids[2]: "TR01"}
    long = [f"X:{'A' * 30}-{i}" for i in range(3)] + ["Y:other"]
    labels = short_ids(long, width=10)
    assert len(set(labels.values())) == 4 and all(len(s) <= 10 for s in labels.values())
    assert short_ids(["a-1", "a-1"]) == {"a-1": "a-1"} and common_prefix(["one"]) == ""
    assert short_ids([]) == {}
