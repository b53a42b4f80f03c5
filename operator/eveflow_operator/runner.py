"""``eveflow operator``: build kopf's command line from the settings and run it in-process."""

from __future__ import annotations

from eveflow_operator.settings import OperatorSettings, load_settings

ENTRY_MODULE = "eveflow_operator.main"


def kopf_argv(settings: OperatorSettings, *, verbose: bool = False, debug: bool = False) -> list[str]:
    """The ``kopf run`` arguments these settings mean (pure: tested without running kopf)."""
    argv = ["run", "-m", ENTRY_MODULE]
    if settings.standalone:
        argv.append("--standalone")
    if settings.clusterwide:
        argv.append("--all-namespaces")
    for namespace in settings.namespaces:
        argv += ["--namespace", namespace]
    if settings.health_port:
        argv += ["--liveness", f"http://0.0.0.0:{settings.health_port}/healthz"]
    if verbose:
        argv.append("--verbose")
    if debug:
        argv.append("--debug")
    return argv


def run_operator(*, verbose: bool = False, debug: bool = False) -> int:
    import kopf.cli

    settings = load_settings()  # bad EVEFLOW_OPERATOR_* values fail here, before kopf starts
    try:
        kopf.cli.main(args=kopf_argv(settings, verbose=verbose, debug=debug), prog_name="eveflow operator")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
