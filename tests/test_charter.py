"""The trial charter (biopilot/charter.py): the example loads, the canonical JSON and its SHA-256 ignore
form and follow meaning, and a bad file fails in one line naming the file and the key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from biopilot.charter import (
    Direction,
    Hypothesis,
    canonical_json,
    charter_sha256,
    load_charter,
    parse_charter,
)
from biopilot.errors import ConfigError
from processing.kpis import KPI_UNITS

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "trials" / "example-charter.toml"
BL = 'baseline_runs = ["F-101:B1", "F-101:B2"]'

MINIMAL = """
title = "T"
equipment = "F-101"
startup = "s"
product = "p"
primary_kpi = "titer"
direction = "higher"
hypothesis = "superiority"
margin = 5
margin_unit = "%"
alpha = 0.05
planned_runs = 3
baseline_runs = ["F-101:B1", "F-101:B2"]
"""


def test_example_charter_loads() -> None:
    c = load_charter(EXAMPLE, KPI_UNITS)
    assert c.primary_kpi == "yield_product_substrate_consumed" and c.direction is Direction.HIGHER
    assert c.hypothesis is Hypothesis.SUPERIORITY and c.relative and c.alpha == 0.05
    assert len(c.baseline_runs) == 8 and len(c.trial_runs) == 3 and c.baseline is None
    assert [(s.kpi, s.direction) for s in c.secondary_kpis] == [
        ("titer", "higher"),
        ("specific_energy", "lower"),
    ]
    assert c.prices.substrates["glucose"].eur_per_kg == 0.40 and c.prices.electricity is not None
    assert c.throughput is not None and c.throughput.batches_per_year == 40 and c.quote is not None
    # every price names its source
    assert all(p.source for p in (*c.prices.substrates.values(), c.prices.electricity, c.prices.batch_hour))


def test_canonical_json_is_sorted_compact_and_hashed() -> None:
    c = load_charter(EXAMPLE)
    text = canonical_json(c)
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert json.loads(text)["format"] == "biopilot-charter-1"
    assert json.loads(text)["charter"]["min_coverage"] == 0.95  # defaults are part of it
    assert charter_sha256(c) == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_hash_ignores_form_and_follows_meaning() -> None:
    """Key order, comments, spacing, 5 vs 5.0 and a time zone offset do not change the hash; a margin of
    5.5 instead of 5 does."""
    rule = "[baseline]\nstart = 2025-01-01T07:00:00+01:00\nend = 2025-02-01T00:00:00Z\n"
    a = parse_charter(MINIMAL.replace('baseline_runs = ["F-101:B1", "F-101:B2"]\n', "") + rule)
    reordered = "\n".join(reversed(MINIMAL.strip().splitlines()))
    b_text = (
        "# a comment\n"
        + reordered.replace('baseline_runs = ["F-101:B1", "F-101:B2"]', "").replace(
            "margin = 5", "margin   = 5.0"
        )
        + '\n[baseline]\nend = 2025-02-01T01:00:00+01:00\nstart = 2025-01-01T06:00:00Z\nequipment = "F-101"\n'
    )
    b = parse_charter(b_text)
    assert charter_sha256(a) == charter_sha256(b)
    assert a.baseline is not None and a.baseline.product == "p"  # the rule takes the charter's product
    c = parse_charter(MINIMAL.replace("margin = 5", "margin = 5.5"))
    assert charter_sha256(c) != charter_sha256(parse_charter(MINIMAL))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ('direction = "higher"', 'direction = "higer"'),
            "direction: 'higer' is not allowed; expected one of: higher, lower (did you mean 'higher'?)",
        ),
        (("alpha = 0.05", "alpha = 0.5"), "alpha: Input should be less than 0.5"),
        (("alpha = 0.05", "alfa = 0.05"), "alfa: unknown key (did you mean 'alpha'?)"),
        (('title = "T"', ""), "title: missing (required)"),
        (('hypothesis = "superiority"', 'hypothesis = "equivalence"\nmargin_x = 1'), "margin_x: unknown key"),
        (("margin = 5", "margin = 0"), None),  # superiority by 0 is fine
        (
            ('hypothesis = "superiority"\nmargin = 5', 'hypothesis = "non_inferiority"\nmargin = 0'),
            "margin: a non_inferiority charter needs a margin above 0",
        ),
        (("margin = 5", "margin = 100"), "margin: a relative margin is below 100 %, got 100"),
        (
            ('baseline_runs = ["F-101:B1", "F-101:B2"]', ""),
            "baseline_runs: give exactly one of baseline_runs (run ids) or a [baseline] rule",
        ),
        (
            ('baseline_runs = ["F-101:B1", "F-101:B2"]', 'baseline_runs = ["F-101:B1", "F-101:B1"]'),
            "baseline_runs: run 'F-101:B1' is listed 2 times",
        ),
        (
            (
                'baseline_runs = ["F-101:B1", "F-101:B2"]',
                'baseline_runs = ["F-101:B1"]\ntrial_runs = ["F-101:B1"]',
            ),
            "trial_runs: 'F-101:B1' also in baseline_runs",
        ),
        (
            (
                'baseline_runs = ["F-101:B1", "F-101:B2"]',
                "[baseline]\nstart = 2025-01-01T00:00:00\nend = 2025-02-01T00:00:00Z",
            ),
            "baseline.start: Value error, give the time zone",
        ),
        (
            (BL, BL + '\n[throughput]\nsource = "plan"'),
            "throughput: Value error, give exactly one of batches_per_year or kg_per_year",
        ),
        ((BL, BL + "\n[prices.steam]\neur_per_t = 30"), "prices.steam.source: missing (required)"),
    ],
)
def test_a_bad_charter_fails_in_one_line(edit: tuple[str, str], message: str | None, tmp_path: Path) -> None:
    path = tmp_path / "charter.toml"
    old, new = edit
    assert old in MINIMAL
    path.write_text(MINIMAL.replace(old, new), encoding="utf-8")
    if message is None:
        load_charter(path)
        return
    with pytest.raises(ConfigError) as info:
        load_charter(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{path}: ")
    assert message.replace("Value error, ", "") in text


def test_kpi_names_and_margin_unit_are_checked_against_the_kpis() -> None:
    with pytest.raises(
        ConfigError, match=r"primary_kpi: 'titre' is not a KPI BioPilot computes \(did you mean 'titer'\?\)"
    ):
        parse_charter(MINIMAL.replace('"titer"', '"titre"'), "c.toml", KPI_UNITS)
    with pytest.raises(
        ConfigError, match=r"margin_unit: 'g/g' is neither '%' nor the unit of titer \('g/L'\)"
    ):
        parse_charter(MINIMAL.replace('margin_unit = "%"', 'margin_unit = "g/g"'), "c.toml", KPI_UNITS)
    assert parse_charter(MINIMAL.replace('margin_unit = "%"', 'margin_unit = "g/L"'), "c.toml", KPI_UNITS)
    assert parse_charter(
        MINIMAL.replace('"titer"', '"energy.F-101.agitator_power"').replace('"%"', '"kWh"'), "c", KPI_UNITS
    )


def test_missing_charter_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        load_charter(tmp_path / "nope.toml")
