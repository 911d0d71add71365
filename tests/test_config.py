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
    "source_without_protocol": (
        edit(TEMPERATURE_SOURCE, TEMPERATURE_SOURCE.replace('protocol = "opcua", ', "")),
        [f"tags[{T}].source", "(tag 'F-101.temperature')", "missing 'protocol'"],
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
    assert line.startswith(f"{path}: "), line
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


# -- every problem, one line each ----------------------------------------------------------------------


def test_check_config_lists_every_problem_one_line_each(tmp_path: Path) -> None:
    # Three mistakes of different kinds: two the schema sees (a misspelled role, an unknown key) and one
    # only the cross-checks see (a tag of an equipment that is not configured). Each is one line.
    text = edit('role = "temperature"', 'role = "temprature"')
    text = text.replace('unit = "pH"', 'unit = "pH"\ncolour = "blue"', 1)
    text = text.replace(
        'name = "F-101.dissolved_oxygen"\nequipment = "F-101"',
        'name = "F-101.dissolved_oxygen"\nequipment = "F-109"',
        1,
    )
    path = tmp_path / "three.toml"
    path.write_text(text, encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    assert all(line.startswith(f"{path}: tags[") for line in lines), lines
    assert f"tags[{T}].role (tag 'F-101.temperature'): 'temprature' is not allowed" in lines[0]
    assert f"tags[{tag_index('F-101.ph')}].colour (tag 'F-101.ph'): unknown key" in lines[1]
    do = tag_index("F-101.dissolved_oxygen")
    assert f"tags[{do}].equipment (tag 'F-101.dissolved_oxygen'): 'F-109' is not a configured" in lines[2]


def test_load_config_raises_one_error_listing_them_with_a_summary_first() -> None:
    text = edit('kind = "fermenter"', 'kind = "fermentor"').replace('unit = "degC"', 'unit = "bar"', 1)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.toml")
    lines = str(info.value).splitlines()
    assert lines[0] == "site.toml: 2 problems:"
    assert len(lines) == 3 and len(info.value.problems) == 2
    assert lines[1].startswith("site.toml: equipment[0].kind: 'fermentor' is not allowed")
    assert lines[2].startswith(f"site.toml: tags[{T}].unit (tag 'F-101.temperature'): 'bar' (pressure)")


def test_a_refused_item_is_not_reported_again_as_a_dangling_reference() -> None:
    # equipment[0] is refused by the schema; its tags are not also "not a configured equipment id", and the
    # positions of the items after a refused one are the file's.
    text = edit('kind = "fermenter"', 'kind = "fermentor"')
    text = text.replace('role = "ph"', 'role = "ph"\nbogus = 1', 1).replace('unit = "rpm"', 'unit = "bar"', 1)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.toml")
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert "equipment[0].kind" in problems[0]
    assert f"tags[{tag_index('F-101.ph')}].bogus" in problems[1]
    assert f"tags[{tag_index('F-101.agitation_speed')}].unit (tag 'F-101.agitation_speed')" in problems[2]


def test_check_config_warns_when_a_password_variable_is_unset(tmp_path: Path) -> None:
    text = DEMO_TEXT.replace(
        "[mqtt.brokers.plant]\n", '[mqtt.brokers.plant]\nusername = "bp"\npassword_env = "BP_NOT_SET_X"\n', 1
    )
    assert text != DEMO_TEXT
    path = tmp_path / "pw.toml"
    path.write_text(text, encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert result.stderr.splitlines() == [
        f"{path}: warning: mqtt.brokers.plant.password_env: the environment variable BP_NOT_SET_X is not"
        " set here; the collector needs it (the password) where it runs"
    ]


UNREADABLE = {
    "not_utf8": (lambda p: p.write_bytes(DEMO_TEXT.encode("utf-8") + b"\n# caf\xe9\n"), "not UTF-8 text"),
    "deeply_nested_arrays": (lambda p: p.write_text("x = " + "[" * 10_000 + "]" * 10_000), "nested"),
    "deeply_nested_tables": (
        lambda p: p.write_text("x = " + "{a = " * 10_000 + "1" + "}" * 10_000),
        "nested",
    ),
    "nested_within_the_recursion_limit": (lambda p: p.write_text("x = " + "[" * 200 + "]" * 200), "nested"),
    "directory": (lambda p: p.mkdir(), "is a directory"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_check_config_unreadable_files_are_one_line(case: str, tmp_path: Path) -> None:
    make, fragment = UNREADABLE[case]
    path = tmp_path / f"{case}.toml"
    make(path)
    assert_one_line_error(check_config(path), path, [fragment])


def test_a_tag_without_source_is_import_only(tmp_path: Path) -> None:
    config = parse_config(edit(TEMPERATURE_SOURCE, ""), "site.toml")
    tag = config.tag("F-101.temperature")
    assert tag.source is None and tag.source_label is None
    path = tmp_path / "import-only.toml"
    path.write_text(edit(TEMPERATURE_SOURCE, ""), encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 0 and "1 import-only" in result.stdout, result.stderr


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ('path = "biopilot.db"', 'path = "../../OUTSIDE.db"', "storage.path: '../../OUTSIDE.db' leads"),
        ('path = "biopilot.db"', 'path = "/tmp/abs.db"', "storage.path: '/tmp/abs.db' leads outside"),
        ('id = "F-101"', 'id = "../../F"', "equipment[0].id: equipment id '../../F' contains a path"),
        ('id = "F-101"', 'id = "F\\u001b[31m"', "equipment id 'F\\x1b[31m' contains the control"),
        ('id = "F-101"', 'id = ""', "equipment[0].id: equipment id '' is empty"),
        ('id = "F-101"', 'id = "F:1"', "contains ':'"),
        ('name = "F-101.ph"', 'name = "F-101/ph"', "tag name 'F-101/ph' contains a path separator"),
        ('name = "F-101.ph"', 'name = "F-101.ph\\n"', "tag name 'F-101.ph\\n' contains the control"),
    ],
)
def test_ids_and_paths_that_would_leave_their_folder_are_refused(old: str, new: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(DEMO_TEXT.replace(old, new, 1), "site.toml")
    assert fragment in str(info.value), str(info.value)


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
