"""The object store: metadata stamping, optimistic concurrency, finalizers, garbage collection.

Everything runs on the server's event loop, so each method is atomic with respect to the others
(no awaits inside). Stored objects are never mutated in place: every write stores a new dict, so
the watch event log can share them.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import random
import string
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from . import cel, controllers, patching, validation
from .errors import ApiError, not_found
from .resources import Registry, ResourceType
from .watches import Event, Watch

NS_KEY = ("", "namespaces")
_IMMUTABLE_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                   "generation", "name", "namespace")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WriteContext:
    """Per-request write options (query parameters) and the warnings to send back."""
    dry_run: bool = False
    field_validation: str = ""
    field_manager: str = ""
    force: bool = False
    warnings: list[str] = field(default_factory=list)


def _meta(obj: dict) -> dict:
    return obj.setdefault("metadata", {})


def _without_rv(obj: dict) -> dict:
    out = dict(obj)
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items()
                       if k not in ("resourceVersion", "managedFields")}
    return out


def _spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    def __init__(self, registry: Registry | None = None, log_size: int = 20000):
        self.registry = registry or Registry()
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict]] = {}
        self.rv = 0
        self.log: deque[Event] = deque(maxlen=log_size)
        self.compacted = 0  # events at or below this resourceVersion are gone from the log
        self.watches: set[Watch] = set()
        self.uids: dict[str, tuple[tuple[str, str], str, str]] = {}
        self.applied: dict[tuple, dict] = {}  # (key, ns, name, manager) -> last applied body
        self.config = {"mark_deployments_available": True}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ips = 10
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self.rt("", "v1", "namespaces"), "", {"metadata": {"name": name}},
                        WriteContext())

    # --- helpers ------------------------------------------------------------------------------
    def rt(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.registry.get(group, version, plural)
        assert rt is not None, (group, version, plural)
        return rt

    def later(self, delay: float, fn: Callable, *args: Any) -> None:
        """Run fn on the loop soon, like a controller reacting asynchronously."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_later(delay, fn, *args)

    def out(self, rt: ResourceType, obj: dict) -> dict:
        res = copy.deepcopy(obj)
        res["apiVersion"], res["kind"] = rt.api_version, rt.kind
        return res

    def _bucket(self, rt: ResourceType) -> dict:
        return self.objects.setdefault(rt.key, {})

    def _emit(self, key, etype: str, obj: dict, old: dict | None) -> None:
        if len(self.log) == self.log.maxlen:
            self.compacted = self.log[0].rv
        ev = Event(self.rv, key, etype, obj, old)
        self.log.append(ev)
        for w in list(self.watches):
            if w.key == key:
                w.queue.put_nowait(ev)

    def _find(self, rt: ResourceType, ns: str, name: str) -> dict:
        obj = self._bucket(rt).get((ns if rt.namespaced else "", name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    # --- reads --------------------------------------------------------------------------------
    def get(self, rt: ResourceType, ns: str, name: str) -> dict:
        return self.out(rt, self._find(rt, ns, name))

    def list(self, rt: ResourceType, ns: str, labels: Callable, fields: Callable) -> list[dict]:
        items = []
        for (ons, _), obj in sorted(self._bucket(rt).items()):
            if ns and rt.namespaced and ons != ns:
                continue
            if labels((obj["metadata"].get("labels")) or {}) and fields(obj):
                items.append(obj)
        return items

    def watch(self, rt, ns, rv: str | None, initial: bool, labels, fields):
        """(events to send first, subscription): snapshot and subscribe in one atomic step."""
        w = Watch(rt.key, ns if rt.namespaced else "", labels, fields)
        if initial or rv in (None, "", "0"):
            first = [("ADDED", o) for o in self.list(rt, ns, labels, fields)]
        else:
            try:
                since = int(rv)
            except ValueError:
                raise ApiError("BadRequest", f"invalid resource version {rv!r}") from None
            if since < self.compacted:
                raise ApiError("Expired", f"too old resource version: {since} ({self.compacted})")
            first = [t for ev in self.log if ev.rv > since and ev.key == rt.key
                     if (t := w.translate(ev)) is not None]
        self.watches.add(w)
        return first, w

    # --- writes -------------------------------------------------------------------------------
    def _check_namespace(self, rt: ResourceType, ns: str, name: str) -> None:
        if not rt.namespaced:
            return
        nsobj = self._bucket(self.rt("", "v1", "namespaces")).get(("", ns))
        if nsobj is None:
            raise ApiError("NotFound", f'namespaces "{ns}" not found',
                           {"name": ns, "kind": "namespaces"})
        if nsobj["metadata"].get("deletionTimestamp"):
            raise ApiError("Forbidden", f'{rt.qualified} "{name}" is forbidden: unable to create '
                           f"new content in namespace {ns} because it is being terminated")

    def _custom(self, rt: ResourceType, obj: dict, ctx: WriteContext,
                old: dict | None = None) -> None:
        """CRD schema handling for custom resources: prune, default, validate."""
        if not rt.crd or not rt.schema:
            return
        unknown = validation.prune(rt.schema, obj)
        if unknown and ctx.field_validation == "Strict":
            raise ApiError("BadRequest", "strict decoding error: " + ", ".join(
                f'unknown field "{u}"' for u in unknown))
        if unknown and ctx.field_validation != "Ignore":
            ctx.warnings += [f'unknown field "{u}"' for u in unknown]
        validation.apply_defaults(rt.schema, obj)
        causes = validation.validate(rt.schema, obj) or cel.check(rt.schema, obj, old)
        if causes:
            name = obj["metadata"].get("name", "")
            texts = [f'{c["field"]}: {c["message"]}' for c in causes]
            listed = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
            raise ApiError("Invalid", f'{rt.kind}.{rt.group} "{name}" is invalid: {listed}',
                           {"name": name, "group": rt.group, "kind": rt.kind, "causes": causes})

    def create(self, rt: ResourceType, ns: str, body: dict, ctx: WriteContext) -> dict:
        obj = copy.deepcopy(body) if isinstance(body, dict) else {}
        md = _meta(obj)
        if not md.get("name"):
            if not md.get("generateName"):
                raise ApiError("Invalid", f"{rt.kind} \"\" is invalid: metadata.name: Required "
                               "value: name or generateName is required")
            md["name"] = md["generateName"] + "".join(
                random.choices(string.ascii_lowercase + string.digits, k=5))
        name = md["name"]
        if rt.namespaced:
            ns = ns or md.get("namespace") or ""
            if md.get("namespace") and md["namespace"] != ns:
                raise ApiError("BadRequest", "the namespace of the provided object does not "
                               "match the namespace sent on the request")
            md["namespace"] = ns
            self._check_namespace(rt, ns, name)
        else:
            md.pop("namespace", None)
        key = (ns if rt.namespaced else "", name)
        if key in self._bucket(rt):
            raise ApiError("AlreadyExists", f'{rt.qualified} "{name}" already exists',
                           {"name": name, "group": rt.group, "kind": rt.plural})
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if rt.has("status"):
            obj.pop("status", None)
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion",
                  "managedFields", "selfLink"):
            md.pop(k, None)
        md.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        controllers.prepare_create(self, rt, obj)
        self._custom(rt, obj, ctx)
        if ctx.dry_run:
            return self.out(rt, obj)
        return self.out(rt, self._commit(rt, obj, None))

    def _commit(self, rt: ResourceType, new: dict, old: dict | None) -> dict:
        if old is not None and _without_rv(new) == _without_rv(old):
            return old
        self.rv += 1
        md = new["metadata"]
        md["resourceVersion"] = str(self.rv)
        key = (md.get("namespace", "") if rt.namespaced else "", md["name"])
        if old is not None and md.get("deletionTimestamp") and not md.get("finalizers") \
                and rt.key != NS_KEY:
            self._bucket(rt).pop(key, None)
            self.uids.pop(md["uid"], None)
            self._emit(rt.key, "DELETED", new, old)
            controllers.after_delete(self, rt, new)
            return new
        self._bucket(rt)[key] = new
        self.uids[md["uid"]] = (rt.key, key[0], key[1])
        self._emit(rt.key, "ADDED" if old is None else "MODIFIED", new, old)
        controllers.after_write(self, rt, new, old)
        return new

    def _prepare_update(self, rt, old: dict, body: dict, sub: str | None,
                        ctx: WriteContext) -> dict:
        if not isinstance(body, dict):
            raise ApiError("BadRequest", "the body of the request must be an object")
        body = copy.deepcopy(body)
        bmd = _meta(body)
        omd = old["metadata"]
        if bmd.get("resourceVersion") and bmd["resourceVersion"] != omd["resourceVersion"]:
            raise ApiError("Conflict", f'Operation cannot be fulfilled on {rt.qualified} '
                           f'"{omd["name"]}": the object has been modified; please apply your '
                           "changes to the latest version and try again",
                           {"name": omd["name"], "group": rt.group, "kind": rt.plural})
        if bmd.get("name") and bmd["name"] != omd["name"]:
            raise ApiError("BadRequest", f'the name of the object ({bmd["name"]}) does not match '
                           f'the name on the URL ({omd["name"]})')
        if sub == "status":
            new = copy.deepcopy(old)
            if "status" in body:
                new["status"] = body["status"]
            else:
                new.pop("status", None)
        else:
            new = body
            if rt.has("status"):
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            nmd = new["metadata"]
            for k in _IMMUTABLE_META:
                if k in omd:
                    nmd[k] = omd[k]
                else:
                    nmd.pop(k, None)
            nmd.pop("managedFields", None)
            if omd.get("deletionTimestamp"):
                added = set(nmd.get("finalizers") or []) - set(omd.get("finalizers") or [])
                if added:
                    raise ApiError("Invalid", f'{rt.kind} "{omd["name"]}" is invalid: '
                                   "metadata.finalizers: Forbidden: no new finalizers can be "
                                   "added if the object is being deleted")
            if _spec_part(new) != _spec_part(old):
                nmd["generation"] = int(omd.get("generation", 1)) + 1
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        new["metadata"]["resourceVersion"] = omd["resourceVersion"]
        self._custom(rt, new, ctx, old)
        controllers.prepare_update(self, rt, new, old)
        return new

    def replace(self, rt, ns, name, body, ctx: WriteContext, sub: str | None = None) -> dict:
        old = self._find(rt, ns, name)
        if sub == "scale":
            return self._write_scale(rt, old, body, ctx)
        new = self._prepare_update(rt, old, body, sub, ctx)
        if ctx.dry_run:
            return self.out(rt, new)
        return self.out(rt, self._commit(rt, new, old))

    def patch(self, rt, ns, name, ptype: str, patch: Any, ctx: WriteContext,
              sub: str | None = None) -> tuple[dict, bool]:
        """Apply a patch; returns (object, created) -- server-side apply may create."""
        bucket = self._bucket(rt)
        old = bucket.get((ns if rt.namespaced else "", name))
        if old is None:
            if ptype == "apply" and sub is None:
                body = copy.deepcopy(patch)
                _meta(body)["name"] = name
                created = self.create(rt, ns, body, ctx)
                if not ctx.dry_run:
                    self.applied[(rt.key, ns, name, ctx.field_manager)] = copy.deepcopy(patch)
                return created, True
            raise not_found(rt, name)
        current = self.scale_of(rt, old) if sub == "scale" else self.out(rt, old)
        try:
            if ptype == "json":
                patched = patching.json_patch(current, patch)
            elif ptype == "merge":
                patched = patching.merge_patch(current, patch)
            elif ptype == "strategic":
                patched = patching.strategic_merge(current, patch)
            elif ptype == "apply":
                prev = self.applied.get((rt.key, ns, name, ctx.field_manager))
                patched = patching.apply_patch(current, patch, prev)
                if not ctx.dry_run:
                    self.applied[(rt.key, ns, name, ctx.field_manager)] = copy.deepcopy(patch)
            else:
                raise ApiError("UnsupportedMediaType", f"unsupported patch type {ptype}")
        except patching.PatchError as e:
            raise ApiError("Invalid", str(e)) from None
        if sub == "scale":
            return self._write_scale(rt, old, patched, ctx), False
        if ptype == "apply" and isinstance(patch, dict) and \
                "resourceVersion" not in (patch.get("metadata") or {}):
            _meta(patched)["resourceVersion"] = old["metadata"]["resourceVersion"]
        new = self._prepare_update(rt, old, patched, sub, ctx)
        if ctx.dry_run:
            return self.out(rt, new), False
        return self.out(rt, self._commit(rt, new, old)), False

    # --- scale subresource --------------------------------------------------------------------
    def scale_of(self, rt: ResourceType, obj: dict) -> dict:
        md = obj["metadata"]
        selector = (obj.get("spec") or {}).get("selector") or {}
        labels = selector.get("matchLabels") if isinstance(selector, dict) else None
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                "creationTimestamp") if k in md},
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                           "selector": ",".join(f"{k}={v}" for k, v in (labels or {}).items())}}

    def _write_scale(self, rt, old: dict, scale: dict, ctx: WriteContext) -> dict:
        replicas = ((scale or {}).get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError("Invalid", f'Scale.autoscaling "{old["metadata"]["name"]}" is '
                           "invalid: spec.replicas: Invalid value: must be a non-negative int")
        body = copy.deepcopy(old)
        body.setdefault("spec", {})["replicas"] = replicas
        new = self._prepare_update(rt, old, body, None, ctx)
        if not ctx.dry_run:
            new = self._commit(rt, new, old)
        return self.scale_of(rt, new)

    # --- deletion -----------------------------------------------------------------------------
    def delete(self, rt, ns, name, opts: dict | None, ctx: WriteContext) -> dict:
        old = self._find(rt, ns, name)
        opts = opts or {}
        pre = opts.get("preconditions") or {}
        omd = old["metadata"]
        if pre.get("uid") and pre["uid"] != omd["uid"] or \
                pre.get("resourceVersion") and pre["resourceVersion"] != omd["resourceVersion"]:
            raise ApiError("Conflict", f'Operation cannot be fulfilled on {rt.qualified} '
                           f'"{name}": precondition failed')
        if ctx.dry_run:
            return self.out(rt, old)
        policy = opts.get("propagationPolicy") or \
            ("Orphan" if opts.get("orphanDependents") else "Background")
        if policy == "Orphan":
            controllers.orphan_dependents(self, omd["uid"])
        if rt.key == NS_KEY or omd.get("finalizers"):
            if omd.get("deletionTimestamp"):
                return self.out(rt, old)
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if rt.key == NS_KEY:
                new.setdefault("status", {})["phase"] = "Terminating"
            return self.out(rt, self._commit(rt, new, old))
        return self.out(rt, self.remove(rt, old))

    def remove(self, rt: ResourceType, old: dict) -> dict:
        """Drop an object for good (no finalizers left) and tell watchers and controllers."""
        md = old["metadata"]
        key = (md.get("namespace", "") if rt.namespaced else "", md["name"])
        self._bucket(rt).pop(key, None)
        self.uids.pop(md["uid"], None)
        for k in [k for k in self.applied if k[:3] == (rt.key, key[0], key[1])]:
            del self.applied[k]
        self.rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(rt.key, "DELETED", gone, None)
        controllers.after_delete(self, rt, gone)
        return gone

    def delete_collection(self, rt, ns, labels, fields, opts, ctx: WriteContext) -> list[dict]:
        out = []
        for obj in self.list(rt, ns, labels, fields):
            md = obj["metadata"]
            out.append(self.delete(rt, md.get("namespace", ""), md["name"], opts, ctx))
        return out

    # --- debugging ----------------------------------------------------------------------------
    def dump(self, group=None, plural=None, namespace=None) -> list[dict]:
        items = []
        for key, bucket in sorted(self.objects.items()):
            if group is not None and key[0] != group or plural and key[1] != plural:
                continue
            for (ons, _), obj in sorted(bucket.items()):
                if namespace is None or ons == namespace:
                    items.append(obj)
        return copy.deepcopy(items)
