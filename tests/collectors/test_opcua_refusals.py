"""Refusals by an OPC UA server, as `biopilot browse` and the collector report them: one line naming the
certificate or the user and the fix, never a traceback, never an empty reason.

The certificate refusal is the one a server that we did not write gives (node-opcua: BadSecurityChecksFailed
in its answer to OpenSecureChannel, the client certificate kept in its rejected/ folder), on which asyncua
raises a bare AssertionError. A real asyncua server is made to answer that way: its OpenSecureChannel
handler is wrapped to put BadSecurityChecksFailed in the response (the fault a real asyncua server cannot
produce by itself; everything else is the real server and the real client)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.server.uaprocessor import UaProcessor

from biopilot.config import parse_config
from collectors.opcua import OpcUaCollector
from collectors.security import Pki, create_client_certificate, trust
from collectors.sink import Counts, SampleSink
from storage import SqliteStore
from tests.collectors.test_opcua_security import SIGN_AND_ENCRYPT, _config, secure_server
from tests.conftest import REPO, free_port, wait_until


@pytest.fixture
def refusing_channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Servers of this process answer OpenSecureChannel with BadSecurityChecksFailed, as node-opcua does
    for a client certificate it does not trust."""
    original = UaProcessor.send_response

    def send_response(self, requesthandle, seqhdr, response, msgtype=ua.MessageType.SecureMessage):
        secure = self._connection.security_policy.Mode != ua.MessageSecurityMode.None_
        if isinstance(response, ua.OpenSecureChannelResponse) and secure:  # GetEndpoints stays open
            response.ResponseHeader.ServiceResult = ua.StatusCode(ua.StatusCodes.BadSecurityChecksFailed)
        return original(self, requesthandle, seqhdr, response, msgtype)

    monkeypatch.setattr(UaProcessor, "send_response", send_response)
    yield


def _browse(cfg: Path, data_dir: Path, env: dict[str, str] | None = None) -> asyncio.Future:
    return asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "biopilot",
        "browse",
        "--config",
        str(cfg),
        "--server",
        "dcs",
        "--data-dir",
        str(data_dir),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


async def _collect_until_error(config_text: str, tmp_path: Path, pki: Pki | None) -> OpcUaCollector:
    config = parse_config(config_text)
    collector = OpcUaCollector(
        "dcs",
        config.opcua.servers["dcs"],
        config.tags,
        SampleSink(SqliteStore(tmp_path / "t.db")),
        Counts(),
        pki=pki,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:
        assert await wait_until(lambda: collector.last_error is not None, 20)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    return collector


def test_a_refused_certificate_is_one_line_naming_it_and_the_fix(
    tmp_path: Path, refusing_channels: None
) -> None:
    port = free_port()
    text = _config(port, SIGN_AND_ENCRYPT)
    cfg = tmp_path / "site.toml"
    cfg.write_text(text)
    data_dir = tmp_path / "data"
    pki = Pki(data_dir / "pki")
    create_client_certificate(pki)

    async def main() -> tuple[int, str, str, OpcUaCollector]:
        async with secure_server(
            tmp_path, port, policies=[ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        ):
            trust(pki, tmp_path / "server.der")
            proc = await _browse(cfg, data_dir)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            collector = await _collect_until_error(text, tmp_path, pki)
            return proc.returncode or 0, out.decode(), err.decode(), collector

    code, out, err, collector = asyncio.run(main())
    print(f"\nbrowse: {err.strip()}\ncollect: {collector.last_error}")
    assert code == 2 and out == ""
    assert "Traceback" not in err and "AssertionError" not in err and len(err.strip().splitlines()) == 1, err
    for said in (err, collector.last_error or ""):
        assert (
            str(pki.cert) in said and "BadSecurityChecksFailed" in said and "trust it on the server" in said
        )
    assert collector.connects == 0


def test_a_wrong_password_is_one_line_naming_the_user(tmp_path: Path) -> None:
    port = free_port()
    text = _config(port, 'username = "operator"\npassword_env = "DCS_PASSWORD"')
    cfg = tmp_path / "site.toml"
    cfg.write_text(text)

    async def main() -> tuple[int, str, str]:
        async with secure_server(tmp_path, port, policies=[ua.SecurityPolicyType.NoSecurity], users=True):
            env = {**__import__("os").environ, "DCS_PASSWORD": "wrong"}
            proc = await _browse(cfg, tmp_path / "data", env)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode or 0, out.decode(), err.decode()

    code, out, err = asyncio.run(main())
    print(f"\nbrowse: {err.strip()}")
    assert code == 2 and out == ""
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "user 'operator'" in err and "$DCS_PASSWORD" in err
