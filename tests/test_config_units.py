"""Units and roles in the site config (biopilot/config.py with biopilot/units.py): a tag's unit is parsed by
pint at load and refused, in one line, when its dimension does not fit its role; mass flows need a
density; tag transforms; lab units; and the README's roles table lists every role."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from biopilot import units
from biopilot.config import (
    LIQUID_FLOW_ROLES,
    NON_NEGATIVE_ROLES,
    ROLE_KINDS,
    TEXT_ROLES,
    Role,
    lab_unit_problem,
    liquid_density,
    parse_config,
)
from biopilot.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

HEAD = """
[site]
name = "units"

[opcua.servers.plc]
endpoint = "opc.tcp://127.0.0.1:4840/"

[[equipment]]
id = "F-1"
kind = "fermenter"

[[process]]
equipment = "F-1"
broth_density = 1.05
"""


def tag(name: str, role: str, unit: str, extra: str = "") -> str:
    return (
        f'\n[[tags]]\nname = "{name}"\nequipment = "F-1"\nrole = "{role}"\nunit = "{unit}"\n{extra}'
        f'source = {{ protocol = "opcua", server = "plc", node_id = "ns=2;s={name}" }}\n'
    )


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(HEAD + text, "site.toml")
    message = str(exc.value)
    assert "\n" not in message and message.startswith("site.toml: "), message
    return message


def test_units_of_every_kind_a_role_accepts_load() -> None:
    config = parse_config(
        HEAD
        + tag("F-1.air", "air_flow", "m3/min")
        + tag("F-1.t", "temperature", "K")
        + tag("F-1.titer", "titer", "ug/mL")
        + tag("F-1.cw", "cooling_water_flow", "L/h")
        + tag("F-1.p", "pressure", "barg")
        + tag("F-1.turb", "turbidity", "FNU")
        + tag("F-1.level", "level", "m")
        + tag("F-1.acid", "acid_flow", "mL/min"),
        "site.toml",
    )
    assert [t.unit for t in config.tags] == ["m3/min", "K", "ug/mL", "L/h", "barg", "FNU", "m", "mL/min"]


def test_a_unit_of_the_wrong_dimension_is_refused_naming_file_key_unit_role_and_what_it_accepts() -> None:
    message = refused(tag("F-1.air", "air_flow", "kg/h"))
    assert message == (
        "site.toml: tags[0].unit (tag 'F-1.air'): 'kg/h' (mass flow) is not a unit for role 'air_flow',"
        " which accepts gas volume flow (NL/min, Nm3/h, L/min, m3/h…)"
    )
    assert "'mol/L' (molar concentration) is not a unit for role 'titer'" in refused(
        tag("F-1.titer", "titer", "mol/L")
    )
    assert "'%' (fraction) is not a unit for role 'ph'" in refused(tag("F-1.ph", "ph", "%"))


def test_an_unknown_or_missing_unit_is_refused() -> None:
    message = refused(tag("F-1.feed", "feed_rate", "lph"))
    assert "tags[0].unit (tag 'F-1.feed'): 'lph' is not a unit BioPilot knows" in message
    assert (
        "role 'feed_rate' accepts volume flow (L/h, mL/min, L/min, m3/h…); mass flow (kg/h, g/h, t/h…)"
        in message
    )
    assert "no unit given; role 'volume' accepts volume (L, m3, mL…)" in refused(tag("F-1.v", "volume", ""))
    assert "'L': role 'phase' is text and takes no unit" in refused(tag("F-1.phase", "phase", "L"))


def test_a_liquid_flow_in_mass_units_needs_a_density() -> None:
    # a feed: feed.density (as before)
    assert "feed.density: required for a feed measured in kg/h" in refused(
        tag("F-1.feed", "feed_rate", "kg/h", "feed = { concentration = 500.0 }\n")
    )
    # acid: the tag's density
    assert "tags[0] (tag 'F-1.acid').density: required for a flow measured in kg/h" in refused(
        tag("F-1.acid", "acid_flow", "kg/h")
    )
    assert "density: only for feed.density" in refused(
        tag("F-1.feed", "feed_rate", "L/h", "density = 1.2\nfeed = { concentration = 500.0 }\n")
    )
    assert "density: only for a liquid flow tag, not on a 'temperature' tag" in refused(
        tag("F-1.t", "temperature", "degC", "density = 1.0\n")
    )
    config = parse_config(
        HEAD
        + tag("F-1.acid", "acid_flow", "kg/h", "density = 1.84\n")
        + tag("F-1.out", "discharge_flow", "kg/h")
        + tag("F-1.water", "water_flow", "kg/h"),
        "site.toml",
    )
    acid, out, water = config.tags
    # the tag's density; the broth's for a discharge ([[process]] broth_density); water's for water
    assert [liquid_density(config, t) for t in (acid, out, water)] == [1.84, 1.05, units.WATER_DENSITY]


def test_tag_transforms() -> None:
    config = parse_config(HEAD + tag("F-1.out", "discharge_flow", "L/h", "scale = -1\n"), "site.toml")
    out = config.tag("F-1.out")
    assert out.transform == units.Transform(-1.0, 0.0) and out.transform(-120.0) == 120.0
    assert config.transforms() == {"F-1.out": units.Transform(-1.0, 0.0)}
    assert "scale (tag 'F-1.out'): 0 would store every value as the offset" in refused(
        tag("F-1.out", "discharge_flow", "L/h", "scale = 0\n")
    )
    phase = (
        '\n[[tags]]\nname = "F-1.phase"\nequipment = "F-1"\nrole = "phase"\noffset = 1.0\n'
        'source = { protocol = "opcua", server = "plc", node_id = "ns=2;s=ph" }\n'
    )
    assert "scale and offset apply to numbers, not to a 'phase' tag" in refused(phase)
    assert "scale (tag 'F-1.out')" in refused(tag("F-1.out", "discharge_flow", "L/h", "scale = nan\n"))


def test_lab_units() -> None:
    config = parse_config(HEAD, "site.toml")
    assert lab_unit_problem(config, "titer", "ug/mL") is None  # 5000 ug/mL is 5 g/L
    assert lab_unit_problem(config, "Glucose", "mg/L") is None
    assert lab_unit_problem(config, "od600", "") is None  # not read as a concentration: any unit pint reads
    titer_mol = lab_unit_problem(config, "titer", "mol/L")
    assert (
        titer_mol is not None
        and "is not a unit for analyte 'titer', which accepts mass concentration" in titer_mol
    )
    assert "is not a unit for analyte 'glucose'" in str(lab_unit_problem(config, "glucose", "%"))
    assert "'gpl' is not a unit BioPilot knows" in str(lab_unit_problem(config, "titer", "gpl"))
    assert "'bogus' is not a unit BioPilot knows" in str(lab_unit_problem(config, "od600", "bogus"))


def test_every_role_declares_its_kinds() -> None:
    assert set(ROLE_KINDS) == set(Role)
    for role, kinds in ROLE_KINDS.items():
        assert (kinds == ()) == (role in TEXT_ROLES), role
        for kind in kinds:
            assert all(kind.fits(u) for u in kind.examples), kind
    assert {Role.DISCHARGE_FLOW, Role.WATER_FLOW, Role.ACID_FLOW, Role.ANTIFOAM_FLOW} <= LIQUID_FLOW_ROLES
    assert Role.TEMPERATURE not in NON_NEGATIVE_ROLES and Role.DISCHARGE_FLOW in NON_NEGATIVE_ROLES


def test_the_readme_roles_table_lists_every_role() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Roles and the KPIs they feed") :]
    table = section[: section.index("\n#", 1)]  # up to the next heading
    listed = set(re.findall(r"^\| `([a-z0-9_]+)`", table, flags=re.MULTILINE))
    assert listed == {r.value for r in Role}
