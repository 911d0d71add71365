"""MQTT over TLS with a username and password, against a real Mosquitto with TLS listeners and a password
file. The CA and the certificates are made in the test (cryptography, already installed for asyncua); the
password file with mosquitto_passwd. A wrong password or an untrusted broker certificate must give a clear
log line and a retry, never a crash."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import json
import logging
import shutil
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from biopilot.app.broker import mosquitto_binary
from biopilot.config import parse_config
from collectors.mqtt import MqttCollector
from collectors.sink import Counts, SampleSink
from storage import SqliteStore
from tests.collectors.tls_pki import Pki
from tests.conftest import IN_CI, PrivateMosquitto, free_port, require_mosquitto, wait_until

PASSWORD = "s3cret pass"  # with a space: the password travels as it is
T0 = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)


# -- a Mosquitto with three TLS listeners --------------------------------------------------------------


def mosquitto_passwd() -> str:
    """mosquitto_passwd: on PATH or next to the mosquitto binary (skip, or fail in CI, without it)."""
    binary = mosquitto_binary()
    candidates = [shutil.which("mosquitto_passwd")]
    if binary is not None:
        here = Path(binary).parent
        candidates += [str(here / "mosquitto_passwd"), str(here.parent / "bin" / "mosquitto_passwd")]
    found = next((c for c in candidates if c and Path(c).is_file()), None)
    if found is None:
        if IN_CI:
            pytest.fail("mosquitto_passwd is required in CI (it comes with the mosquitto package)")
        pytest.skip("SKIPPED FOR MISSING mosquitto_passwd: the password-file tests need it next to mosquitto")
    return found


@dataclass(frozen=True)
class TlsBroker:
    password_port: int  # TLS, username and password from the password file
    client_cert_port: int  # TLS, the client must show a certificate signed by the CA
    elsewhere_port: int  # TLS with a certificate for another host name, username and password
    pki: Pki


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    require_mosquitto()
    passwd_tool = mosquitto_passwd()
    workdir = tmp_path_factory.mktemp("mosquitto-tls")
    pki = Pki(workdir)
    passwd = workdir / "passwd"
    subprocess.run(
        [passwd_tool, "-c", "-b", str(passwd), "biopilot", PASSWORD], check=True, capture_output=True
    )
    passwd.chmod(0o600)
    broker = PrivateMosquitto(workdir)
    ports = [free_port(), free_port(), free_port()]
    ca, server, elsewhere = pki.ca_pem, pki.server_pem, pki.elsewhere_pem
    lines = ["per_listener_settings true", f"user {getpass.getuser()}", "persistence false"]
    # deliberate queue limits (the default max_queued_messages 1000 drops QoS 1 messages of a subscriber that
    # falls behind on a loaded machine: 1872 of 2000 arrived in one CI run)
    lines += ["max_queued_messages 1000000", "max_queued_bytes 0", "max_inflight_messages 1000"]
    lines += ["log_type error", "log_type warning", "log_type notice", "connection_messages true"]
    for port, cert, extra in [
        (ports[0], server, [f"password_file {passwd}", "allow_anonymous false"]),
        (
            ports[1],
            server,
            ["require_certificate true", "use_identity_as_username true", "allow_anonymous true"],
        ),
        (ports[2], elsewhere, [f"password_file {passwd}", "allow_anonymous false"]),
    ]:
        lines += [f"listener {port} 127.0.0.1", f"cafile {ca}", f"certfile {cert}"]
        lines += [f"keyfile {cert.with_suffix('.key')}", *extra]
    broker.conf.write_text("\n".join(lines) + "\n")
    broker.port = ports[0]  # start() waits until this one answers
    broker.start()
    try:
        yield TlsBroker(*ports, pki)
    finally:
        broker.stop()


# -- helpers -------------------------------------------------------------------------------------------


def _config(port: int, prefix: str, broker_keys: str) -> str:
    return f"""
[site]
name = "tls"
[mqtt.brokers.b]
host = "127.0.0.1"
port = {port}
client_id = "c-{prefix}"
keepalive_s = 5
{broker_keys}
[[equipment]]
id = "R-1"
kind = "recovery"
[[tags]]
name = "R-1.flow"
equipment = "R-1"
role = "flow"
unit = "L/h"
source = {{ protocol = "mqtt", broker = "b", topic = "{prefix}/R-1/flow" }}
"""


def _publisher(port: int, pki: Pki) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.tls_set_context(ssl.create_default_context(cafile=str(pki.ca_pem)))
    client.username_pw_set("biopilot", PASSWORD)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _collector(text: str, store: SqliteStore) -> tuple[MqttCollector, SampleSink]:
    config = parse_config(text)
    sink = SampleSink(store)
    return MqttCollector("b", config.mqtt.brokers["b"], config.tags, sink, Counts(), dt.UTC), sink


def _messages(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if fragment in r.getMessage()]


async def _run_until_logged(
    collector: MqttCollector, caplog: pytest.LogCaptureFixture, fragment: str, times: int
) -> list[str]:
    """Run the collector until `fragment` was logged `times` times (retries), then stop it; it never
    connects meanwhile and stops cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:
        assert await wait_until(lambda: len(_messages(caplog, fragment)) >= times or task.done(), 30), (
            f"{fragment!r} was logged {len(_messages(caplog, fragment))} times: "
            f"{[r.getMessage() for r in caplog.records]}"
        )
        assert not task.done(), "the collector gave up (or crashed) instead of retrying"
        assert not collector.connected.is_set() and collector.connects == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)  # stops within a bounded time; re-raises if it crashed
    return _messages(caplog, fragment)


