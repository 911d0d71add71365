"""OPC UA security against a real asyncua server on a free port: Basic256Sha256 with SignAndEncrypt and
Sign, the collector's certificate, the explicit trust list, username and password, and the messages that
name the certificate and the fix."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import Server, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from biopilot.config import parse_config
from biopilot.errors import SourceError
from collectors.opcua import OpcUaCollector, make_client
from collectors.security import Pki, create_client_certificate, thumbprint, trust
from collectors.sink import Counts, SampleSink
from storage import SqliteStore
from tests.conftest import free_port

NS = "urn:biopilot:test:secure"
T0 = datetime(2026, 8, 1, tzinfo=UTC)


def _server_cert(tmp: Path) -> tuple[Path, Path]:
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        "Test DCS",
        {},
        [x509.UniformResourceIdentifier("urn:test:dcs"), x509.DNSName("localhost")],
        [ExtendedKeyUsageOID.SERVER_AUTH],
    )
    cert_path, key_path = tmp / "server.der", tmp / "server.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


class _Users:
    def get_user(
        self,
        iserver: object,
        username: str | None = None,
        password: str | None = None,
        certificate: object = None,
    ) -> User | None:
        if username == "operator" and password == "s3cret":
            return User(role=UserRole.User)
        return None


@asynccontextmanager
async def secure_server(
    tmp: Path,
    port: int,
    *,
    policies: list[ua.SecurityPolicyType],
    users: bool = False,
    reject_clients: bool = False,
) -> AsyncIterator[Server]:
    server = Server(user_manager=_Users()) if users else Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/secure/")
    await server.set_application_uri("urn:test:dcs")
    server.set_security_policy(policies)
    if users:
        server.set_security_IDs(["Username"])
    cert, key = _server_cert(tmp)
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    if reject_clients:

        async def reject(cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
            raise ua.uaerrors.BadCertificateUntrusted

        server.set_certificate_validator(reject)
    idx = await server.register_namespace(NS)
    folder = await server.nodes.objects.add_folder(idx, "E-1")
    var = await folder.add_variable(
        ua.NodeId("E-1.Temperature", idx), ua.QualifiedName("Temperature", idx), 30.0
    )
    await server.write_attribute_value(
        var.nodeid, ua.DataValue(ua.Variant(30.5, ua.VariantType.Double), SourceTimestamp=T0)
    )
    async with server:
        yield server


def _config(port: int, security: str) -> str:
    return f"""
