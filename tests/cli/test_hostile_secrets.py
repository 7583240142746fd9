"""Issue 23.9: a table of secret shapes (raw, URL-encoded, base64, in userinfo, in the query, in headers, in a
body the server echoes) none of which appears in any output, query log, report or error."""

from __future__ import annotations

import base64
import logging
from urllib.parse import quote

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from typer.testing import CliRunner

from modelproof.cli.app import app
from modelproof.keys.container import save_key
from modelproof.keys.key import key_from_model
from modelproof.serving.server import DropQueryStrings, create_app
from modelproof.util.redact import forms
from servers import running

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()
TOKEN = "tok/0123+S3cret=zz"      # needs URL-encoding, has base64-looking characters
PASSWORD = "pw-Hunter2-xyz"
QUERY = {"api_key": "qk-7777aaaa", "code": "cd-8888bbbb", "sig": "sg-9999cccc", "token": "tq-6666dddd"}
SECRETS = [TOKEN, PASSWORD, f"user:{PASSWORD}", *QUERY.values()]


def leaked(*texts: str) -> list[str]:
    return [f for s in SECRETS for f in forms(s) if any(f in t for t in texts)]


def echo_app() -> FastAPI:
    """A server that refuses every request (401), echoing what it got in every shape it could."""
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def echo(path: str, request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        said = (f"bad credentials {auth} ({quote(auth)}) for {request.url} "
                f"b64={base64.b64encode(auth.encode()).decode()} token={auth.split(' ')[-1]}")
        return JSONResponse({"error": said}, status_code=401)

    return app


@pytest.fixture(scope="module")
def key_file(trained_cnn, digits, tmp_path_factory):
    key = key_from_model(trained_cnn, digits.test.images[:30], method="blend-fingerprint", params={},
                         null_match_prob=0.1, null_source="0.1 (test)")
    return save_key(key, tmp_path_factory.mktemp("secrets") / "key.mpkey")


def query() -> str:
    return "&".join(f"{k}={v}" for k, v in QUERY.items())


@pytest.mark.parametrize("shape", ["header", "userinfo", "query", "base-url", "ftp"])
def test_no_secret_shape_appears_in_errors(shape, key_file, monkeypatch):
    monkeypatch.setenv("SUSPECT_TOKEN", f"Bearer {TOKEN}")
    with running(echo_app()) as url:
        host = url.removeprefix("http://")
        spec, extra = {
            "header": (f"{url}/v2/models/m", ["--header-env", "Authorization=SUSPECT_TOKEN"]),
            "userinfo": (f"http://user:{PASSWORD}@{host}/v2/models/m", []),
            "query": (f"{url}/v2/models/m?{query()}", []),
            "base-url": (f"http://user:{PASSWORD}@{host}/?{query()}", []),
            "ftp": (f"ftp://user:{PASSWORD}@{host}/v2/models/m?{query()}", []),
        }[shape]
        r = runner.invoke(app, ["verify", "-k", str(key_file), "-s", spec, "--retries", "0", *extra])
    assert r.exit_code == 2, r.output
    assert leaked(r.output) == [], r.output


def test_userinfo_with_an_authorization_header_is_refused(key_file, monkeypatch):
    monkeypatch.setenv("SUSPECT_TOKEN", f"Bearer {TOKEN}")
    r = runner.invoke(app, ["verify", "-k", str(key_file), "-s", f"http://user:{PASSWORD}@127.0.0.1:9/v2/models/m",
                            "--header-env", "Authorization=SUSPECT_TOKEN"])
    assert r.exit_code == 2 and "give the credentials one way only" in r.stderr and not leaked(r.output)


def test_secrets_in_the_url_stay_out_of_log_and_report(key_file, trained_cnn, tmp_path):
    from modelproof.models.modelfile import save_model

    model = save_model(trained_cnn, tmp_path / "m.safetensors")
    with running(create_app(model, name="m")) as url:
        host = url.removeprefix("http://")
        spec = f"http://user:{PASSWORD}@{host}/v2/models/m?{query()}"
        r = runner.invoke(app, ["verify", "-k", str(key_file), "-s", spec, "--log", str(tmp_path / "q.jsonl"),
                                "--report", str(tmp_path / "r.json"), "--json"])
    assert r.exit_code == 0, r.output
    texts = [r.output, (tmp_path / "q.jsonl").read_text(), (tmp_path / "r.json").read_text(),
             (tmp_path / "r.txt").read_text()]
    assert leaked(*texts) == []


def test_the_access_log_drops_query_strings():
    from uvicorn.logging import AccessFormatter

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "POST", f"/v2/models/m/infer?{query()}", "1.1", 200), None)
    assert DropQueryStrings().filter(record)
    line = AccessFormatter(use_colors=False).format(record)
    assert "/v2/models/m/infer" in line and leaked(line) == []
