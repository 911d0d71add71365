"""Secrets: each leak probed in issue 12 gets a test. Passwords come from the environment or from a 0600 file,
never from the site config; no secret reaches a log (debug included), a health report or an error message."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import stat
from pathlib import Path

import pytest
from asyncua import ua

from biopilot.config import config_warnings, parse_config
from biopilot.errors import ConfigError
from biopilot.secrets import SECRETS, RedactingFilter, read_secret, redact
from collectors.opcua import OpcUaCollector
from collectors.security import Pki, create_client_certificate
from collectors.sink import Counts, SampleSink
from storage import SqliteStore
from tests.collectors.test_opcua_security import _config, secure_server
from tests.conftest import free_port

SECRET = "s3cret"  # the password tests/collectors/test_opcua_security.py's server accepts for "operator"


def test_opcua_password_env_holding_the_password_itself_is_refused() -> None:
    """Probed: `password_env = "<the password>"` passed check-config for OPC UA (MQTT refused it), and the
    password then showed up in collector.log and status --json as the name of an unset variable."""
    with pytest.raises(ConfigError) as info:
        parse_config(_config(4840, 'username = "operator"\npassword_env = "Pa$$w0rd!"'))
    message = str(info.value)
    assert "opcua.servers.dcs" in message and "not the password itself" in message
    assert "Pa$$w0rd!" not in message


def test_credentials_in_an_opcua_endpoint_are_refused() -> None:
    """Probed: opc.tcp://user:pass@host was accepted and the password logged 4 times."""
    text = _config(4840, "").replace(
        "opc.tcp://127.0.0.1:4840/", "opc.tcp://operator:hunter22@127.0.0.1:4840/"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    message = str(info.value)
    assert "opcua.servers.dcs.endpoint" in message and "password_env" in message
    assert "hunter22" not in message


@pytest.mark.parametrize("key", ["password", "passwd", "secret", "token", "api_key"])
def test_a_password_key_in_the_config_says_where_passwords_go(key: str) -> None:
    """Probed: `password = …` was refused only as 'unknown key (misspelled?)'."""
    with pytest.raises(ConfigError) as info:
        parse_config(_config(4840, f'username = "operator"\n{key} = "hunter22"'))
    message = str(info.value)
    assert f"opcua.servers.dcs.{key}: secrets are never written in the site config" in message
    assert "password_env" in message and "_FILE" in message and "hunter22" not in message
    assert "misspelled" not in message


def test_login_over_security_none_is_warned(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Probed: security None with a user login got no warning."""
    text = _config(4840, 'username = "operator"\npassword_env = "DCS_PASSWORD"')
    config = parse_config(text)
    warnings = config_warnings(config)
    assert len(warnings) == 1 and "opcua.servers.dcs" in warnings[0] and "SignAndEncrypt" in warnings[0]
    path = tmp_path / "site.toml"
    path.write_text(text)
    from biopilot.app.cli import main

    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: opcua.servers.dcs: user 'operator' logs in over security_policy 'None'" in out
    secure = parse_config(
        _config(4840, 'security_policy = "Basic256Sha256"\nsecurity_mode = "SignAndEncrypt"')
    )
    assert config_warnings(secure) == []


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """Probed: with umask 000 pki/trusted was 0777 and the database 0644."""
    old = os.umask(0)
    try:
        store = SqliteStore(tmp_path / "data" / "biopilot.db")
        store.close()
        pki = Pki(tmp_path / "data" / "pki")
        create_client_certificate(pki, hostname="test-host")
    finally:
        os.umask(old)

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(tmp_path / "data") == 0o700
    assert mode(tmp_path / "data" / "biopilot.db") == 0o600
    for wal in (tmp_path / "data").glob("biopilot.db-*"):
        assert mode(wal) == 0o600, wal
    assert mode(pki.root) == 0o700 and mode(pki.trusted) == 0o700 and mode(pki.cert.parent) == 0o700
    assert mode(pki.key) == 0o600


def test_secret_files_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "mqtt-password"
    file.write_text("from-a-file-123\n")
    monkeypatch.delenv("BP_TEST_PW", raising=False)
    monkeypatch.setenv("BP_TEST_PW_FILE", str(file))
    file.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by others .*chmod 600"):
        read_secret("BP_TEST_PW", what="mqtt.brokers.plant.password_env")
    file.chmod(0o600)
    assert read_secret("BP_TEST_PW", what="mqtt.brokers.plant.password_env") == "from-a-file-123"
    monkeypatch.setenv("BP_TEST_PW", "from-the-environment")
    assert read_secret("BP_TEST_PW", what="x") == "from-the-environment"
    assert (
        redact("connect failed for from-a-file-123 and from-the-environment")
        == "connect failed for *** and ***"
    )


def test_redaction_of_urls_password_fields_and_read_secrets() -> None:
    SECRETS.add("hunter2hunter2")
    assert redact("mqtt://bob:pa55word@broker:1883/x") == "mqtt://bob:***@broker:1883/x"
    assert redact("UserNameIdentityToken(PolicyId='x', UserName='operator', Password=b'\\x01s3cret')") == (
        "UserNameIdentityToken(PolicyId='x', UserName='operator', Password=b'***')".replace("b'***'", "'***'")
    )
    assert "hunter2hunter2" not in redact("error: login as bob with hunter2hunter2 failed")


def test_debug_logging_and_health_never_show_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probed: with -v the log showed Password=b'…' (asyncua's debug logging of the identity token). The CLI's
    handlers carry RedactingFilter: here the same filter on a debug handler while a collector logs in."""
    monkeypatch.setenv("DCS_PASSWORD", SECRET)
    port = free_port()
    config = parse_config(_config(port, 'username = "operator"\npassword_env = "DCS_PASSWORD"'))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    asyncua_logger = logging.getLogger("asyncua")  # as `biopilot -v` leaves it (without -v: CRITICAL)
    old_level, old_asyncua = root.level, asyncua_logger.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    asyncua_logger.setLevel(logging.DEBUG)
    try:

        async def main() -> OpcUaCollector:
            async with secure_server(tmp_path, port, policies=[ua.SecurityPolicyType.NoSecurity], users=True):
                collector = OpcUaCollector(
                    "dcs",
                    config.opcua.servers["dcs"],
                    config.tags,
                    SampleSink(SqliteStore(tmp_path / "t.db")),
                    Counts(),
                )
                stop = asyncio.Event()
                task = asyncio.create_task(collector.run(stop))
                for _ in range(400):
                    if collector.connects:
                        break
                    await asyncio.sleep(0.05)
                stop.set()
                await task
                return collector

        collector = asyncio.run(main())
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        asyncua_logger.setLevel(old_asyncua)
    text = stream.getvalue()
    assert collector.connects == 1
    assert len(text) > 10_000, "asyncua's debug log was not captured"
    identity = [line for line in text.splitlines() if "UserNameIdentityToken" in line or "Password" in line]
    print(f"\n{len(text.splitlines())} debug lines; identity-token lines: {identity[:2]}")
    assert "Password='***'" in text  # asyncua logged the identity token, and the filter masked its password
    assert SECRET not in text and SECRET.encode().hex() not in text


def test_status_last_error_is_redacted(tmp_path: Path) -> None:
    """A connection's last_error leaves the process in the health report (status --json, the live page):
    the runner passes it through redact."""
    import collectors.runner as runner

    source = Path(runner.__file__).read_text()
    assert source.count('"last_error": redact(') == 2
