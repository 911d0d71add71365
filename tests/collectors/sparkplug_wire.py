"""A tiny protobuf writer for Sparkplug B payloads in tests (field numbers of sparkplug_b.proto), written
independently of the reader in collectors/decoders.py; one test checks it against bytes built by hand."""

from __future__ import annotations

import struct


def varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def _len(number: int, data: bytes) -> bytes:
    return _key(number, 2) + varint(len(data)) + data


def _uint(number: int, value: int) -> bytes:
    return _key(number, 0) + varint(value)


def quality_property(quality: int) -> bytes:
    """PropertySet {keys: ["Quality"], values: [PropertyValue {type: Int32 (3), int_value: quality}]}"""
    return _len(1, b"Quality") + _len(2, _uint(1, 3) + _uint(3, quality & 0xFFFFFFFF))


def metric(
    name: str | None = None,
    *,
    alias: int | None = None,
    timestamp: int | None = None,
    datatype: int | None = None,
    is_null: bool = False,
    int_value: int | None = None,
    long_value: int | None = None,
    float_value: float | None = None,
    double_value: float | None = None,
    boolean_value: bool | None = None,
    string_value: str | None = None,
    quality: int | None = None,
) -> bytes:
    out = b""
    if name is not None:
        out += _len(1, name.encode())
    if alias is not None:
        out += _uint(2, alias)
    if timestamp is not None:
        out += _uint(3, timestamp)
    if datatype is not None:
        out += _uint(4, datatype)
    if is_null:
        out += _uint(7, 1)
    if quality is not None:
        out += _len(9, quality_property(quality))
    if int_value is not None:
        out += _uint(10, int_value & 0xFFFFFFFF)  # signed values travel as two's complement
    if long_value is not None:
        out += _uint(11, long_value & 0xFFFFFFFFFFFFFFFF)
    if float_value is not None:
        out += _key(12, 5) + struct.pack("<f", float_value)
    if double_value is not None:
        out += _key(13, 1) + struct.pack("<d", double_value)
    if boolean_value is not None:
        out += _uint(14, int(boolean_value))
    if string_value is not None:
        out += _len(15, string_value.encode())
    return out


def payload(*metrics: bytes, timestamp: int | None = None, seq: int | None = None) -> bytes:
    out = b""
    if timestamp is not None:
        out += _uint(1, timestamp)
    for m in metrics:
        out += _len(2, m)
    if seq is not None:
        out += _uint(3, seq)
    return out