[site]
name = "secure"
[opcua.servers.dcs]
endpoint = "opc.tcp://127.0.0.1:{port}/secure/"
namespace = "{NS}"
{security}
[[equipment]]
id = "E-1"
kind = "fermenter"
[[tags]]
name = "E-1.temperature"
equipment = "E-1"
role = "temperature"
unit = "degC"
source = {{ protocol = "opcua", server = "dcs", browse_path = "E-1/Temperature" }}
"""


SIGN_AND_ENCRYPT = 'security_policy = "Basic256Sha256"\nsecurity_mode = "SignAndEncrypt"'


def test_secure_connection_needs_our_certificate_and_a_trusted_server(tmp_path: Path) -> None:
    port = free_port()
    config = parse_config(_config(port, SIGN_AND_ENCRYPT))
    srv = config.opcua.servers["dcs"]
    pki = Pki(tmp_path / "pki")

    async def main() -> None:
        async with secure_server(
            tmp_path, port, policies=[ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        ):
            # 1. no client certificate yet: say which file and how to create it
            with pytest.raises(
                SourceError,
                match=r"client certificate .*cert\.der does not exist: create it with "
                r"`biopilot certs create",
            ):
                await make_client("dcs", srv, pki)
            create_client_certificate(pki, hostname="test-host")
            # 2. the server's certificate is not trusted: kept in rejected/, the message says how to trust it
            with pytest.raises(
                SourceError,
                match=r"'Test DCS' \(thumbprint [0-9a-f]{40}.*is not in the trust list"
                r".*biopilot certs trust .*rejected/[0-9a-f]{40}\.der",
            ):
                await make_client("dcs", srv, pki)
            rejected = next((tmp_path / "pki" / "rejected").glob("*.der"))
            assert thumbprint(x509.load_der_x509_certificate(rejected.read_bytes())) == rejected.stem
            trust(pki, rejected)
            # 3. trusted: values flow over a signed and encrypted channel
            store = SqliteStore(tmp_path / "t.db")
            sink = SampleSink(store)
            collector = OpcUaCollector("dcs", srv, config.tags, sink, Counts(), pki=pki)
            stop = asyncio.Event()
            tasks = [asyncio.create_task(collector.run(stop)), asyncio.create_task(sink.run(stop))]
            await asyncio.wait_for(collector.connected.wait(), 20)
            for _ in range(100):
                if store.count("E-1.temperature"):
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*tasks)
            data = store.read("E-1.temperature", T0, T0 + timedelta(seconds=1))
            assert list(data.values) == [30.5]

    asyncio.run(main())


def test_a_missing_security_mode_on_the_server_is_named(tmp_path: Path) -> None:
    port = free_port()
    config = parse_config(_config(port, 'security_policy = "Basic256Sha256"\nsecurity_mode = "Sign"'))
    pki = Pki(tmp_path / "pki")
    create_client_certificate(pki)

    async def main() -> None:
        async with secure_server(
            tmp_path, port, policies=[ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
        ):
            with pytest.raises(
                SourceError,
                match=r"offers no Basic256Sha256/Sign endpoint \(it offers: .*"
                r"Basic256Sha256/SignAndEncrypt.*security_policy and security_mode",
            ):
                await make_client("dcs", config.opcua.servers["dcs"], pki)

    asyncio.run(main())


def test_a_server_that_refuses_our_certificate_says_so(tmp_path: Path) -> None:
    port = free_port()
    config = parse_config(_config(port, SIGN_AND_ENCRYPT))
    pki = Pki(tmp_path / "pki")
    create_client_certificate(pki)

    async def main() -> OpcUaCollector:
        async with secure_server(
            tmp_path,
            port,
            policies=[ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt],
            reject_clients=True,
        ):
            for cert in (tmp_path / "server.der",):
                trust(pki, cert)
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
            for _ in range(200):
                if collector.last_error:
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await task
            return collector

    collector = asyncio.run(main())
    assert not collector.connects
    assert collector.last_error is not None and "cert.der" in collector.last_error
    assert "trust it on the server" in collector.last_error


def test_username_and_password_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    config = parse_config(_config(port, 'username = "operator"\npassword_env = "DCS_PASSWORD"'))
    srv = config.opcua.servers["dcs"]
    store = SqliteStore(tmp_path / "t.db")

    async def run_collector() -> OpcUaCollector:
        collector = OpcUaCollector("dcs", srv, config.tags, SampleSink(store), Counts())
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        for _ in range(200):
            if collector.connects or collector.last_error:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task
        return collector

    async def main() -> tuple[OpcUaCollector, OpcUaCollector, OpcUaCollector]:
        async with secure_server(tmp_path, port, policies=[ua.SecurityPolicyType.NoSecurity], users=True):
            monkeypatch.delenv("DCS_PASSWORD", raising=False)
            unset = await run_collector()
            monkeypatch.setenv("DCS_PASSWORD", "wrong")
            wrong = await run_collector()
            monkeypatch.setenv("DCS_PASSWORD", "s3cret")
            right = await run_collector()
            return unset, wrong, right

    unset, wrong, right = asyncio.run(main())
    assert (
        unset.last_error is not None and "DCS_PASSWORD (or DCS_PASSWORD_FILE) is not set" in unset.last_error
    )
    assert wrong.connects == 0 and wrong.last_error is not None
    assert "rejected the user 'operator'" in wrong.last_error or "denied access" in wrong.last_error
    assert right.connects == 1 and right.last_error is None
