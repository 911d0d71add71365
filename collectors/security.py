"""OPC UA security: BioPilot's client certificate and the explicit trust list of server certificates.

Layout under <data-dir>/pki/:
  own/cert.der, own/key.pem   this collector's application instance certificate (`biopilot certs create`)
  trusted/*.der               server certificates we trust (`biopilot certs trust FILE`)
  rejected/*.der              server certificates we met and did not trust, kept so an admin can inspect
                              them and, if right, trust them

A server certificate is trusted when its SHA-1 thumbprint (the OPC UA convention) equals one in trusted/.
Every failure names the certificate and the fix.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from biopilot.errors import SourceError


@dataclass(frozen=True)
class Pki:
    root: Path

    @property
    def cert(self) -> Path:
        return self.root / "own" / "cert.der"

    @property
    def key(self) -> Path:
        return self.root / "own" / "key.pem"

    @property
    def trusted(self) -> Path:
        return self.root / "trusted"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"


def application_uri(hostname: str | None = None) -> str:
    return f"urn:{hostname or socket.gethostname()}:biopilot:collector"


def create_client_certificate(pki: Pki, *, hostname: str | None = None, days: int = 730) -> x509.Certificate:
    """A self-signed application instance certificate for the collector (OPC 10000-6, 6.2.2), with its key."""
    host = hostname or socket.gethostname()
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        "BioPilot collector",
        {"organizationName": "BioPilot"},
        [x509.UniformResourceIdentifier(application_uri(host)), x509.DNSName(host)],
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        days=days,
    )
    private_dir(pki, pki.cert.parent)
    _write_private(pki.key, cert_gen.dump_private_key_as_pem(key))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    private_dir(pki, pki.trusted)
    return cert


def private_dir(pki: Pki, folder: Path) -> None:
    """pki/ and one of its folders, made 0700 when new whatever the umask: anyone who can write trusted/
    decides which servers the collector believes."""
    for path in (pki.root, folder):
        if not path.exists():
            path.mkdir(parents=True, mode=0o700)
            path.chmod(0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Write a file created 0600 from the start (no moment in which others may read it)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def load_certificate(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        try:
            return x509.load_pem_x509_certificate(data)
        except ValueError:
            raise SourceError(f"{path}: not a certificate (DER or PEM expected)") from None


def thumbprint(cert: x509.Certificate) -> str:
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER), usedforsecurity=False).hexdigest()


def describe(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = names[0].value if names else cert.subject.rfc4514_string()
    return f"'{cn}' (thumbprint {thumbprint(cert)}, valid until {cert.not_valid_after_utc:%Y-%m-%d})"


def trust(pki: Pki, path: Path) -> x509.Certificate:
    """Add a server certificate (DER or PEM file) to the trust list."""
    cert = load_certificate(path)
    private_dir(pki, pki.trusted)
    (pki.trusted / f"{thumbprint(cert)}.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return cert


def trusted_thumbprints(pki: Pki) -> set[str]:
    if not pki.trusted.is_dir():
        return set()
    out = set()
    for path in pki.trusted.iterdir():
        if path.suffix.lower() in (".der", ".pem", ".crt", ".cer"):
            try:
                out.add(thumbprint(load_certificate(path)))
            except SourceError:
                continue
    return out


def check_client_certificate(pki: Pki) -> None:
    """The collector's own certificate exists and is valid now; else a SourceError naming it and the fix."""
    for path in (pki.cert, pki.key):
        if not path.exists():
            raise SourceError(
                f"the client certificate {path} does not exist: create it with `biopilot certs create "
                f"--data-dir {pki.root.parent}`, then trust {pki.cert} on the OPC UA server"
            )
    cert = load_certificate(pki.cert)
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise SourceError(
            f"the client certificate {pki.cert} {describe(cert)} is not valid now: renew it with `biopilot "
            f"certs create --force --data-dir {pki.root.parent}`, then trust the new one on the server"
        )


def check_server_certificate(pki: Pki, der: bytes, endpoint: str) -> x509.Certificate:
    """The server's certificate is in the trust list; else keep it in rejected/ and name the fix."""
    cert = x509.load_der_x509_certificate(der)
    if thumbprint(cert) in trusted_thumbprints(pki):
        return cert
    private_dir(pki, pki.rejected)
    kept = pki.rejected / f"{thumbprint(cert)}.der"
    kept.write_bytes(der)
    raise SourceError(
        f"the server certificate of {endpoint}, {describe(cert)}, is not in the trust list {pki.trusted}: "
        f"if it is the right server, trust it with `biopilot certs trust {kept} --data-dir {pki.root.parent}`"
    )


def certificate_uri(pki: Pki) -> str | None:
    """The application URI in our certificate (the client must announce the same one)."""
    try:
        san = load_certificate(pki.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, FileNotFoundError):
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None
