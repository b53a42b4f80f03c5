"""Spec + settings + Secret values -> the PrefectConnection the sync library takes.

Secret values are read through the API at the start of each pass and live only in the returned
(frozen, repr-less) connection: never logged, never written to status or events.
"""

from __future__ import annotations

import base64
from typing import Awaitable, Callable

from eveflow_etl.orchestration.types import PrefectConnection
from eveflow_etl.spec import EvePipeline, SecretKeyRef

from eveflow_operator.boundary import PREFECT_CREDENTIALS_OPT_IN, opted_in
from eveflow_operator.settings import OperatorSettings
from eveflow_operator.worker_deployment import operator_plan

ReadSecret = Callable[[str, str], Awaitable[dict | None]]  # (namespace, name) -> Secret or None
# (namespace, name) -> the Secret's metadata only (no values), or None
ReadSecretMeta = ReadSecret


class SecretNotFound(Exception):
    """A Secret (or a key of it) the spec names is missing; the message says which and where."""


class SecretNotOptedIn(SecretNotFound):
    """A Secret named as Prefect credentials was not marked for that by its owner: its value is
    never read out of it, let alone sent anywhere."""


async def _value(read_secret: ReadSecret, namespace: str, ref: SecretKeyRef, field: str,
                 settings: OperatorSettings) -> str:
    secret = await read_secret(namespace, ref.name)
    if secret is None:
        raise SecretNotFound(f"{field}: Secret '{ref.name}' not found in namespace '{namespace}'; create it "
                             f"with the key '{ref.key}'")
    if not opted_in(secret, namespace, settings):
        raise SecretNotOptedIn(
            f"{field}: Secret '{ref.name}' is not marked as Prefect credentials; if it holds them, label it: "
            f"kubectl label secret -n {namespace} {ref.name} {PREFECT_CREDENTIALS_OPT_IN}=true")
    data = (secret.get("data") or {}).get(ref.key)
    if data is None:
        string = (secret.get("stringData") or {}).get(ref.key)
        if string is None:
            # The Secret's other key names are not listed: this message goes to status and Events,
            # which more people can read than the Secret.
            raise SecretNotFound(f"{field}: Secret '{ref.name}' has no key '{ref.key}'; add it, or name the key "
                                 f"that holds the value")
        return string
    return base64.b64decode(data).decode().strip()


async def build_connection(pipeline: EvePipeline, settings: OperatorSettings, namespace: str,
                           read_secret: ReadSecret) -> PrefectConnection:
    prefect = pipeline.spec.prefect
    api_key = auth = None
    if prefect.api_key_secret_ref is not None:
        api_key = await _value(read_secret, namespace, prefect.api_key_secret_ref, "spec.prefect.apiKeySecretRef",
                               settings)
    if prefect.auth_string_secret_ref is not None:
        auth = await _value(read_secret, namespace, prefect.auth_string_secret_ref,
                            "spec.prefect.authStringSecretRef", settings)
    if prefect.mode == "cloud" and api_key is None:
        raise SecretNotFound("spec.prefect.apiKeySecretRef: Prefect Cloud needs an API key Secret")
    api_url = operator_plan(pipeline, settings, namespace).prefect_api_url
    return PrefectConnection(api_url=api_url, api_key=api_key, auth_string=auth,
                             timeout_seconds=settings.prefect_timeout_seconds)


async def check_destination_secret(pipeline: EvePipeline, namespace: str, read_secret: ReadSecretMeta) -> None:
    """The worker's envFrom Secret must exist, or its pods would never start (only its metadata
    is read: the operator has no use for the database password)."""
    name = pipeline.spec.destination.secret_ref
    if name and await read_secret(namespace, name) is None:
        raise SecretNotFound(f"spec.destination.secretRef: Secret '{name}' not found in namespace "
                             f"'{namespace}'; create it (PG* keys) or remove secretRef")
