"""Apply children idempotently: read, compare, and server-side apply only what differs.

A resync of an unchanged pipeline therefore makes only GETs. Every child is owned by the
EvePipeline (``kopf.adopt``: ownerReference, namespace), so Kubernetes garbage-collects it
with the CR. An object that already exists under a child's name but was not made by the
operator for this pipeline is never taken over (:func:`takeover_problem`): server-side apply
with force would rewrite it and the ownerReference would have the garbage collector delete it
with the pipeline.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

import kopf

from eveflow_operator.kube import KubeApi, list_path, object_path
from eveflow_operator.labels import MANAGED_BY, PIPELINE_LABEL, PIPELINE_NAMESPACE_LABEL


@dataclass
class ApplyResult:
    applied: list[str] = field(default_factory=list)  # "Deployment/x" written this pass
    deleted: list[str] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> live object


def contains(live: Any, desired: Any) -> bool:
    """True when every field of ``desired`` is present and equal in ``live`` (server defaults ignored)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(contains(live.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(live, list) and len(live) == len(desired)
                and all(contains(a, b) for a, b in zip(live, desired)))
    return live == desired


def owned(obj: dict[str, Any], owner: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` with the CR's ownerReference (when in the same namespace: owners cannot cross them)."""
    obj = copy.deepcopy(obj)
    if obj["metadata"].get("namespace") == owner["metadata"].get("namespace"):
        labels = copy.deepcopy(obj["metadata"].get("labels"))
        kopf.adopt(obj, owner=owner)  # type: ignore[arg-type]
        # Keep our labels only: the CR's own labels are not the child's (kopf copies them).
        if labels is None:
            obj["metadata"].pop("labels", None)
        else:
            obj["metadata"]["labels"] = labels
    return obj


def _path(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    return object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])


async def read_children(api: KubeApi, children: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """The live object under each child's name (None: not there), in the same order."""
    return [await api.get(_path(child)) for child in children]


def ours(live: Mapping[str, Any], child: Mapping[str, Any]) -> bool:
    """``live`` was made by the operator for the same pipeline as ``child``: it carries the
    operator's managed-by label and the pipeline's labels (name, and namespace where the child has one)."""
    labels = (live.get("metadata") or {}).get("labels") or {}
    wanted = child["metadata"].get("labels") or {}
    return labels.get("app.kubernetes.io/managed-by") == MANAGED_BY and all(
        labels.get(key) == wanted.get(key) for key in (PIPELINE_LABEL, PIPELINE_NAMESPACE_LABEL) if key in wanted)


def takeover_problem(children: list[dict[str, Any]], live: list[dict[str, Any] | None]) -> str | None:
    """Why the children cannot be applied without taking over objects that are not ours, or None."""
    foreign = [f"{c['kind']} {c['metadata']['namespace']}/{c['metadata']['name']}"
               for c, obj in zip(children, live) if obj is not None and not ours(obj, c)]
    if not foreign:
        return None
    return (f"{', '.join(foreign)} already exist{'s' if len(foreign) == 1 else ''} and {'was' if len(foreign) == 1 else 'were'} "
            "not created by eveflow for this pipeline (no eveflow owner labels); the operator does not take over "
            "objects it did not create: rename the EvePipeline (metadata.name), or remove or rename those objects")


async def apply_children(api: KubeApi, children: list[dict[str, Any]], owner: Mapping[str, Any],
                         field_manager: str, live: list[dict[str, Any] | None] | None = None) -> ApplyResult:
    """Apply each child that differs from ``live`` (read here when not given). The caller has
    checked :func:`takeover_problem` on the same ``live``."""
    result = ApplyResult()
    if live is None:
        live = await read_children(api, children)
    for child, current in zip(children, live):
        desired = owned(child, owner)
        meta = desired["metadata"]
        if current is not None and "roleRef" in desired and current.get("roleRef") != desired["roleRef"]:
            # roleRef cannot change (an earlier release bound a Role): replace the binding.
            await api.delete(_path(desired))
            current = None
        if current is None or not contains(current, desired):
            current = await api.apply(desired, field_manager)
            result.applied.append(f"{desired['kind']}/{meta['name']}")
        result.objects[desired["kind"]] = current
    return result


async def find_labelled(api: KubeApi, api_version: str, kinds: tuple[str, ...], selector: str,
                        namespaces: list[str]) -> dict[str, list[dict[str, Any]]]:
    """kind -> live objects matching ``selector``: one list across all namespaces, or one per
    namespace for an operator restricted to ``namespaces`` (its RBAC covers only those)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        found[kind] = []
        for namespace in namespaces or [None]:
            found[kind] += await api.list(list_path(api_version, kind, namespace), selector)
    return found


async def delete_stale(api: KubeApi, stale: list[tuple[str, str, str, str]]) -> list[str]:
    """Delete children the spec no longer wants (found live, so nothing is sent when none are)."""
    deleted = []
    for api_version, kind, namespace, name in stale:
        if await api.delete(object_path(api_version, kind, namespace, name)):
            deleted.append(f"{kind}/{name} in {namespace}")
    return deleted
