"""`biopilot certs create|show|trust`: the collector's OPC UA certificate and the servers it trusts."""

from __future__ import annotations

import argparse
from pathlib import Path

from biopilot.app.commands.common import DEFAULT_DATA_DIR
from biopilot.errors import BioPilotError
from collectors.security import (
    Pki,
    application_uri,
    certificate_uri,
    create_client_certificate,
    describe,
    load_certificate,
    trust,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("certs", help="OPC UA certificates: create ours, show them, trust a server's")
    cs = sp.add_subparsers(dest="certs_command", required=True, metavar="ACTION")

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="its pki/ folder holds them")

    c = cs.add_parser("create", help="create the collector's client certificate and key")
    data_dir(c)
    c.add_argument("--hostname", default=None, help="host name in the certificate (default: this machine's)")
    c.add_argument("--force", action="store_true", help="replace an existing certificate")
    c.set_defaults(func=_create)
    s = cs.add_parser("show", help="show our certificate and the trusted server certificates")
    data_dir(s)
    s.set_defaults(func=_show)
    t = cs.add_parser("trust", help="trust a server certificate (DER or PEM file)")
    t.add_argument("file", type=Path)
    data_dir(t)
    t.set_defaults(func=_trust)


def _create(args: argparse.Namespace) -> int:
    pki = Pki(args.data_dir / "pki")
    if pki.cert.exists() and not args.force:
        raise BioPilotError(
            f"{pki.cert} exists already ({describe(load_certificate(pki.cert))}); "
            "use --force to replace it (the servers must then trust the new one)"
        )
    cert = create_client_certificate(pki, hostname=args.hostname)
    print(f"created {pki.cert}\n  {describe(cert)}\n  application URI {application_uri(args.hostname)}")
    print(f"  private key {pki.key} (keep it on this machine)")
    print(
        "Next: copy the certificate into the OPC UA server's trusted folder (or accept it in its admin UI),"
    )
    print(f"then trust the server's certificate: biopilot certs trust SERVER_CERT --data-dir {args.data_dir}")
    return 0


def _show(args: argparse.Namespace) -> int:
    pki = Pki(args.data_dir / "pki")
    if pki.cert.exists():
        print(f"ours: {pki.cert}\n  {describe(load_certificate(pki.cert))}")
        print(f"  application URI {certificate_uri(pki)}")
    else:
        print(f"ours: none yet (biopilot certs create --data-dir {args.data_dir})")
    for folder, title in ((pki.trusted, "trusted"), (pki.rejected, "met but not trusted")):
        files = sorted(folder.glob("*")) if folder.is_dir() else []
        print(f"{title}: {len(files)}")
        for f in files:
            print(f"  {f.name}: {describe(load_certificate(f))}")
    return 0


def _trust(args: argparse.Namespace) -> int:
    if not args.file.exists():
        raise BioPilotError(f"{args.file}: no such file")
    pki = Pki(args.data_dir / "pki")
    cert = trust(pki, args.file)
    print(f"trusted {describe(cert)} in {pki.trusted}")
    return 0
