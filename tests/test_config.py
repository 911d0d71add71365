"""biopilot/config.py: the shipped configs load; `biopilot check-config` reports a broken file in one line.

Broken files are made by editing the text of config/demo.toml, one defect each, so every case differs
from a known-good file by exactly the defect it tests.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from biopilot.config import OpcUaSource, Role, load_config, parse_config
from biopilot.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "config" / "demo.toml"
DEMO_TEXT = DEMO.read_text(encoding="utf-8")


def tag_index(name: str) -> int:
    """Position of a tag in demo.toml's [[tags]] list, so the expected key paths follow the file."""
    names = [t["name"] for t in tomllib.loads(DEMO_TEXT)["tags"]]
    return names.index(name)


def edit(old: str, new: str) -> str:
    """demo.toml with `old` (which must occur exactly once) replaced by `new`."""
    assert DEMO_TEXT.count(old) == 1, (
        f"demo.toml changed its layout: {old!r} occurs {DEMO_TEXT.count(old)} times"
    )
    return DEMO_TEXT.replace(old, new)


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "biopilot", "check-config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- configs that must load ---------------------------------------------------------------------------


def test_demo_config_loads() -> None:
    config = load_config(DEMO)
    assert [eq.id for eq in config.equipment] == ["F-101", "R-201"]
    assert config.site.timezone == "Europe/Copenhagen"
    temperature = config.tag("F-101.temperature")
    assert temperature.role is Role.TEMPERATURE
    assert temperature.unit == "degC"
    assert isinstance(temperature.source, OpcUaSource)
    assert temperature.source.browse_path == "F-101/Temperature"
    assert [t.name for t in config.role_tags("F-101", Role.BATCH_ID)] == ["F-101.batch_id"]
    assert len(config.role_tags("F-101", Role.POWER)) == 3
    assert config.simulator is not None
    assert config.simulator.opcua_server == "pilot"


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.equipment


def test_check_config_accepts_the_demo_config() -> None:
    result = check_config(DEMO)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "OK" in result.stdout
    assert "2 equipment" in result.stdout


# -- broken files: one line on stderr, naming file, key path and what was expected -------------------

TEMPERATURE_SOURCE = 'source = { protocol = "opcua", server = "pilot", browse_path = "F-101/Temperature" }\n'
T = tag_index("F-101.temperature")

