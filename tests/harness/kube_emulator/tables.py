"""`meta.k8s.io/v1 Table` responses, which kubectl asks for to print `kubectl get`."""

from __future__ import annotations

import datetime
import json
from typing import Any

from .resources import ResourceType
from .selectors import SelectorError, jsonpath


def age(stamp: str | None) -> str:
    """kubectl's short human duration: 5s, 3m12s, 4h, 2d."""
    if not stamp:
        return "<unknown>"
    try:
        then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        return stamp
    s = max(0, int((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds()))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 48:
        return f"{h}h"
    return f"{h // 24}d"


def _col(name: str, path: str, typ: str = "string", priority: int = 0, fmt: str = "") -> dict:
    return {"name": name, "type": typ, "jsonPath": path, "priority": priority, "format": fmt,
            "description": name}


def _ready_containers(obj: dict) -> str:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    total = len((obj.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _ports(obj: dict) -> str:
    ports = (obj.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


_S = lambda *path: (lambda o: _dig(o, path))  # noqa: E731


def _dig(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj.get(p) if isinstance(obj, dict) else None
    return obj


# Built-in kinds: (column name, getter); Name is always first and Age is always last.
BUILTIN_COLUMNS: dict[tuple[str, str], list[tuple[str, Any]]] = {
    ("apps", "deployments"): [
        ("Ready", lambda o: f"{_dig(o, ('status', 'readyReplicas')) or 0}/"
                            f"{_dig(o, ('spec', 'replicas')) or 0}"),
        ("Up-to-date", lambda o: _dig(o, ("status", "updatedReplicas")) or 0),
        ("Available", lambda o: _dig(o, ("status", "availableReplicas")) or 0)],
    ("", "pods"): [("Ready", _ready_containers), ("Status", _S("status", "phase")),
                   ("Restarts", lambda o: 0)],
    ("", "namespaces"): [("Status", _S("status", "phase"))],
    ("", "services"): [("Type", _S("spec", "type")), ("Cluster-IP", _S("spec", "clusterIP")),
                       ("External-IP", lambda o: "<none>"), ("Port(s)", _ports)],
    ("", "secrets"): [("Type", _S("type")),
                      ("Data", lambda o: len(o.get("data") or {}))],
    ("", "configmaps"): [("Data", lambda o: len(o.get("data") or {}) +
                          len(o.get("binaryData") or {}))],
    ("batch", "jobs"): [("Completions", lambda o: f"{_dig(o, ('status', 'succeeded')) or 0}/"
                                                   f"{_dig(o, ('spec', 'completions')) or 1}")],
    ("", "events"): [("Type", _S("type")), ("Reason", _S("reason")),
                     ("Object", lambda o: f"{_dig(o, ('involvedObject', 'kind')) or ''}/"
                                          f"{_dig(o, ('involvedObject', 'name')) or ''}".lower()),
                     ("Message", _S("message"))],
}


def _cell(value: Any, typ: str) -> Any:
    if value is None:
        return None
    if typ == "date":
        return age(value) if isinstance(value, str) else value
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _custom_cells(columns: list[dict], obj: dict) -> list:
    cells = []
    for c in columns:
        try:
            found = jsonpath(obj, c.get("jsonPath", ""))
        except SelectorError:
            found = []
        value = found[0] if len(found) == 1 else (
            ",".join(str(v) for v in found) if found else None)
        cells.append(_cell(value, c.get("type", "string")))
    return cells


def render(rt: ResourceType, objs: list[dict], include_object: str, rv: str,
           cont: str | None = None) -> dict:
    """A Table of objs: Name, then the CRD's printer columns or a built-in set, then Age."""
    name_col = {"name": "Name", "type": "string", "format": "name", "priority": 0,
                "description": "Name must be unique within a namespace."}
    age_def = {"name": "Age", "type": "date", "format": "", "priority": 0,
               "description": "CreationTimestamp of the object."}
    if rt.crd:
        custom = rt.columns or [_col("Age", ".metadata.creationTimestamp", "date")]
        defs = [name_col] + [{"name": c["name"], "type": c.get("type", "string"),
                              "format": c.get("format", ""),
                              "description": c.get("description", ""),
                              "priority": c.get("priority", 0)} for c in custom]
        rows_fn = lambda o: [o["metadata"]["name"]] + _custom_cells(custom, o)  # noqa: E731
    else:
        builtin = BUILTIN_COLUMNS.get(rt.key, [])
        defs = [name_col] + [{"name": n, "type": "string", "format": "", "priority": 0,
                              "description": n} for n, _ in builtin] + [age_def]
        rows_fn = lambda o: ([o["metadata"]["name"]] + [g(o) for _, g in builtin]  # noqa: E731
                             + [age(o["metadata"].get("creationTimestamp"))])
    rows = []
    for o in objs:
        if include_object == "None":
            embedded = None
        elif include_object == "Object":
            embedded = o
        else:
            embedded = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"]}
        row = {"cells": rows_fn(o), "object": embedded}
        rows.append(row)
    meta = {"resourceVersion": rv}
    if cont:
        meta["continue"] = cont
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
            "columnDefinitions": defs, "rows": rows}
