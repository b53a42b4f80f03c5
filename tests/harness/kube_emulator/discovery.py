"""Legacy (non-aggregated) discovery documents: /version, /api, /apis, group versions."""

from __future__ import annotations

from .resources import Registry

VERSION = {"major": "1", "minor": "35", "gitVersion": "v1.35.0-eveflow-emulator",
           "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
           "buildDate": "2025-12-17T00:00:00Z", "goVersion": "go1.25.5", "compiler": "gc",
           "platform": "linux/amd64", "emulationMajor": "1", "emulationMinor": "35",
           "minCompatibilityMajor": "1", "minCompatibilityMinor": "34"}

_SCALE_KIND = {"group": "autoscaling", "version": "v1", "kind": "Scale"}


def api_versions(host: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]}


def _group(name: str, versions: list[str]) -> dict:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def api_groups(registry: Registry) -> dict:
    groups = [_group(g, vs) for g, vs in registry.groups().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, name: str) -> dict | None:
    versions = registry.groups().get(name)
    if not versions or not name:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def resource_list(registry: Registry, group: str, version: str) -> dict | None:
    rts = [r for r in registry.all() if (r.group, r.version) == (group, version)]
    if not rts:
        return None
    resources = []
    for r in rts:
        resources.append({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                          "kind": r.kind, "verbs": r.verbs, "shortNames": r.short_names,
                          "categories": r.categories, "storageVersionHash": ""})
        for sub in r.subresources:
            entry = {"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                     "kind": r.kind, "verbs": ["get", "patch", "update"]}
            if sub == "scale":
                entry.update(_SCALE_KIND)
            elif sub in ("log", "finalize", "token"):
                entry["verbs"] = {"log": ["get"], "finalize": ["update"],
                                  "token": ["create"]}[sub]
            resources.append(entry)
        for res in resources:
            if not res.get("shortNames"):
                res.pop("shortNames", None)
            if not res.get("categories"):
                res.pop("categories", None)
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": resources}
