"""The operator's one entry point, behind ``eveflow operator`` (the chart's and the image's
command too): kopf's ``run`` with our own handler registry and the settings' options.

Our handlers live in a private registry rather than kopf's default one: importing Prefect loads
prefect-kubernetes, whose observer registers kopf handlers of its own on the default registry
at import time -- they must not run inside this operator. That is also why there is no module
for plain ``kopf run -m``: it would serve the default registry, observer included.
"""

from __future__ import annotations

from typing import Any

import kopf
from kopf._core.intents.registries import SmartOperatorRegistry  # with kopf's login handlers

from eveflow_operator.handlers import register, warm_up
from eveflow_operator.settings import OperatorSettings, load_settings


def kopf_options(settings: OperatorSettings) -> dict[str, Any]:
    """The ``kopf.run`` options these settings mean (pure: tested without running kopf)."""
    options: dict[str, Any] = {"standalone": settings.standalone, "clusterwide": settings.clusterwide,
                               "namespaces": list(settings.namespaces)}
    if settings.health_port:
        options["liveness_endpoint"] = f"http://0.0.0.0:{settings.health_port}/healthz"
    return options


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    warm_up()
    registry = SmartOperatorRegistry()
    register(settings, registry)
    return registry


def run_operator(*, verbose: bool = False, debug: bool = False) -> int:
    settings = load_settings()  # bad EVEFLOW_OPERATOR_* values fail here, before kopf starts
    kopf.configure(verbose=verbose, debug=debug)
    kopf.run(registry=build_registry(settings), **kopf_options(settings))
    return 0