# -- tests ---------------------------------------------------------------------------------------------


def test_tls_with_username_and_password_loses_nothing(
    tls_broker: TlsBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIOPILOT_TEST_MQTT_PASSWORD", PASSWORD)
    prefix = uuid.uuid4().hex[:8]
    keys = (
        'username = "biopilot"\npassword_env = "BIOPILOT_TEST_MQTT_PASSWORD"\n'
        f'tls = {{ ca_file = "{tls_broker.pki.ca_pem}" }}'
    )
    store = SqliteStore(tmp_path / "t.db")
    collector, sink = _collector(_config(tls_broker.password_port, prefix, keys), store)
    n = 2000

    async def main() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(collector.run(stop)), asyncio.create_task(sink.run(stop))]
        try:
            await asyncio.wait_for(collector.subscribed.wait(), 15)
            assert collector._client is not None
            assert isinstance(collector._client.socket(), ssl.SSLSocket)  # the loop watches a TLS socket
            pub = _publisher(tls_broker.password_port, tls_broker.pki)
            try:

                def publish_all() -> None:
                    infos = [
                        pub.publish(
                            f"{prefix}/R-1/flow",
                            json.dumps({"ts": (T0 + dt.timedelta(seconds=i)).isoformat(), "value": float(i)}),
                            qos=1,
                        )
                        for i in range(n)
                    ]
                    for info in infos:
                        info.wait_for_publish(30)

                await asyncio.to_thread(publish_all)
            finally:
                pub.loop_stop()
                pub.disconnect()
            assert await wait_until(lambda: store.count("R-1.flow") >= n, 30), (
                f"{store.count('R-1.flow')} of {n}"
            )
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    asyncio.run(main())
    data = store.read("R-1.flow", T0, T0 + dt.timedelta(days=1))
    assert sorted(data.values.tolist()) == [float(i) for i in range(n)]
    assert collector.counts.of("mqtt:b") == {"msg_accepted": n, "values": n}
    assert collector.last_error is None


def test_client_certificate(tls_broker: TlsBroker, tmp_path: Path) -> None:
    prefix = uuid.uuid4().hex[:8]
    pki = tls_broker.pki
    keys = (
        f'tls = {{ ca_file = "{pki.ca_pem}", cert_file = "{pki.client_pem}", key_file = "{pki.client_key}" }}'
    )
    store = SqliteStore(tmp_path / "t.db")
    collector, sink = _collector(_config(tls_broker.client_cert_port, prefix, keys), store)

    async def main() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(collector.run(stop)), asyncio.create_task(sink.run(stop))]
        try:
            await asyncio.wait_for(collector.subscribed.wait(), 15)
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{prefix}")
            context = ssl.create_default_context(cafile=str(pki.ca_pem))
            context.load_cert_chain(str(pki.client_pem), str(pki.client_key))
            pub.tls_set_context(context)
            pub.connect("127.0.0.1", tls_broker.client_cert_port)
            pub.loop_start()
            try:
                payload = json.dumps({"ts": T0.isoformat(), "value": 12.5})
                await asyncio.to_thread(
                    pub.publish(f"{prefix}/R-1/flow", payload, qos=1).wait_for_publish, 10
                )
            finally:
                pub.loop_stop()
                pub.disconnect()
            assert await wait_until(lambda: store.count("R-1.flow") == 1, 15)
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    asyncio.run(main())
    assert store.read("R-1.flow", T0, T0 + dt.timedelta(hours=1)).values.tolist() == [12.5]


def test_wrong_password_is_logged_and_retried(
    tls_broker: TlsBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="collectors.mqtt")
    monkeypatch.setenv("BIOPILOT_TEST_MQTT_PASSWORD", "not the password")
    keys = (
        'username = "biopilot"\npassword_env = "BIOPILOT_TEST_MQTT_PASSWORD"\n'
        f'tls = {{ ca_file = "{tls_broker.pki.ca_pem}" }}'
    )
    collector, _ = _collector(
        _config(tls_broker.password_port, uuid.uuid4().hex[:8], keys), SqliteStore(tmp_path / "t.db")
    )
    lines = asyncio.run(_run_until_logged(collector, caplog, "refused the connection", 2))
    assert "check the username 'biopilot' and the password in $BIOPILOT_TEST_MQTT_PASSWORD" in lines[0], (
        lines[0]
    )
    assert PASSWORD not in " ".join(lines) and "not the password" not in " ".join(lines)  # never logged
    assert collector.last_error is not None and "refused" in collector.last_error


