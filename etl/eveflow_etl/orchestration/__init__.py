"""eveflow on Prefect: the flows, the idempotent sync library, the worker entrypoint and the demo."""
