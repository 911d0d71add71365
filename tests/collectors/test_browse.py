"""`biopilot browse` against a real asyncua server on a free port."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from asyncua import Client

from biopilot.config import Role, parse_config
from biopilot.errors import ConfigError
from collectors.browse import Variable, browse_variables, tag_blocks
from simulators.opcua_server import OpcUaPlantServer
from tests.conftest import REPO, free_port

NS = "urn:biopilot:test:browse"
SIGNALS = {
    "BatchId": ("text", ""),
    "Temperature": ("float", "degC"),
    "pH": ("float", "pH"),
    "AgitatorSpeed": ("float", "rpm"),
    "AgitatorPower": ("float", "kW"),
    "Mystery": ("float", "furlong"),
}


def _serve_and(port: int, action):
    async def main():
        server = OpcUaPlantServer(f"opc.tcp://127.0.0.1:{port}/b/", NS, history=0)
        await server.__aenter__()
        await server.add_equipment("E-1", SIGNALS, datetime(2026, 1, 1, tzinfo=UTC))
        await server.start()
        try:
            return await action()
        finally:
            await server.__aexit__(None, None, None)

    return asyncio.run(main())


def test_browse_lists_variables_with_paths_types_units_and_guessed_roles() -> None:
    port = free_port()

    async def browse() -> list[Variable]:
        client = Client(f"opc.tcp://127.0.0.1:{port}/b/")
        async with client:
            return await browse_variables(client)

    found = {v.path: v for v in _serve_and(port, browse)}
    assert set(found) == {f"E-1/{name}" for name in SIGNALS}
    temp = found["E-1/Temperature"]
    assert (temp.data_type, temp.unit, temp.namespace, temp.node_id) == (
        "Double",
        "degC",
        NS,
        "ns=2;s=E-1.Temperature",
    )
    assert found["E-1/BatchId"].data_type == "String"
    roles = {path: v.guess_role() for path, v in found.items()}
    assert roles == {
        "E-1/BatchId": Role.BATCH_ID,
        "E-1/Temperature": Role.TEMPERATURE,
        "E-1/pH": Role.PH,
        "E-1/AgitatorSpeed": Role.AGITATION_SPEED,
        "E-1/AgitatorPower": Role.POWER,  # "agitat" first, but kW is no agitation speed
        "E-1/Mystery": None,
    }

    header = f'[site]\nname = "b"\n[opcua.servers.plant]\nendpoint = "opc.tcp://127.0.0.1:{port}/b/"\n'
    header += f'namespace = "{NS}"\n[[equipment]]\nid = "E-1"\nkind = "fermenter"\n'
    known = [v for v in found.values() if v.path != "E-1/Mystery"]
    config = parse_config(header + tag_blocks(known, "plant"))
    assert {t.name for t in config.tags} == {
        "E-1.batch_id",
        "E-1.temperature",
        "E-1.ph",
        "E-1.agitator_speed",
        "E-1.agitator_power",
    }
    # a variable it cannot place is left for the engineer, and the config says so until it is fixed
    with pytest.raises(ConfigError, match=r"role.*'\?' is not allowed"):
        parse_config(header + tag_blocks(list(found.values()), "plant"))


def test_browse_command_prints_the_table() -> None:
    port = free_port()

    async def run_cli() -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "biopilot",
            "browse",
            f"opc.tcp://127.0.0.1:{port}/b/",
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        return out.decode()

    out = _serve_and(port, run_cli)
    assert "E-1/Temperature" in out and "degC" in out and "ns=2;s=E-1.Temperature" in out and NS in out


def test_browse_of_a_dead_endpoint_is_one_line() -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "biopilot", "browse", f"opc.tcp://127.0.0.1:{port}/nothing/"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        result.stderr.startswith("biopilot: cannot connect to opc.tcp://127.0.0.1:")
        and "Traceback" not in result.stderr
    )
