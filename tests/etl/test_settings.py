"""EtlSettings read from the environment: an empty variable means the default."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from eveflow_etl.settings import EtlSettings


def _env_name(field: str) -> str:
    return EtlSettings.model_config["env_prefix"] + field.upper()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for field in EtlSettings.model_fields:
        monkeypatch.delenv(_env_name(field), raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # the data_dir default
    return monkeypatch


def test_empty_variables_load_the_defaults(clean_env):
    """What a docker flow-run container gets for a setting its worker does not have: every
    EVEFLOW_* present and empty. Typed fields (URLs, numbers, the path) must not reject it."""
    defaults = EtlSettings()
    for field in EtlSettings.model_fields:
        clean_env.setenv(_env_name(field), "")
    assert EtlSettings() == defaults


def test_set_variables_still_apply_next_to_empty_ones(clean_env):
    for field in EtlSettings.model_fields:
        clean_env.setenv(_env_name(field), "")
    clean_env.setenv("EVEFLOW_CHUNK_ROWS", "1000")
    clean_env.setenv("EVEFLOW_CONTACT", "ops@corp.example")
    settings = EtlSettings()
    assert settings.chunk_rows == 1000 and settings.contact == "ops@corp.example"
    assert settings.esi_max_retries == EtlSettings.model_fields["esi_max_retries"].default


def test_bad_values_are_still_refused(clean_env):
    clean_env.setenv("EVEFLOW_CONTACT", "   ")  # not empty: a blank contact is a mistake
    with pytest.raises(ValidationError, match="EVEFLOW_CONTACT must name a contact"):
        EtlSettings()
    clean_env.delenv("EVEFLOW_CONTACT")
    clean_env.setenv("EVEFLOW_CHUNK_ROWS", "ten")
    with pytest.raises(ValidationError, match="chunk_rows"):
        EtlSettings()
    clean_env.delenv("EVEFLOW_CHUNK_ROWS")
    with pytest.raises(ValidationError, match="EVEFLOW_CONTACT must name a contact"):
        EtlSettings(contact="")  # a CLI option given empty is not a default
