"""What both render targets derive from one EvePipeline: env variables, hosts, the pool.

Pure functions of the pipeline (no environment reads, no I/O), so a render is deterministic and
can never pick up a secret value from the machine it runs on.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from eveflow_etl.datasets import SourceKind
from eveflow_etl.errors import ConfigError
from eveflow_etl.plan import PG_VARIABLES as PG_DATABASE_VARIABLES
from eveflow_etl.plan import (
    PGSSLMODE,
    PREFECT_API_AUTH_STRING,
    PREFECT_API_KEY,
    SNOWFLAKE_VARIABLES,
    WORKER_PORT,  # noqa: F401 - the renders read the plan's port and worker arguments from here
    worker_args,  # noqa: F401
)
from eveflow_etl.settings import EtlSettings
from eveflow_etl.spec import EvePipeline, WorkPoolSpec, parse_pipeline

DEFAULT_IMAGE = "eveflow:latest"
CLOUD_API_HOST = "api.prefect.cloud"
DATA_DIR = "/data"

# Every variable a worker may read, by purpose; .env.example lists them all.
PREFECT_VARIABLES = ("PREFECT_API_URL", PREFECT_API_KEY, PREFECT_API_AUTH_STRING)
PG_VARIABLES = (*PG_DATABASE_VARIABLES.names, PGSSLMODE)
SNOWFLAKE_PG_VARIABLES = SNOWFLAKE_VARIABLES.names

# Every EVEFLOW_* setting the ETL reads, from the settings model itself (a new field is passed on
# without anyone listing it here).
ETL_SETTING_VARIABLES = tuple(
    EtlSettings.model_config["env_prefix"] + name.upper() for name in EtlSettings.model_fields
)


_IMAGE_REF_RE = re.compile(
    r"^[a-z0-9][a-z0-9._-]*(:[0-9]{1,5})?(/[a-z0-9._-]+)*"  # [registry[:port]/]path
    r"(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[a-f0-9]{64})?$"  # [:tag][@digest]
)


def _default_url(field: str) -> str:
    # The class defaults, never EtlSettings(): that would read EVEFLOW_* from this machine.
    return str(EtlSettings.model_fields[field].default)


SOURCE_URLS = {
    SourceKind.ESI_HISTORY: _default_url("esi_base_url"),
    SourceKind.ESI_ORDERS: _default_url("esi_base_url"),
    SourceKind.MOKAAM: _default_url("mokaam_base_url"),
    SourceKind.EVEREF: _default_url("everef_base_url"),
}


def check_renderable(pipeline: EvePipeline) -> EvePipeline:
    """Re-validate (a model built with ``model_construct`` skips validation) and refuse what no
    target can run: the embedded ``local`` database only exists on the demo machine."""
    document = pipeline.model_dump(mode="json", by_alias=True, exclude_none=True)
    pipeline = parse_pipeline(document, origin="pipeline")  # the name itself may be hostile: not echoed
    image = pipeline.spec.worker.image
    if image is not None and not _IMAGE_REF_RE.match(image):
        # The image lands in deploy.sh and in compose's ${EVEFLOW_IMAGE:-...}: no shell or
        # interpolation characters may ride along.
        raise ConfigError(
            f"spec.worker.image: '{image[:80]}' is not an image reference "
            "(registry/name:tag or name@sha256:..., letters, digits and . _ - / : @ only)"
        )
    if pipeline.spec.destination.profile == "local":
        raise ConfigError(
            "spec.destination.profile: 'local' is the embedded demo database and cannot be rendered; "
            "use env (PG* variables), crunchy or snowflake"
        )
    return pipeline


def source_url(pipeline: EvePipeline) -> str:
    return SOURCE_URLS[pipeline.spec.source.kind]


def with_pool(pipeline: EvePipeline, name: str, pool_type: str) -> EvePipeline:
    """The same pipeline with its work pool moved to ``name``/``pool_type`` (queues and limits
    kept; type-specific job variables dropped when the type changes)."""
    pool = pipeline.spec.work_pool
    if pool.name == name and pool.type == pool_type:
        return pipeline
    new_pool = WorkPoolSpec(
        name=name,
        type=pool_type,
        concurrency_limit=pool.concurrency_limit,
        queues=pool.queues,
        job_variables=pool.job_variables if pool.type == pool_type else {},
    )
    spec = pipeline.spec.model_copy(update={"work_pool": new_pool})
    return pipeline.model_copy(update={"spec": spec})


def pipeline_document(pipeline: EvePipeline, comment: str) -> str:
    """The pipeline as the YAML document ``eveflow apply -f`` reads, with a leading comment."""
    document = pipeline.model_dump(mode="json", by_alias=True, exclude_none=True)
    header = "".join(f"# {line}\n" if line else "#\n" for line in comment.splitlines())
    return header + dump_yaml(document)


class _Dumper(yaml.SafeDumper):
    """Block style, no aliases, multi-line strings as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(document: Any) -> str:
    """Deterministic YAML: sorted keys, block style, no aliases, a fixed width."""
    return yaml.dump(
        document, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=100, allow_unicode=False
    )
