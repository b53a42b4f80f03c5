"""`eveflow operator` refuses bad EVEFLOW_OPERATOR_* settings at startup with one line that names
the variable and the fix, and never prints a value (the Prefect URL may hold a password)."""

from __future__ import annotations

import pytest

from eveflow_etl.spec import has_url_credentials
from tests.fixtures.urls import PREFECT_URL_SAMPLES



def _start_operator(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from eveflow_operator import entrypoint
    from eveflow_operator.cli import app  # the console script's app, with the operator commands

    from eveflow_etl.cli import run

    def _started(*_: object) -> None:
        raise AssertionError("the operator started with these settings")

    monkeypatch.setattr(entrypoint, "build_registry", _started)
    assert app is not None
    code = run(["operator"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("url", ["http://admin:s3cret@prefect-server:4200/api", "https://s3cret@prefect.example.org/api"])
def test_operator_refuses_credentials_in_its_default_prefect_url(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVEFLOW_OPERATOR_PREFECT_API_URL", url)
    code, err = _start_operator(monkeypatch, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: EVEFLOW_OPERATOR_PREFECT_API_URL: credentials in the URL")
    assert "prefect.apiUrl" in err and "prefect.auth.existingSecret" in err and "authStringSecretRef" in err
    assert "s3cret" not in err


def test_a_bad_setting_does_not_print_the_other_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVEFLOW_OPERATOR_PREFECT_API_URL", "http://prefect-server:4200/api?token=s3cret")
    monkeypatch.setenv("EVEFLOW_OPERATOR_NAMESPACES", "Bad_NS")
    code, err = _start_operator(monkeypatch, capsys)
    assert code == 2 and err.startswith("error: EVEFLOW_OPERATOR_NAMESPACES:")
    assert "s3cret" not in err and "Traceback" not in err

    # Nor does the settings object's own error, for code that builds it without load_settings().
    from eveflow_operator.settings import OperatorSettings

    with pytest.raises(ValueError, match="EVEFLOW_OPERATOR_NAMESPACES") as raised:
        OperatorSettings()
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("url", PREFECT_URL_SAMPLES)
def test_settings_accept_exactly_the_urls_the_spec_accepts(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from eveflow_etl.errors import ConfigError
    from eveflow_operator.settings import load_settings

    monkeypatch.setenv("EVEFLOW_OPERATOR_PREFECT_API_URL", url)
    try:
        accepted = load_settings().prefect_api_url == url
    except ConfigError:
        accepted = False
    assert accepted == (not has_url_credentials(url))
