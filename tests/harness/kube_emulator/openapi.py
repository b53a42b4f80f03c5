"""A skeletal /openapi/v3: just enough for kubectl to see that PATCH supports `fieldValidation`
(so it validates server-side instead of failing on a missing schema). No schemas are served."""

from __future__ import annotations

from .resources import Registry


def _prefix(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def root(registry: Registry) -> dict:
    paths = {}
    for group, versions in registry.groups().items():
        for v in versions:
            p = _prefix(group, v)
            paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash=g{registry.generation}"}
    return {"paths": paths}


def group_version(registry: Registry, group: str, version: str) -> dict | None:
    rts = [r for r in registry.all() if (r.group, r.version) == (group, version)]
    if not rts:
        return None
    paths = {}
    params = [{"name": n, "in": "query", "schema": {"type": "string"}}
              for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
    for r in rts:
        base = "/" + _prefix(group, version)
        if r.namespaced:
            base += "/namespaces/{namespace}"
        gvk = {"group": group, "version": version, "kind": r.kind}
        paths[f"{base}/{r.plural}/{{name}}"] = {"patch": {
            "operationId": f"patch{r.kind}", "parameters": params,
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.35.0"},
            "paths": paths, "components": {"schemas": {}}}
