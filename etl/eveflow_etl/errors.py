"""Errors a user can act on. The CLI prints their message as one line and exits non-zero."""

from __future__ import annotations


class EveflowError(Exception):
    """Base of every error whose message is written for the user (names the field and the fix)."""

    exit_code = 2


class ConfigError(EveflowError):
    """Bad input: a spec field, an identifier, a CLI option, a malformed file."""


class SourceError(EveflowError):
    """A market data source failed for good (after retries) or answered something unusable."""

    exit_code = 3


class DestinationError(EveflowError):
    """The database could not be reached or refused the load."""

    exit_code = 4


class PrefectError(EveflowError):
    """The Prefect API was unreachable, refused the credentials, or rejected a request."""

    exit_code = 5
