"""Issue 13, item 4: URLs printed by the CLI and the Prefect client never show credentials."""

from __future__ import annotations

import asyncio
import http.server
import threading

import pytest

from eveflow_etl.cli import run
from eveflow_etl.orchestration.client import PrefectApi
from eveflow_etl.orchestration.types import PrefectConnection, PrefectRejected

SECRET = "pw-5e3cret-91"


def test_pipeline_cli_never_prints_the_password_of_a_bad_api_url(tmp_path, capsys):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "pipeline.yaml"
    code = run(["status", "-f", str(example), "--api-url", f"ftp://eve:{SECRET}@prefect.example/api"])
    err = capsys.readouterr().err
    assert code != 0 and "must start with http:// or https://" in err
    assert SECRET not in err


class _Redirect(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(302)
        self.send_header("Location", f"https://eve:{SECRET}@elsewhere.example/api?token={SECRET}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_redirect_target_with_credentials_is_not_printed():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        async def call():
            async with PrefectApi(PrefectConnection(f"http://127.0.0.1:{server.server_port}/api")) as api:
                await api.get("/health")
        with pytest.raises(PrefectRejected) as info:
            asyncio.run(call())
    finally:
        server.shutdown()
    message = str(info.value)
    assert "redirect" in message and "elsewhere.example" in message and SECRET not in message
