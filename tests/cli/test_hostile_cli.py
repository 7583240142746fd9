"""Issue 23 from the command line: a crash is never read as a decision (exit 2 for a hostile suspect or file,
4 for an internal error), outputs are not overwritten without --force, secrets never travel on argv."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from typer.testing import CliRunner

from modelproof.cli.app import app
from modelproof.keys.container import save_key
from modelproof.keys.key import key_from_model
from servers import Reply, running, scripted_app

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()
DEEP = b"[" * 100000 + b"]" * 100000


@pytest.fixture(scope="module")
def key_file(trained_cnn, digits, tmp_path_factory):
    key = key_from_model(trained_cnn, digits.test.images[:30], method="blend-fingerprint", params={},
                         null_match_prob=0.1, null_source="0.1 (test)")
    return save_key(key, tmp_path_factory.mktemp("hostile") / "key.mpkey")


def test_deeply_nested_answers_exit_2_not_1(key_file):
    answer, _ = scripted_app(lambda i, body: Reply(200, DEEP))
    with running(answer) as url:
        r = runner.invoke(app, ["verify", "-k", str(key_file), "-s", f"{url}/v2/models/m", "--retries", "0"])
    assert r.exit_code == 2, r.output
    assert "not JSON" in r.stderr and "Traceback" not in r.output
    meta = FastAPI()

    @meta.get("/v2/models/m")
    async def metadata() -> Response:
        return Response(b'{"inputs": ' + DEEP + b"}", media_type="application/json")

    with running(meta) as url:
        r = runner.invoke(app, ["verify", "-k", str(key_file), "-s", f"{url}/v2/models/m", "--retries", "0"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output


def test_an_internal_error_is_exit_4_with_one_line(key_file, monkeypatch, tmp_path):
    import modelproof.verification.verifier as verifier

    def boom(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(verifier, "verify", boom)
    model = tmp_path / "m.safetensors"
    from modelproof.models.modelfile import save_model
    from modelproof.models.training import TrainConfig, train_new
    from modelproof.data.splits import load_splits

    save_model(train_new("mlp", load_splits("digits", seed=0).owner, TrainConfig(epochs=1), seed=0)[0], model)
    r = runner.invoke(app, ["verify", "-k", str(key_file), "-s", str(model)])
    assert r.exit_code == 4 and r.stderr.startswith("error: internal error, not a decision (RecursionError"), r.output
    assert len(r.stderr.strip().splitlines()) == 1
