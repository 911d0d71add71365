"""Sparkplug B decoding: protobuf (collectors/decoders.py) against the hand-written wire reader it replaced.

Decodes the same payloads with both, the work the collector does per message (parse, then name, alias,
timestamp, datatype, value and Quality of every metric), and reports µs per message. The hand-written reader
is loaded from the commit before it was removed (git must be there; otherwise only protobuf is timed).
Payloads are built with protobuf: a DDATA of an edge device as real ones send it (aliases only, no datatype,
a timestamp per metric) and a DBIRTH (names, aliases, datatypes, a Quality property per metric).

    .venv/bin/python benchmarks/sparkplug_decode.py [--metrics 10] [--n 20000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

from collectors import decoders
from collectors import sparkplug_b_pb2 as pb

HAND_WRITTEN_AT = "57dae69"  # the last commit with the hand-written reader in collectors/decoders.py
REPO = Path(__file__).resolve().parents[1]


def _hand_written() -> types.ModuleType | None:
    try:
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{HAND_WRITTEN_AT}:collectors/decoders.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("hand_written_decoders")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, "hand_written_decoders.py", "exec"), module.__dict__)
    return module


def _payloads(n_metrics: int) -> dict[str, bytes]:
    ddata = pb.Payload(timestamp=1_750_000_000_000, seq=7)
    birth = pb.Payload(timestamp=1_750_000_000_000, seq=0)
    for i in range(n_metrics):
        m = ddata.metrics.add(alias=i + 1, timestamp=1_750_000_000_000 + i, double_value=20.0 + i / 3)
        b = birth.metrics.add(name=f"Reactor/Signal{i}", alias=i + 1, datatype=pb.Double, double_value=i)
        b.properties.keys.append("Quality")
        b.properties.values.add(type=pb.Int32, int_value=192)
        del m
    return {"DDATA": ddata.SerializeToString(), "DBIRTH": birth.SerializeToString()}


def _time(
    decode: Callable[[bytes], object], value: Callable[[object], None], payload: bytes, n: int
) -> float:
    """µs per message: parse and read every metric's value."""
    start = time.perf_counter()
    for _ in range(n):
        parsed = decode(payload)
        for m in parsed.metrics:  # type: ignore[attr-defined]
            value(m)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--metrics", type=int, default=10, help="metrics per message")
    parser.add_argument("--n", type=int, default=20_000, help="messages decoded per measurement")
    args = parser.parse_args()
    old = _hand_written()
    for kind, payload in _payloads(args.metrics).items():
        new_us = _time(
            decoders.parse_sparkplug,
            lambda m: decoders.sparkplug_value(m, None if m.datatype is None else m.datatype),  # type: ignore[attr-defined]
            payload,
            args.n,
        )
        line = f"{kind:6} {len(payload):5} bytes, {args.metrics} metrics: protobuf {new_us:6.1f} µs/msg"
        if old is not None:
            old_us = _time(
                old.parse_sparkplug,
                lambda m: old.sparkplug_value(m, m.datatype),  # type: ignore[attr-defined]
                payload,
                args.n,
            )
            line += f", hand-written {old_us:6.1f} µs/msg ({old_us / new_us:.1f}x the protobuf time)"
        print(line)


if __name__ == "__main__":
    main()
