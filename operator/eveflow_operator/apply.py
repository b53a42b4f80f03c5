"""Apply children idempotently: read, compare, and server-side apply only what differs.

A resync of an unchanged pipeline therefore makes only GETs. Every child is owned by the
EvePipeline (``kopf.adopt``: ownerReference, namespace), so Kubernetes garbage-collects it
with the CR.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

import kopf

from eveflow_operator.kube import KubeApi, KubeError, list_path, object_path


class ForeignChild(KubeError):
    """A child's name is taken by an object this EvePipeline does not own: taking it over would
    hand someone else's object to the garbage collector when the pipeline is deleted."""

    def __init__(self, kind: str, namespace: str, name: str, owner: str) -> None:
        super().__init__(409, f"{kind} {namespace}/{name} already exists and does not belong to EvePipeline "
                              f"{owner}; eveflow will not take it over (it would be deleted with the "
                              f"pipeline): rename or delete that {kind}, or rename the EvePipeline")


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


def owned_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = owner["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences") or [])


async def apply_children(api: KubeApi, children: list[dict[str, Any]], owner: Mapping[str, Any],
                         field_manager: str) -> ApplyResult:
    result = ApplyResult()
    for child in children:
        desired = owned(child, owner)
        meta = desired["metadata"]
        live = await api.get(object_path(desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"]))
        if live is not None and desired["metadata"].get("ownerReferences") and not owned_by(live, owner):
            raise ForeignChild(desired["kind"], meta["namespace"], meta["name"], owner["metadata"]["name"])
        if live is None or not contains(live, desired):
            live = await api.apply(desired, field_manager)
            result.applied.append(f"{desired['kind']}/{meta['name']}")
        result.objects[desired["kind"]] = live
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