BROKEN: dict[str, tuple[str, list[str]]] = {
    # case: (broken text, fragments the single error line must contain)
    "misspelled_role": (
        edit('role = "temperature"', 'role = "temprature"'),
        [
            f"tags[{T}].role",
            "(tag 'F-101.temperature')",
            "'temprature' is not allowed",
            "expected one of:",
            "(did you mean 'temperature'?)",
        ],
    ),
    "missing_source": (
        edit(TEMPERATURE_SOURCE, ""),
        [f"tags[{T}].source", "(tag 'F-101.temperature')", "missing (required)"],
    ),
    "unknown_key": (
        edit('unit = "degC"', 'units = "degC"'),
        [f"tags[{T}].units", "(tag 'F-101.temperature')", "unknown key"],
    ),
    "unknown_key_in_source": (
        edit(TEMPERATURE_SOURCE, TEMPERATURE_SOURCE.replace("browse_path", "browse_pth")),
        [f"tags[{T}].source.browse_pth", "(tag 'F-101.temperature')", "unknown key"],
    ),
    "misspelled_equipment_kind": (
        edit('kind = "fermenter"', 'kind = "fermentor"'),
        ["equipment[0].kind", "'fermentor' is not allowed", "(did you mean 'fermenter'?)"],
    ),
    "wrong_unit_for_role": (
        edit('unit = "degC"', 'unit = "bar"'),
        [
            f"tags[{T}].unit (tag 'F-101.temperature')",
            "'bar' (pressure) is not a unit for role 'temperature'",
            "which accepts temperature (degC, K, degF…)",
        ],
    ),
    "unknown_opcua_server": (
        edit(TEMPERATURE_SOURCE, TEMPERATURE_SOURCE.replace('server = "pilot"', 'server = "pilott"')),
        [
            f"tags[{T}].source.server (tag 'F-101.temperature')",
            "'pilott' is not a configured OPC UA server",
            "expected one of: 'pilot'",
        ],
    ),
    "unknown_mqtt_broker": (
        edit(
            'broker = "plant", topic = "biopilot-demo/F-101/offgas", field = "o2"',
            'broker = "plnt", topic = "biopilot-demo/F-101/offgas", field = "o2"',
        ),
        [
            f"tags[{tag_index('F-101.offgas_o2')}].source.broker (tag 'F-101.offgas_o2')",
            "'plnt' is not a configured MQTT broker",
            "expected one of: 'plant'",
        ],
    ),
    "unknown_equipment": (
        edit(
            'name = "F-101.temperature"\nequipment = "F-101"',
            'name = "F-101.temperature"\nequipment = "F-102"',
        ),
        [
            f"tags[{T}].equipment (tag 'F-101.temperature')",
            "'F-102' is not a configured equipment id",
            "expected one of: 'F-101', 'R-201'",
        ],
    ),
    "duplicate_tag_name": (
        edit('name = "F-101.ph"', 'name = "F-101.temperature"'),
        [
            f"tags[{tag_index('F-101.ph')}].name (tag 'F-101.temperature')",
            "is used twice",
            "tag names must be unique",
        ],
    ),
    "toml_syntax_error": (
        edit('[site]\nname = "Pilot Hall (simulated)"', '[site\nname = "Pilot Hall (simulated)"'),
        ["not valid TOML", "line "],
    ),
    "lab_on_a_temperature_tag": (
        edit('unit = "degC"', 'unit = "degC"\nlab = { analyte = "titer" }'),
        [f"tags[{T}] (tag 'F-101.temperature').lab", "only a concentration tag carries lab results"],
    ),
    "unknown_process_upstream": (
        edit(
            'equipment = "R-201"\nproduct = "demo enzyme"',
            'equipment = "R-201"\nproduct = "demo enzyme"\nupstream = "R-209"',
        ),
        ["process[1].upstream", "'R-209' is not another configured equipment id"],
    ),
    "browse_path_and_node_id": (
        edit(
            TEMPERATURE_SOURCE, TEMPERATURE_SOURCE.replace(" }", ', node_id = "ns=2;s=F-101.Temperature" }')
        ),
        [f"tags[{T}].source (tag 'F-101.temperature')", "give exactly one of browse_path or node_id"],
    ),
}


def assert_one_line_error(result: subprocess.CompletedProcess[str], path: Path, fragments: list[str]) -> None:
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"biopilot: {path}: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_config_reports_a_broken_file_in_one_line(case: str, tmp_path: Path) -> None:
    text, fragments = BROKEN[case]
    path = tmp_path / f"{case}.toml"
    path.write_text(text, encoding="utf-8")
    assert_one_line_error(check_config(path), path, fragments)


def test_check_config_reports_a_missing_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "no-such-site.toml"
    assert_one_line_error(check_config(path), path, ["file not found"])


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_parse_config_raises_config_error_naming_the_file(case: str) -> None:
    # The same defects in-process: a ConfigError (not a pydantic or TOML exception) whose message is one line.
    text, fragments = BROKEN[case]
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("site.toml: ")
    for fragment in fragments:
        assert fragment in message


def test_broken_cases_differ_from_a_loading_file_only_by_their_defect() -> None:
    # Guards the cases above: the unedited text loads, so each failure is caused by its edit alone.
    assert parse_config(DEMO_TEXT, "demo.toml").site.name == "Pilot Hall (simulated)"


_ONE_FERMENTER = '[[equipment]]\nid = "F"\nkind = "fermenter"\n'


@pytest.mark.parametrize(
    ("catalog", "message"),
    [
        ('"postgresql://biopilot:secret@db:5432/bp"', "carries a password"),
        ('"mysql://db/bp"', "postgresql://"),
        ('"biopilot.db"', "postgresql://"),
    ],
)
def test_a_catalog_url_is_postgresql_and_carries_no_password(catalog: str, message: str) -> None:
    text = (
        f'[site]\nname = "t"\n[storage]\ncatalog = {catalog}\n[[equipment]]\nid = "F"\nkind = "fermenter"\n'
    )
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_a_catalog_password_variable_needs_a_catalog_url() -> None:
    text = f'[site]\nname = "t"\n[storage]\ncatalog_password_env = "PW"\n{_ONE_FERMENTER}'
    with pytest.raises(ConfigError, match="needs a postgresql:// catalog URL"):
        parse_config(text)
