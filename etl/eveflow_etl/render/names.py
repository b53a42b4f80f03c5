"""Name rules of the render targets: SPCS object names, Snowflake SQL identifiers and literals.

Nothing from a pipeline document reaches SQL, YAML or a shell script without passing one of
these functions. Each either returns a value that is safe where it goes or raises
:class:`ConfigError` naming the field and the fix.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

from eveflow_etl.errors import ConfigError

SPCS_NAME_MAX = 63
_SPCS_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
# Unquoted Snowflake identifiers are case-insensitive and stored upper-case. We only emit names
# that are valid *unquoted* and quote them anyway, so "X" and X name the same object.
SQL_IDENTIFIER_MAX = 255
_SQL_IDENTIFIER_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_PLACEHOLDER_RE = re.compile(r"^<[A-Z][A-Z0-9_]*>$")


def _short_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def check_spcs_name(value: str, field: str) -> str:
    """Return ``value`` if it is a valid SPCS name (container, endpoint, volume); else refuse."""
    if len(value) > SPCS_NAME_MAX or not _SPCS_NAME_RE.match(value):
        raise ConfigError(
            f"{field}: '{_shown(value)}' is not a valid SPCS name: use at most {SPCS_NAME_MAX} "
            "lowercase letters, digits and '-', starting with a letter"
        )
    return value


def spcs_name(value: str, field: str) -> str:
    """Make ``value`` a valid SPCS name, deterministically, or refuse if nothing usable remains.

    Lower-cases, turns every other character into '-', and shortens names past 63 characters
    to 54 characters plus '-' and a hash of the original (so two long names stay distinct).
    """
    cleaned = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    cleaned = re.sub(r"^[0-9-]+", "", cleaned)
    if not cleaned:
        raise ConfigError(
            f"{field}: '{_shown(value)}' cannot be made an SPCS name: it needs at least one "
            "letter (names are lowercase letters, digits and '-')"
        )
    if len(cleaned) > SPCS_NAME_MAX:
        cleaned = f"{cleaned[:54].rstrip('-')}-{_short_hash(value)}"
    return check_spcs_name(cleaned, field)


def sql_identifier(value: str, field: str) -> str:
    """Return the upper-case Snowflake identifier for ``value`` ('-' becomes '_'), or refuse.

    Refuses rather than repairs: an identifier names an object a user will look for, so it
    must be exactly what they wrote (apart from case and '-').
    """
    candidate = value.upper().replace("-", "_")
    if len(candidate) > SQL_IDENTIFIER_MAX or not _SQL_IDENTIFIER_RE.match(candidate):
        raise ConfigError(
            f"{field}: '{_shown(value)}' is not a usable Snowflake identifier: use letters, digits, "
            f"'_' or '-' (at most {SQL_IDENTIFIER_MAX}), starting with a letter or '_'"
        )
    return candidate


def quote_identifier(identifier: str) -> str:
    """Double-quote a validated identifier (embedded quotes doubled, though none pass validation)."""
    if not _SQL_IDENTIFIER_RE.match(identifier):
        raise ConfigError(f"internal: '{_shown(identifier)}' was not validated by sql_identifier()")
    return '"' + identifier.replace('"', '""') + '"'


def qualified(*parts: str) -> str:
    """``"DB"."SCHEMA"."NAME"`` from validated identifiers."""
    return ".".join(quote_identifier(p) for p in parts)


def sql_string(value: str) -> str:
    """A Snowflake single-quoted string literal (quotes doubled, backslashes escaped)."""
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ConfigError(f"'{_shown(value)}': line breaks and NUL are not allowed in a SQL string here")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def host_port(host: str, port: int, field: str) -> str:
    """``host:port`` for a network rule; the host is a DNS name or a ``<PLACEHOLDER>``."""
    if not (_HOSTNAME_RE.match(host) or _PLACEHOLDER_RE.match(host)):
        raise ConfigError(f"{field}: '{_shown(host)}' is not a host name")
    if not 1 <= port <= 65535:
        raise ConfigError(f"{field}: port {port} is out of range 1-65535")
    return f"{host}:{port}"


def url_host_port(url: str, field: str) -> str:
    """The ``host:port`` an HTTP(S) URL connects to (443/80 when the URL names no port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{field}: '{_shown(url)}' is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{field}: '{_shown(url)}' must be an http(s) URL with a host")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return host_port(parts.hostname.lower(), port, field)


def _shown(value: str, limit: int = 80) -> str:
    """A value as it may appear in an error message: one line, bounded length."""
    text = value.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "…"
