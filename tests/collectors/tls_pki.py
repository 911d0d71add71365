"""A throwaway PKI for TLS tests, made with cryptography (installed for asyncua)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


class Pki:
    """A CA with a server certificate for 127.0.0.1 and localhost, one for another host name only, a client
    certificate, and a second CA that signed none of them."""

    def __init__(self, directory: Path) -> None:
        now = dt.datetime.now(dt.UTC)
        self.directory = directory
        ca_key = _key()
        ca = self._cert(_name("BioPilot test CA"), ca_key, ca_key, _name("BioPilot test CA"), now, ca=True)
        self.ca_pem = directory / "ca.pem"
        _write(self.ca_pem, ca)
        names: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
        ]
        self.server_pem = self._leaf("server", ca_key, now, names, ExtendedKeyUsageOID.SERVER_AUTH)
        self.elsewhere_pem = self._leaf(
            "elsewhere",
            ca_key,
            now,
            [x509.DNSName("broker.elsewhere.invalid")],
            ExtendedKeyUsageOID.SERVER_AUTH,
        )
        self.client_pem = self._leaf("client", ca_key, now, [], ExtendedKeyUsageOID.CLIENT_AUTH)
        self.client_key = self.client_pem.with_suffix(".key")
        other_key = _key()
        self.other_ca_pem = directory / "other-ca.pem"
        _write(
            self.other_ca_pem,
            self._cert(_name("Other CA"), other_key, other_key, _name("Other CA"), now, ca=True),
        )

    def _leaf(
        self,
        cn: str,
        ca_key: ec.EllipticCurvePrivateKey,
        now: dt.datetime,
        names: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
    ) -> Path:
        key = _key()
        cert = self._cert(_name(cn), key, ca_key, _name("BioPilot test CA"), now, names=names, usage=usage)
        path = self.directory / f"{cn}.pem"
        _write(path, cert, key)
        return path

    @staticmethod
    def _cert(
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        now: dt.datetime,
        *,
        ca: bool = False,
        names: list[x509.GeneralName] | None = None,
        usage: x509.ObjectIdentifier | None = None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return builder.sign(signer, hashes.SHA256())
