"""The tenant boundary: what an EvePipeline in one namespace may make the operator do (pure).

The author of an EvePipeline gets nothing their namespace does not already give them: the
operator checks, before it writes anything, that the worker image comes from an allowed
registry, that Prefect credentials only travel over https (or stay inside the cluster), and that
a Secret it reads as Prefect credentials was marked for that by whoever owns it. The jobs
namespace check is :func:`eveflow_operator.rbac.jobs_namespace_problem`.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Mapping
from urllib.parse import urlsplit

from eveflow_etl.spec import EvePipeline

from eveflow_operator.settings import OperatorSettings

# On a Secret (label or annotation): its owner allows pipelines to use it as Prefect credentials.
PREFECT_CREDENTIALS_OPT_IN = "eveflow.dev/prefect-credentials"


def image_reference(image: str) -> str:
    """``image`` with its registry spelled out, as the container runtime resolves it:
    ``eveflow:1`` -> ``docker.io/library/eveflow:1``, ``me/x`` -> ``docker.io/me/x``."""
    first, _, rest = image.partition("/")
    if not rest:
        return f"docker.io/library/{image}"
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"docker.io/{image}"


def image_allowed(image: str, allowed: list[str]) -> bool:
    """True when ``allowed`` is empty or the image's registry (or registry/path) is listed."""
    if not allowed:
        return True
    ref = image_reference(image)
    return any(ref.startswith(entry.rstrip("/") + "/") for entry in allowed)


def image_problem(pipeline: EvePipeline, settings: OperatorSettings) -> str | None:
    """The spec's worker image (also the flow-run Jobs' image) against the allowed registries.
    The operator's own default image is the cluster admin's choice and always allowed."""
    image = pipeline.spec.worker.image
    if image is None or image == settings.worker_image or image_allowed(image, settings.allowed_image_registries):
        return None
    return (f"spec.worker.image: {image!r} is not from an allowed registry "
            f"({', '.join(settings.allowed_image_registries)}); use an image from one of them, or remove the "
            "field to use the operator's default image")


def in_cluster_host(host: str) -> bool:
    """A Kubernetes Service name (``svc``, ``svc.ns.svc``, ``svc.ns.svc.cluster.local``) or a
    loopback address: traffic that never leaves the cluster (or the pod)."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    return "." not in host or host.endswith(".svc") or ".svc." in host and host.endswith(".cluster.local")


def plain_http_problem(pipeline: EvePipeline, settings: OperatorSettings) -> str | None:
    """Prefect credentials named in the spec go only over https, unless the spec's URL is an
    in-cluster Service or the operator allows plain http (``allowPlainHttpCredentials``). The
    operator's own default URL is the cluster admin's choice."""
    prefect = pipeline.spec.prefect
    if prefect.api_url is None or settings.allow_plain_http_credentials:
        return None
    if prefect.api_key_secret_ref is None and prefect.auth_string_secret_ref is None:
        return None
    parts = urlsplit(prefect.api_url)
    if parts.scheme == "https" or in_cluster_host(parts.hostname or ""):
        return None
    return (f"spec.prefect.apiUrl: credentials are only sent over https, and http://{parts.hostname} is not a "
            "Service inside the cluster; use an https:// URL (or a Service name such as "
            "http://prefect-server.prefect.svc:4200/api)")


def opted_in(secret: Mapping[str, Any], namespace: str, settings: OperatorSettings) -> bool:
    """True when ``secret`` may be sent to a Prefect API: it carries the opt-in label or
    annotation ``eveflow.dev/prefect-credentials: "true"``, or it is the chart's own Secret."""
    meta = secret.get("metadata") or {}
    if settings.prefect_credentials_secret and settings.prefect_credentials_secret == f"{namespace}/{meta.get('name')}":
        return True
    return any((meta.get(where) or {}).get(PREFECT_CREDENTIALS_OPT_IN) == "true" for where in ("labels", "annotations"))
