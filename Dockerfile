# syntax=docker/dockerfile:1
# One image for the operator (`eveflow operator`), the ETL worker (`eveflow worker`) and, for demos,
# a Prefect server (`prefect server start`, same pinned Prefect). linux/amd64, non-root.
#   docker build -t eveflow:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: resolve and install the package into a venv with uv (build tools stay here) ----
# The image is published for linux/amd64 only (the wheels it pins are resolved for it), so the
# platform is fixed on purpose; on an arm64 laptop Docker builds it under emulation.
# hadolint ignore=DL3029
FROM --platform=linux/amd64 ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv venv --python /usr/local/bin/python3.11 /opt/eveflow
WORKDIR /src
COPY pyproject.toml README.md ./
COPY etl/ etl/
COPY operator/ operator/
# The same install command tests/run.sh uses (there with -e and the [test] extra):
# --compile-bytecode, because the root filesystem is read-only at run time.
RUN uv pip install --python /opt/eveflow/bin/python --compile-bytecode --no-cache .

# ---- runtime: the venv and the interpreter, nothing else ----
# hadolint ignore=DL3029
FROM --platform=linux/amd64 ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="eveflow" \
      org.opencontainers.image.description="EvePipeline operator, Prefect worker and ETL for EVE Online market data" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
# /data: EVEFLOW_DATA_DIR of the rendered targets, where compose mounts a named volume. Docker
# gives a new volume the owner of the image's directory (root's when there is none, and then the
# non-root user cannot create its cache there).
RUN groupadd --system --gid 10001 eveflow \
 && useradd --system --uid 10001 --gid eveflow --home-dir /home/eveflow --create-home --shell /usr/sbin/nologin eveflow \
 && mkdir /data \
 && chown 10001:10001 /data
COPY --from=build /opt/eveflow /opt/eveflow
ENV PATH=/opt/eveflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PREFECT_HOME=/tmp/prefect \
    XDG_CACHE_HOME=/tmp/.cache
USER 10001:10001
WORKDIR /home/eveflow
# 8080: worker /health and /metrics; 8081: operator /healthz; 9090: operator /metrics.
EXPOSE 8080 8081 9090
# Healthy when whichever role runs answers: the worker's /health, the operator's /healthz or the
# bundled Prefect server's /api/health.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request as u\nfor url in ('http://127.0.0.1:8080/health', 'http://127.0.0.1:8081/healthz', 'http://127.0.0.1:4200/api/health'):\n    try:\n        u.urlopen(url, timeout=3)\n        sys.exit(0)\n    except Exception:\n        pass\nsys.exit(1)"]
ENTRYPOINT ["eveflow"]
CMD ["--help"]