def test_no_credentials_for_a_broker_that_wants_them(
    tls_broker: TlsBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="collectors.mqtt")
    keys = f'tls = {{ ca_file = "{tls_broker.pki.ca_pem}" }}'
    collector, _ = _collector(
        _config(tls_broker.password_port, uuid.uuid4().hex[:8], keys), SqliteStore(tmp_path / "t.db")
    )
    lines = asyncio.run(_run_until_logged(collector, caplog, "refused the connection", 1))
    assert "set username and password_env" in lines[0], lines[0]


def test_password_env_not_set_is_logged_and_retried(
    tls_broker: TlsBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="collectors.mqtt")
    monkeypatch.delenv("BIOPILOT_TEST_UNSET_PASSWORD", raising=False)
    keys = 'username = "biopilot"\npassword_env = "BIOPILOT_TEST_UNSET_PASSWORD"'
    collector, _ = _collector(
        _config(tls_broker.password_port, uuid.uuid4().hex[:8], keys), SqliteStore(tmp_path / "t.db")
    )
    lines = asyncio.run(_run_until_logged(collector, caplog, "is not set", 1))
    assert (
        "mqtt.brokers.b.password_env: the environment variable BIOPILOT_TEST_UNSET_PASSWORD"
        " (or BIOPILOT_TEST_UNSET_PASSWORD_FILE) is not set" in lines[0]
    )


def test_untrusted_broker_certificate_is_logged_and_retried(
    tls_broker: TlsBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="collectors.mqtt")
    monkeypatch.setenv("BIOPILOT_TEST_MQTT_PASSWORD", PASSWORD)
    keys = (
        'username = "biopilot"\npassword_env = "BIOPILOT_TEST_MQTT_PASSWORD"\n'
        f'tls = {{ ca_file = "{tls_broker.pki.other_ca_pem}" }}'
    )
    collector, _ = _collector(
        _config(tls_broker.password_port, uuid.uuid4().hex[:8], keys), SqliteStore(tmp_path / "t.db")
    )
    lines = asyncio.run(_run_until_logged(collector, caplog, "cannot connect", 2))
    assert "certificate verify failed" in lines[0], lines[0]
    assert "is mqtt.brokers.b.tls.ca_file the CA that signed it?" in lines[0], lines[0]


def test_certificate_for_another_host_name_and_insecure(
    tls_broker: TlsBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="collectors.mqtt")
    monkeypatch.setenv("BIOPILOT_TEST_MQTT_PASSWORD", PASSWORD)
    keys = (
        'username = "biopilot"\npassword_env = "BIOPILOT_TEST_MQTT_PASSWORD"\n'
        f'tls = {{ ca_file = "{tls_broker.pki.ca_pem}" }}'
    )
    prefix = uuid.uuid4().hex[:8]
    collector, _ = _collector(
        _config(tls_broker.elsewhere_port, prefix, keys), SqliteStore(tmp_path / "t.db")
    )
    lines = asyncio.run(_run_until_logged(collector, caplog, "cannot connect", 1))
    assert "does not name '127.0.0.1'" in lines[0] and "insecure = true" in lines[0], lines[0]
    # insecure skips the host-name check only: the certificate is still checked against the CA
    insecure = keys.replace(" }", ", insecure = true }")
    collector, _ = _collector(
        _config(tls_broker.elsewhere_port, prefix, insecure), SqliteStore(tmp_path / "u.db")
    )

    async def connects() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        try:
            await asyncio.wait_for(collector.connected.wait(), 15)
        finally:
            stop.set()
            await task

    asyncio.run(connects())
    untrusted = insecure.replace(str(tls_broker.pki.ca_pem), str(tls_broker.pki.other_ca_pem))
    collector, _ = _collector(
        _config(tls_broker.elsewhere_port, prefix, untrusted), SqliteStore(tmp_path / "v.db")
    )
    caplog.clear()
    lines = asyncio.run(_run_until_logged(collector, caplog, "cannot connect", 1))
    assert "not trusted" in lines[0], lines[0]


def test_plain_client_on_a_tls_port_is_logged_and_retried(
    tls_broker: TlsBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="collectors.mqtt")
    collector, _ = _collector(
        _config(tls_broker.password_port, uuid.uuid4().hex[:8], ""), SqliteStore(tmp_path / "t.db")
    )
    lines = asyncio.run(_run_until_logged(collector, caplog, "closed before the broker answered", 2))
    assert "is this a TLS port? then configure [tls]" in lines[0], lines[0]
