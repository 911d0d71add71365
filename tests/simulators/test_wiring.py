"""simulators/wiring.py: a tag that collects a simulated signal must say the unit the simulator serves it
in, or the KPIs would read the simulator's numbers in another unit."""

from __future__ import annotations

from pathlib import Path

import pytest

from biopilot.config import parse_config
from biopilot.errors import ConfigError
from simulators.wiring import tag_map

DEMO = (Path(__file__).resolve().parents[2] / "config" / "demo.toml").read_text(encoding="utf-8")
AIR = 'unit = "NL/min"\nsource = { protocol = "opcua", server = "pilot", browse_path = "F-101/AirFlow" }'


def test_the_shipped_demo_maps_every_signal_in_its_unit() -> None:
    tags = tag_map(parse_config(DEMO))
    assert tags[("F-101", "DischargeFlow")] == "F-101.discharge_flow"
    assert parse_config(DEMO).tag("F-101.discharge_flow").role.value == "discharge_flow"


def test_a_tag_in_another_unit_than_the_simulator_serves_is_refused() -> None:
    assert DEMO.count(AIR) == 1
    config = parse_config(DEMO.replace(AIR, AIR.replace("NL/min", "Nm3/h")))
    with pytest.raises(
        ConfigError,
        match=r"'F-101.air_flow' collects the simulated F-101/AirFlow, served in "
        r"'NL/min', but its unit is 'Nm3/h' \(set unit = 'NL/min'\)",
    ):
        tag_map(config)
    # the same unit spelled otherwise is the same unit: a normal litre is a litre
    assert tag_map(parse_config(DEMO.replace(AIR, AIR.replace("NL/min", "L/min"))))
