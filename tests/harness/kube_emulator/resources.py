"""The resource types the emulator serves: built-in kinds plus every CRD created at runtime."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    subresources: tuple[str, ...] = ()
    verbs: list[str] = field(default_factory=lambda: list(ALL_VERBS))
    columns: list[dict] | None = None  # CRD additionalPrinterColumns (None: built-in defaults)
    schema: dict | None = None  # CRD openAPIV3Schema for validation/defaulting
    scale_paths: dict | None = None  # CRD scale subresource paths
    crd: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: one store per group+plural whatever the version asked for."""
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified(self) -> str:
        """How API error messages name the resource: `deployments.apps`, `pods`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def has(self, sub: str) -> bool:
        return sub in self.subresources


def _r(gv: str, plural: str, kind: str, namespaced=True, short=(), subs=(), cats=(), verbs=None):
    group, _, version = gv.rpartition("/")
    return ResourceType(group, version, plural, kind, namespaced, list(short), list(cats),
                        tuple(subs), list(verbs or ALL_VERBS))


BUILTINS: list[ResourceType] = [
    _r("v1", "namespaces", "Namespace", False, ["ns"], ["status", "finalize"],
       verbs=["create", "delete", "get", "list", "patch", "update", "watch"]),
    _r("v1", "pods", "Pod", True, ["po"], ["status", "log"], ["all"]),
    _r("v1", "services", "Service", True, ["svc"], ["status"], ["all"]),
    _r("v1", "serviceaccounts", "ServiceAccount", True, ["sa"], ["token"]),
    _r("v1", "secrets", "Secret"),
    _r("v1", "configmaps", "ConfigMap", True, ["cm"]),
    _r("v1", "events", "Event", True, ["ev"]),
    _r("v1", "endpoints", "Endpoints", True, ["ep"]),
    _r("v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ["pvc"], ["status"]),
    _r("v1", "nodes", "Node", False, ["no"], ["status"]),
    _r("v1", "resourcequotas", "ResourceQuota", True, ["quota"], ["status"]),
    _r("v1", "limitranges", "LimitRange", True, ["limits"]),
    _r("apps/v1", "deployments", "Deployment", True, ["deploy"], ["status", "scale"], ["all"]),
    _r("apps/v1", "replicasets", "ReplicaSet", True, ["rs"], ["status", "scale"], ["all"]),
    _r("apps/v1", "statefulsets", "StatefulSet", True, ["sts"], ["status", "scale"], ["all"]),
    _r("apps/v1", "daemonsets", "DaemonSet", True, ["ds"], ["status"], ["all"]),
    _r("batch/v1", "jobs", "Job", True, [], ["status"], ["all"]),
    _r("batch/v1", "cronjobs", "CronJob", True, ["cj"], ["status"], ["all"]),
    _r("rbac.authorization.k8s.io/v1", "roles", "Role"),
    _r("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
    _r("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False),
    _r("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _r("coordination.k8s.io/v1", "leases", "Lease"),
    _r("events.k8s.io/v1", "events", "Event", True, ["ev"]),
    _r("networking.k8s.io/v1", "ingresses", "Ingress", True, ["ing"], ["status"]),
    _r("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True, ["netpol"]),
    _r("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ["pdb"], ["status"]),
    _r("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ["hpa"],
       ["status"], ["all"]),
    _r("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", False,
       ["crd", "crds"], ["status"], ["api-extensions"]),
]

# Where the /scale subresource reads and writes replicas on built-in kinds.
SCALE_DEFAULT = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}


def from_crd(crd: dict) -> list[ResourceType]:
    """One ResourceType per served version of a CustomResourceDefinition."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for ver in spec.get("versions") or []:
        if not ver.get("served", True):
            continue
        subs = ver.get("subresources") or {}
        sublist = tuple(s for s in ("status", "scale") if s in subs)
        schema = ((ver.get("schema") or {}).get("openAPIV3Schema"))
        out.append(ResourceType(
            group=spec.get("group", ""), version=ver["name"], plural=names.get("plural", ""),
            kind=names.get("kind", ""), namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=list(names.get("shortNames") or []),
            categories=list(names.get("categories") or []), subresources=sublist,
            columns=copy.deepcopy(ver.get("additionalPrinterColumns") or []),
            schema=copy.deepcopy(schema), scale_paths=subs.get("scale"), crd=True,
        ))
    return out


class Registry:
    """Lookup of served resources by (group, version, plural); CRDs come and go at runtime."""

    def __init__(self) -> None:
        self._builtin = {(r.group, r.version, r.plural): r for r in BUILTINS}
        self._crds: dict[str, list[ResourceType]] = {}  # CRD name -> its served versions
        self.generation = 0  # bumped when discovery changes, so clients can drop caches

    def register_crd(self, crd: dict) -> None:
        self._crds[crd["metadata"]["name"]] = from_crd(crd)
        self.generation += 1

    def unregister_crd(self, name: str) -> None:
        if self._crds.pop(name, None) is not None:
            self.generation += 1

    def all(self) -> list[ResourceType]:
        out = list(self._builtin.values())
        for rts in self._crds.values():
            out.extend(rts)
        return out

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        rt = self._builtin.get((group, version, plural))
        if rt is not None:
            return rt
        for rts in self._crds.values():
            for r in rts:
                if (r.group, r.version, r.plural) == (group, version, plural):
                    return r
        return None

    def by_key(self, key: tuple[str, str]) -> ResourceType | None:
        """Any served version of a stored resource (for garbage collection, namespaces)."""
        for r in self.all():
            if r.key == key:
                return r
        return None

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for r in self.all():
            if (r.group, r.version, r.kind) == (group, version, kind):
                return r
        for r in self.all():  # another version of the same group/kind
            if (r.group, r.kind) == (group, kind):
                return r
        return None

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions, in first-seen order (core group is "")."""
        out: dict[str, list[str]] = {}
        for r in self.all():
            vs = out.setdefault(r.group, [])
            if r.version not in vs:
                vs.append(r.version)
        return out
