"""The few controllers a test cluster needs: CRDs become served, Deployments become available,
namespaces terminate, and owners' dependents are garbage collected (background propagation)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from .errors import ApiError

if TYPE_CHECKING:
    from .resources import ResourceType
    from .store import Store

NS_KEY = ("", "namespaces")
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
WORKLOADS = {("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets")}


def prepare_create(store: Store, rt: ResourceType, obj: dict) -> None:
    """Server-side defaults on create."""
    md = obj["metadata"]
    if rt.key == NS_KEY:
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
        md.setdefault("labels", {})["kubernetes.io/metadata.name"] = md["name"]
    elif rt.key == ("", "services"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            store._ips += 1
            ip = f"10.96.{store._ips // 250}.{store._ips % 250 + 1}"
            spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
    elif rt.key == ("", "secrets"):
        obj["type"] = obj.get("type") or "Opaque"
    elif rt.key == ("", "pods"):
        obj["status"] = {"phase": "Pending"}
    elif rt.key == CRD_KEY:
        _check_crd(obj)
    elif rt.key in WORKLOADS:
        obj.setdefault("spec", {}).setdefault("replicas", 1)


def prepare_update(store: Store, rt: ResourceType, new: dict, old: dict) -> None:
    if rt.key == CRD_KEY:
        _check_crd(new)
    elif rt.key in WORKLOADS:
        new.setdefault("spec", {}).setdefault("replicas", 1)


def _check_crd(crd: dict) -> None:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    want = f'{names.get("plural")}.{spec.get("group")}'
    if crd["metadata"]["name"] != want:
        raise ApiError("Invalid", f'CustomResourceDefinition.apiextensions.k8s.io '
                       f'"{crd["metadata"]["name"]}" is invalid: metadata.name: Invalid value: '
                       f'"{crd["metadata"]["name"]}": must be spec.names.plural+"."+spec.group')
    if not spec.get("versions"):
        raise ApiError("Invalid", "spec.versions: Invalid value: must have exactly one version "
                       "marked as storage version")


def after_write(store: Store, rt: ResourceType, obj: dict, old: dict | None) -> None:
    if rt.key == CRD_KEY:
        store.registry.register_crd(obj)
        store.later(0.0, _establish_crd, store, obj["metadata"]["name"])
    elif rt.key in WORKLOADS and store.config.get("mark_deployments_available"):
        md = obj["metadata"]
        store.later(0.02, _mark_available, store, rt, md.get("namespace", ""), md["name"])
    elif rt.key == NS_KEY and obj["metadata"].get("deletionTimestamp"):
        store.later(0.0, _finish_namespace, store, obj["metadata"]["name"])
    refs = obj["metadata"].get("ownerReferences")
    if refs and old is None:
        store.later(0.5, _collect_if_dangling, store, rt, obj["metadata"]["uid"])


def after_delete(store: Store, rt: ResourceType, obj: dict) -> None:
    uid = obj["metadata"]["uid"]
    if rt.key == CRD_KEY:
        store.registry.unregister_crd(obj["metadata"]["name"])
        _drop_custom_resources(store, obj)
    store.later(0.0, _collect_dependents, store, uid)


def _establish_crd(store: Store, name: str) -> None:
    rt = store.rt("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    old = store._bucket(rt).get(("", name))
    if old is None:
        return
    spec = old.get("spec") or {}
    status = {
        "acceptedNames": copy.deepcopy(spec.get("names") or {}),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found",
             "lastTransitionTime": old["metadata"]["creationTimestamp"]},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted",
             "lastTransitionTime": old["metadata"]["creationTimestamp"]}],
        "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
    }
    status["acceptedNames"].setdefault("singular", status["acceptedNames"].get("kind", "").lower())
    status["acceptedNames"].setdefault("listKind", status["acceptedNames"].get("kind", "") + "List")
    if old.get("status") != status:
        new = copy.deepcopy(old)
        new["status"] = status
        store._commit(rt, new, old)


def _drop_custom_resources(store: Store, crd: dict) -> None:
    spec = crd.get("spec") or {}
    key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
    bucket = store.objects.pop(key, {})
    for obj in bucket.values():
        store.uids.pop(obj["metadata"]["uid"], None)
        store.rv += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(store.rv)
        store._emit(key, "DELETED", gone, None)
        store.later(0.0, _collect_dependents, store, obj["metadata"]["uid"])


def _mark_available(store: Store, rt: ResourceType, ns: str, name: str) -> None:
    """What the deployment controller plus kubelets would report once all replicas are up."""
    old = store._bucket(rt).get((ns, name))
    if old is None or not store.config.get("mark_deployments_available"):
        return
    n = (old.get("spec") or {}).get("replicas", 1)
    status = dict(old.get("status") or {})
    status.update(observedGeneration=old["metadata"].get("generation", 1), replicas=n,
                  updatedReplicas=n, readyReplicas=n, availableReplicas=n)
    if rt.plural == "statefulsets":
        status.update(currentReplicas=n, currentRevision=f"{name}-1", updateRevision=f"{name}-1")
    if rt.plural == "deployments":
        since = (old.get("status") or {}).get("conditions") or []
        stamp = next((c.get("lastTransitionTime") for c in since if c.get("type") == "Available"),
                     old["metadata"]["creationTimestamp"])
        status["conditions"] = [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability.", "lastUpdateTime": stamp,
             "lastTransitionTime": stamp},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": f'ReplicaSet "{name}" has successfully progressed.',
             "lastUpdateTime": stamp, "lastTransitionTime": stamp}]
    if old.get("status") != status:
        new = copy.deepcopy(old)
        new["status"] = status
        store._commit(rt, new, old)


def _finish_namespace(store: Store, name: str) -> None:
    """Namespace controller: delete the contents, then the namespace once they are gone."""
    nsrt = store.rt("", "v1", "namespaces")
    nsobj = store._bucket(nsrt).get(("", name))
    if nsobj is None:
        return
    left = 0
    for key, bucket in list(store.objects.items()):
        rt = store.registry.by_key(key)
        if rt is None or not rt.namespaced:
            continue
        for (ons, oname), obj in list(bucket.items()):
            if ons != name:
                continue
            left += 1
            if not obj["metadata"].get("deletionTimestamp"):
                try:
                    from .store import WriteContext
                    store.delete(rt, ons, oname, {}, WriteContext())
                except ApiError:
                    pass
    still = sum(1 for key, bucket in store.objects.items()
                if (rt := store.registry.by_key(key)) is not None and rt.namespaced
                for (ons, _) in bucket if ons == name)
    if still or nsobj["metadata"].get("finalizers"):
        store.later(0.1, _finish_namespace, store, name)
    else:
        store.remove(nsrt, nsobj)


def _dependents(store: Store, uid: str):
    for key, bucket in list(store.objects.items()):
        for obj in list(bucket.values()):
            refs = obj["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                yield key, obj


def _collect_dependents(store: Store, uid: str) -> None:
    """Background garbage collection of an owner's dependents."""
    from .store import WriteContext
    for key, obj in list(_dependents(store, uid)):
        rt = store.registry.by_key(key)
        if rt is None:
            continue
        md = obj["metadata"]
        refs = md.get("ownerReferences") or []
        alive = [r for r in refs if r.get("uid") != uid and r.get("uid") in store.uids]
        try:
            if alive:
                new = copy.deepcopy(obj)
                new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                store._commit(rt, new, obj)
            else:
                store.delete(rt, md.get("namespace", ""), md["name"], {}, WriteContext())
        except ApiError:
            pass


def _collect_if_dangling(store: Store, rt: ResourceType, uid: str) -> None:
    """A dependent created with owners that do not exist is collected, as the real GC does."""
    where = store.uids.get(uid)
    if where is None:
        return
    obj = store.objects.get(where[0], {}).get((where[1], where[2]))
    refs = (obj or {}).get("metadata", {}).get("ownerReferences") or []
    if refs and not any(r.get("uid") in store.uids for r in refs):
        from .store import WriteContext
        try:
            store.delete(rt, where[1], where[2], {}, WriteContext())
        except ApiError:
            pass


def orphan_dependents(store: Store, uid: str) -> None:
    for key, obj in list(_dependents(store, uid)):
        rt = store.registry.by_key(key)
        if rt is None:
            continue
        new = copy.deepcopy(obj)
        new["metadata"]["ownerReferences"] = [
            r for r in obj["metadata"]["ownerReferences"] if r.get("uid") != uid]
        if not new["metadata"]["ownerReferences"]:
            del new["metadata"]["ownerReferences"]
        store._commit(rt, new, obj)
