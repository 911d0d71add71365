"""`biopilot browse ENDPOINT`: list an OPC UA server's variables, or print them as tag blocks."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from biopilot.app.commands.common import DEFAULT_DATA_DIR
from biopilot.config import OpcUaServer, load_config
from biopilot.errors import BioPilotError, SourceError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("browse", help="list an OPC UA server's variables (browse paths, types, units)")
    sp.add_argument("endpoint", nargs="?", help="opc.tcp://host:port/path (or use --config and --server)")
    sp.add_argument("--config", type=Path, help="a site config whose [opcua.servers.NAME] to use (security)")
    sp.add_argument("--server", help="the NAME in [opcua.servers.NAME]")
    sp.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="holds pki/ for secure endpoints")
    sp.add_argument("--toml", action="store_true", help="print [[tags]] blocks for the site config")
    sp.add_argument("--equipment", help="equipment id for the tag blocks (default: the first path segment)")
    sp.add_argument("--max-depth", type=int, default=8)
    sp.set_defaults(func=_cmd_browse)


def _cmd_browse(args: argparse.Namespace) -> int:
    from asyncua import ua

    from collectors.browse import browse_variables, tag_blocks
    from collectors.opcua import explain, make_client, refused_channel
    from collectors.security import Pki

    if args.config is not None:
        config = load_config(args.config)
        if not args.server or args.server not in config.opcua.servers:
            known = ", ".join(config.opcua.servers) or "none"
            raise BioPilotError(f"--server: name one of the config's OPC UA servers ({known})")
        name, server = args.server, config.opcua.servers[args.server]
    elif args.endpoint:
        name, server = args.server or "plant", OpcUaServer(endpoint=args.endpoint)
    else:
        raise BioPilotError("give an ENDPOINT, or --config FILE --server NAME")

    pki = Pki(args.data_dir / "pki")

    async def main() -> list:  # type: ignore[type-arg]
        try:
            client = await make_client(name, server, pki)
            await asyncio.wait_for(client.connect(), timeout=10)
        except (OSError, TimeoutError) as exc:
            raise SourceError(f"cannot connect to {server.endpoint}: {exc or type(exc).__name__}") from None
        except ua.UaStatusCodeError as exc:  # a refusal: the certificate or the user, and the fix
            raise SourceError(explain(exc, server, pki)) from None
        except AssertionError as exc:  # asyncua's way of saying the secure channel was refused
            raise SourceError(refused_channel(exc, server, pki)) from None
        try:
            return await browse_variables(client, args.max_depth)
        finally:
            await client.disconnect()

    variables = asyncio.run(main())
    if args.toml:
        print(f"# {len(variables)} variables of {server.endpoint}")
        namespaces = sorted({v.namespace for v in variables})
        if len(namespaces) == 1:
            print(f"# [opcua.servers.{name}]")
            print(f'# endpoint = "{server.endpoint}"\n# namespace = "{namespaces[0]}"\n')
        print(tag_blocks(variables, name, args.equipment))
        return 0
    if not variables:
        print(f"{server.endpoint}: no variables below Objects (outside namespace 0)")
        return 0
    width = max(len(v.path) for v in variables)
    print(f"{'browse path':{width}}  {'type':10} {'unit':8} {'value':>14}  node id   (namespace)")
    for v in variables:
        value = f"{v.value:.6g}" if isinstance(v.value, float) else str(v.value)
        print(
            f"{v.path:{width}}  {v.data_type:10} {v.unit:8} {value[:14]:>14}  {v.node_id}   ({v.namespace})"
        )
    return 0
