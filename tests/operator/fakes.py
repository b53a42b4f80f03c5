"""In-memory stand-ins for the two sides a reconcile pass talks to, for unit tests of every branch:
the Kubernetes API as ``KubeApi`` is used (objects by path, resourceVersions, a status merge patch
guarded by one) and the Prefect side (``PipelineSync``). Both record every write."""

from __future__ import annotations

import asyncio
import copy
import itertools
from pathlib import Path
from typing import Any

import yaml
from eveflow_etl.orchestration.types import DeleteResult, PrefectConnection, SyncResult
from eveflow_etl.spec import EvePipeline
from eveflow_operator.kube import KubeConflict, KubeError, namespace_path, object_path

from tests.harness.kube_emulator.patching import merge_patch  # RFC 7386, as the API server applies it

ROOT = Path(__file__).resolve().parents[2]


def _matches(labels: dict[str, str], selector: str) -> bool:
    return all(labels.get(k) == v for k, v in (term.split("=", 1) for term in selector.split(",") if term))


class FakeKube:
    """Objects live under the path ``KubeApi`` would use for them. Worker Deployments report
    their replicas available unless ``available`` is False."""

    def __init__(self, *, available: bool = True) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes: list[str] = []
        self.reads: list[str] = []  # paths GET read, in order
        self.available = available
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    def _stamp(self, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._versions))

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create ``obj`` (test setup; not a recorded write) and return it as stored."""
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta.setdefault("generation", 1)
        self._stamp(obj)
        path = (namespace_path(meta["name"]) if obj["kind"] == "Namespace"
                else object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]))
        self.objects[path] = obj
        return copy.deepcopy(obj)

    def touch(self, path: str) -> None:
        """Someone else wrote the object (its resourceVersion moves on)."""
        self._stamp(self.objects[path])

    async def get(self, path: str, *, metadata_only: bool = False) -> dict[str, Any] | None:
        self.reads.append(path)
        obj = self.objects.get(path)
        if obj is None:
            return None
        return copy.deepcopy({"metadata": obj["metadata"]} if metadata_only else obj)

    async def list(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        if "/namespaces/" in path:
            keys = [k for k in self.objects if k.rsplit("/", 1)[0] == path]
        else:  # across namespaces: <base>/<plural>
            base, plural = path.rsplit("/", 1)
            keys = [k for k in self.objects if k.startswith(f"{base}/namespaces/") and k.split("/")[-2] == plural]
        return [copy.deepcopy(self.objects[k]) for k in keys
                if _matches(self.objects[k]["metadata"].get("labels") or {}, label_selector)]

    async def patch_status(self, path: str, changes: dict[str, Any], resource_version: str) -> dict[str, Any]:
        obj = self.objects.get(path)
        if obj is None:
            raise KubeError(404, f"{path} not found")
        if obj["metadata"]["resourceVersion"] != resource_version:
            raise KubeConflict(409, "the object has been modified")
        obj["status"] = merge_patch(obj.get("status") or {}, changes)
        self._stamp(obj)
        self.writes.append(f"status {path.rsplit('/', 1)[1]}")
        return copy.deepcopy(obj)

    async def apply(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        old = self.objects.get(path)
        new = copy.deepcopy(obj)
        new["metadata"]["uid"] = old["metadata"]["uid"] if old else f"uid-{next(self._uids)}"
        new["metadata"]["generation"] = (old["metadata"]["generation"] + (old.get("spec") != new.get("spec"))
                                         if old else 1)
        if obj["kind"] == "Deployment":
            available = new["spec"].get("replicas", 1) if self.available else 0
            new["status"] = {"observedGeneration": new["metadata"]["generation"], "availableReplicas": available}
        self._stamp(new)
        self.objects[path] = new
        self.writes.append(f"apply {obj['kind']}/{meta['name']}")
        return copy.deepcopy(new)

    async def delete(self, path: str) -> bool:
        if self.objects.pop(path, None) is None:
            return False
        self.writes.append(f"delete {path}")
        return True

    async def close(self) -> None:
        pass


class FakePrefect:
    """A ``PipelineSync`` in sync already (or raising ``fail``); each call's connection recorded.
    ``gate``: syncs wait for it (to hold a sync slot open in a test)."""

    def __init__(self, fail: Exception | None = None, actions: list[str] | None = None) -> None:
        self.fail = fail
        self.actions = actions or []
        self.conns: list[PrefectConnection] = []
        self.deleted: list[str] = []
        self.gate: asyncio.Event | None = None
        self.entered = 0

    async def sync(self, pipeline: EvePipeline, conn: PrefectConnection, *, namespace: str) -> SyncResult:
        self.conns.append(conn)
        self.entered += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return SyncResult(work_pool_name=pipeline.spec.work_pool.name, work_pool_id="wp-1",
                          deployment_ids={pipeline.name: "d-1"}, spec_hash="h", actions=list(self.actions),
                          writes=len(self.actions))

    async def delete(self, pipeline: EvePipeline, conn: PrefectConnection, *, namespace: str) -> DeleteResult:
        if self.fail is not None:
            raise self.fail
        self.deleted.append(f"{namespace}/{pipeline.name}")
        return DeleteResult(actions=[f"deleted deployment {pipeline.name}"])


def example(name: str = "order-books", namespace: str = "team-a") -> dict[str, Any]:
    """The Kubernetes-pool example as an EvePipeline named ``namespace/name``."""
    doc = yaml.safe_load((ROOT / "examples" / "pipeline-kubernetes.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    return doc


def team(kube: FakeKube, namespace: str = "team-a", *, labels: dict[str, str] | None = None) -> None:
    """A namespace with the destination Secret the example names."""
    kube.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels or {}}})
    kube.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "eveflow-postgres", "namespace": namespace},
              "stringData": {"PGHOST": "db"}})
