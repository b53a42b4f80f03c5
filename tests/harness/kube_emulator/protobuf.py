"""Decoding the protobuf request bodies kubectl and helm send for a few built-in kinds.

Wire format: the 4-byte magic `k8s\\0`, then a runtime.Unknown message {1: TypeMeta{1: apiVersion,
2: kind}, 2: raw object bytes}. Field numbers come from k8s.io/api generated.proto.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any, Callable

from .errors import ApiError

MAGIC = b"k8s\x00"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes) -> list[tuple[int, Any]]:
    """(field number, value) pairs; length-delimited values stay bytes."""
    out, pos = [], 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((num, value))
    return out


def _s(b: bytes) -> str:
    return b.decode()


def _int(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _map(value_fn: Callable[[bytes], Any]) -> Callable:
    def decode(entries: list[bytes]) -> dict:
        out = {}
        for raw in entries:
            kv = dict(fields(raw))
            out[_s(kv.get(1, b""))] = value_fn(kv.get(2, b""))
        return out
    return decode


def _time(b: bytes) -> str:
    secs = dict(fields(b)).get(1, 0)
    return datetime.datetime.fromtimestamp(_int(secs), datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _message(spec: dict) -> Callable[[bytes], dict]:
    """spec: field number -> (json name, decoder, repeated?)."""
    def decode(buf: bytes) -> dict:
        out: dict = {}
        grouped: dict[int, list] = {}
        for num, value in fields(buf):
            grouped.setdefault(num, []).append(value)
        for num, values in grouped.items():
            if num not in spec:
                continue
            name, fn, repeated = spec[num]
            if repeated == "map":
                value = fn(values)
            elif repeated:
                value = [fn(v) for v in values]
            else:
                value = fn(values[-1])
            if value not in ("", False, [], {}):  # gogo protobuf always writes empty fields
                out[name] = value
        return out
    return decode


_ident = lambda v: v  # noqa: E731
_bool = lambda v: bool(v)  # noqa: E731
_b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731

OWNER_REF = _message({1: ("kind", _s, False), 3: ("name", _s, False), 4: ("uid", _s, False),
                      5: ("apiVersion", _s, False), 6: ("controller", _bool, False),
                      7: ("blockOwnerDeletion", _bool, False)})
OBJECT_META = _message({
    1: ("name", _s, False), 2: ("generateName", _s, False), 3: ("namespace", _s, False),
    5: ("uid", _s, False), 6: ("resourceVersion", _s, False), 7: ("generation", _int, False),
    8: ("creationTimestamp", _time, False), 11: ("labels", _map(_s), "map"),
    12: ("annotations", _map(_s), "map"), 13: ("ownerReferences", OWNER_REF, True),
    14: ("finalizers", _s, True)})
LOCAL_REF = _message({1: ("name", _s, False)})
OBJECT_REF = _message({1: ("kind", _s, False), 2: ("namespace", _s, False),
                       3: ("name", _s, False), 4: ("uid", _s, False),
                       5: ("apiVersion", _s, False)})

KINDS: dict[str, Callable[[bytes], dict]] = {
    "Secret": _message({1: ("metadata", OBJECT_META, False), 2: ("data", _map(_b64), "map"),
                        3: ("type", _s, False), 4: ("stringData", _map(_s), "map"),
                        5: ("immutable", _bool, False)}),
    "ConfigMap": _message({1: ("metadata", OBJECT_META, False), 2: ("data", _map(_s), "map"),
                           3: ("binaryData", _map(_b64), "map"),
                           4: ("immutable", _bool, False)}),
    "Namespace": _message({1: ("metadata", OBJECT_META, False),
                           2: ("spec", _message({1: ("finalizers", _s, True)}), False)}),
    "ServiceAccount": _message({1: ("metadata", OBJECT_META, False),
                                2: ("secrets", OBJECT_REF, True),
                                3: ("imagePullSecrets", LOCAL_REF, True),
                                4: ("automountServiceAccountToken", _bool, False)}),
    "DeleteOptions": _message({
        1: ("gracePeriodSeconds", _int, False),
        2: ("preconditions", _message({1: ("uid", _s, False),
                                       2: ("resourceVersion", _s, False)}), False),
        3: ("orphanDependents", _bool, False), 4: ("propagationPolicy", _s, False),
        5: ("dryRun", _s, True)}),
}


def decode(body: bytes) -> dict:
    """A Kubernetes protobuf envelope -> the JSON-shaped object; 415 for kinds not covered."""
    if not body.startswith(MAGIC):
        raise ApiError("UnsupportedMediaType", "protobuf body without the k8s magic prefix")
    unknown = dict(fields(body[len(MAGIC):]))
    type_meta = dict(fields(unknown.get(1, b"")))
    api_version, kind = _s(type_meta.get(1, b"")), _s(type_meta.get(2, b""))
    if kind not in KINDS:
        raise ApiError("UnsupportedMediaType",
                       f"the emulator cannot decode protobuf {kind or 'objects'}; send JSON")
    obj = KINDS[kind](unknown.get(2, b""))
    obj["apiVersion"], obj["kind"] = api_version or "v1", kind
    return obj
