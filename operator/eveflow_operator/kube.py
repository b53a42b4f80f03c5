"""A small async Kubernetes API client for the operator's own calls (children, Secrets).

Credentials come from the ``kubernetes`` package's config loaders (in-cluster service account,
else kubeconfig); requests go through one aiohttp session. API errors are mapped here, once:
404 -> ``None`` from :meth:`KubeApi.get`, 409/422 -> :class:`KubeConflict` (the caller retries
with a TemporaryError), anything else -> :class:`KubeError`.
"""

from __future__ import annotations

import json
import ssl
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes import config
from kubernetes.client import Configuration

from eveflow_etl import __version__

USER_AGENT = f"eveflow-operator/{__version__}"

PLURALS = {
    "ServiceAccount": "serviceaccounts",
    "Secret": "secrets",
    "Deployment": "deployments",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Event": "events",
    "EvePipeline": "evepipelines",
}


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API {status}: {message}")
        self.status = status


class KubeConflict(KubeError):
    """409/422 on a write: someone else changed the object; retry the pass."""


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{quote(namespace)}/{PLURALS[kind]}"
    return f"{path}/{quote(name)}" if name else path


def namespace_path(name: str) -> str:
    return f"/api/v1/namespaces/{quote(name)}"


# Accept header for a get of an object's metadata alone (a Secret's values never leave the server).
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


def list_path(api_version: str, kind: str, namespace: str | None) -> str:
    """A collection: in ``namespace``, or across all namespaces when it is None."""
    if namespace is not None:
        return object_path(api_version, kind, namespace)
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    return f"{base}/{PLURALS[kind]}"


class KubeApi:
    """One session to the API server; create it inside the operator's event loop."""

    def __init__(self, host: str, headers: dict[str, str], ssl_context: ssl.SSLContext | bool) -> None:
        self.host = host.rstrip("/")
        self._headers = headers
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._token_source: Any = None

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> KubeApi:
        """In-cluster credentials, else the kubeconfig (``kubeconfig``, or the default one)."""
        cfg = Configuration()
        try:
            if kubeconfig:
                raise config.ConfigException("a kubeconfig was named")
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        ssl_context: ssl.SSLContext | bool
        if not cfg.verify_ssl:
            ssl_context = False
        else:
            ssl_context = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert else ssl.create_default_context()
            if cfg.cert_file:
                ssl_context.load_cert_chain(cfg.cert_file, cfg.key_file)
        api = cls(cfg.host, {}, ssl_context if cfg.host.startswith("https") else False)
        api._token_source = cfg
        return api

    def _auth(self) -> dict[str, str]:
        if self._token_source is not None:
            # Re-read each time: in-cluster tokens are rotated (the loader's refresh hook).
            token = self._token_source.get_api_key_with_prefix("BearerToken", alias="authorization")
            if token:
                return {"Authorization": token}
            if self._token_source.username:
                return {"Authorization": aiohttp.BasicAuth(self._token_source.username,
                                                           self._token_source.password or "").encode()}
        return {}

    async def _request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                       params: dict[str, str] | None = None, accept: str = "application/json") -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        headers = {**self._headers, **self._auth(), "Accept": accept, "User-Agent": USER_AGENT}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with self._session.request(method, self.host + path, data=data, headers=headers,
                                         params=params, ssl=self._ssl) as response:
            text = await response.text()
            try:
                payload = json.loads(text) if text else None
            except ValueError:
                payload = {"message": text}
            return response.status, payload

    @staticmethod
    def _raise(status: int, payload: Any) -> None:
        message = payload.get("message", "") if isinstance(payload, dict) else str(payload)
        if status in (409, 422):
            raise KubeConflict(status, message)
        raise KubeError(status, message)

    async def get(self, path: str, *, metadata_only: bool = False) -> dict[str, Any] | None:
        """The object, or None when it does not exist; ``metadata_only``: its metadata alone."""
        status, payload = await self._request("GET", path, accept=METADATA_ONLY if metadata_only else "application/json")
        if status == 404:
            return None
        if status >= 400:
            self._raise(status, payload)
        return payload

    async def list(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        """The items of a collection matching ``label_selector`` (one page: the selectors used
        here match a handful of objects)."""
        status, payload = await self._request("GET", path, params={"labelSelector": label_selector})
        if status >= 400:
            self._raise(status, payload)
        return list((payload or {}).get("items") or [])

    async def patch_status(self, path: str, changes: dict[str, Any], resource_version: str) -> dict[str, Any]:
        """Merge-patch ``.status`` only if the object is still at ``resource_version`` (else
        :class:`KubeConflict`): the changes were computed from that version."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": changes}
        status, payload = await self._request("PATCH", path + "/status", body,
                                              content_type="application/merge-patch+json")
        if status >= 400:
            self._raise(status, payload)
        return payload

    async def apply(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        """Server-side apply ``obj`` (force: the operator owns every field it sets)."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        status, payload = await self._request(
            "PATCH", path, obj, content_type="application/apply-patch+yaml",
            params={"fieldManager": field_manager, "force": "true"},
        )
        if status >= 400:
            self._raise(status, payload)
        return payload

    async def delete(self, path: str) -> bool:
        status, payload = await self._request("DELETE", path)
        if status == 404:
            return False
        if status >= 400:
            self._raise(status, payload)
        return True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
