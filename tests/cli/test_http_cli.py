"""`modelproof verify` from the command line against models as they are really served, on 127.0.0.1.

Real uvicorn servers: our `serve` app in its modes (NCHW FP32, NHWC UINT8, flat + labels only, TF-Serving
without metadata), a scikit-learn model server expecting flat FP64 features and answering labels [N, 1],
a bearer-token server and a server without metadata; and `modelproof serve` itself as a process. Each
run must reach the right verdict with the right exit status (0 owned, 1 not owned, 3 inconclusive, 2
usage errors), and errors must say what went wrong without leaking credentials.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from modelproof.cli.app import app
from modelproof.keys.key import key_from_model
from modelproof.keys.container import save_key
from modelproof.models.modelfile import save_model
from modelproof.serving.server import create_app
from modelproof.suspects.http.client import HttpSuspect
from modelproof.models.training import TrainConfig, train_new
from servers import Reply, flat_label_app, guarded, running, scripted_app

runner = CliRunner()
TOKEN = "tok-0123456789abcdef"


def verify(*args, env=None):
    return runner.invoke(app, ["verify", "--key", str(FILES["key"]), "--json", *map(str, args)], env=env)


def said(r) -> str:
    """What a run said: its stderr (notes), plus its error, which under --json is {"error": ...} on stdout."""
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        doc = None
    error = doc.get("error") if isinstance(doc, dict) else None
    return r.stderr + (f"error: {error}\n" if isinstance(error, str) else "")


def decision(r) -> str:
    return json.loads(r.stdout)["decision"]


FILES: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def files(tmp_path_factory, trained_cnn, digits):
    """Our CNN, an independent CNN and a key of 150 blended digits whose null (0.9) independent models stay under."""
    d = tmp_path_factory.mktemp("httpcli")
    save_model(trained_cnn, d / "cnn.safetensors")
    FILES["ours"] = d / "cnn.safetensors"
    other = train_new("cnn", digits.owner, TrainConfig(epochs=8, batch_size=32, lr=0.002), seed=12)[0]
    save_model(other, d / "other.safetensors")
    FILES["other"] = d / "other.safetensors"
    gen = torch.Generator().manual_seed(3)
    i, j = torch.randint(0, len(digits.test), (2, 150), generator=gen)
    key = key_from_model(trained_cnn, 0.5 * digits.test.images[i] + 0.5 * digits.test.images[j],
                         method="blend-fingerprint", null_match_prob=0.9, null_source="test: set to 0.9")
    save_key(key, d / "key.mpkey")
    FILES["key"], FILES["dir"] = d / "key.mpkey", d
    yield d
    FILES.clear()


def test_our_server_in_its_modes_owned_and_not_owned():
    with running(create_app(FILES["ours"])) as url:
        r = verify("--suspect", f"{url}/v2/models/cnn")
        assert r.exit_code == 0 and decision(r) == "owned", r.output
    with running(create_app(FILES["other"], name="cnn")) as url:
        r = verify("--suspect", f"{url}/v2/models/cnn")
        assert r.exit_code == 1 and decision(r) == "not owned", r.output
    with running(create_app(FILES["ours"], layout="NHWC", dtype="UINT8")) as url:
        r = verify("--suspect", f"{url}/v2/models/cnn", "--layout", "NHWC", "--dtype", "UINT8", "--scale", "255")
        assert r.exit_code == 0 and decision(r) == "owned", r.output
        r = verify("--suspect", f"{url}/v2/models/cnn")  # the metadata says NHWC: a one-line usage error
        assert r.exit_code == 2 and "check --layout" in said(r) and len(said(r).strip().splitlines()) == 1
        config = FILES["dir"] / "suspect.toml"
        config.write_text('layout = "NHWC"\ndtype = "UINT8"\nscale = 255\ninput_shape = [1, 8, 8]\n'
                          '[parameters]\nlabels_only = true\n')
        r = verify("--suspect", f"{url}/v2/models/cnn", "--suspect-config", config)
        assert r.exit_code == 0 and decision(r) == "owned", r.output
    with running(create_app(FILES["ours"], layout="flat", labels_only=True)) as url:
        r = verify("--suspect", f"{url}/v2/models/cnn", "--layout", "flat")
        assert r.exit_code == 0 and decision(r) == "owned", r.output
        assert "using the key's 10" in said(r)  # label-only metadata: the key's class count, said in one note


def test_tfserving_and_no_metadata_use_the_keys_shape():
    with running(create_app(FILES["ours"])) as url:
        r = verify("--suspect", f"{url}/v1/models/cnn:predict")
        assert r.exit_code == 0 and decision(r) == "owned", r.output
        assert "using the key's (1, 8, 8)" in said(r)
    with running(guarded(create_app(FILES["ours"]), metadata=False)) as url:
        r = verify("--suspect", f"{url}/v2/models/cnn", "--num-classes", "10", "--input-shape", "1,8,8")
        assert r.exit_code == 0 and decision(r) == "owned" and "note" not in said(r), r.output


def test_binary_and_no_binary_flags():
    with running(create_app(FILES["ours"])) as url:
        for flag in ("--binary", "--no-binary"):
            r = verify("--suspect", f"{url}/v2/models/cnn", flag)
            assert r.exit_code == 0 and decision(r) == "owned", r.output
        r = verify("--suspect", f"{url}/v1/models/cnn:predict", "--binary")
        assert r.exit_code == 2 and "v2 protocol extension" in said(r) and len(said(r).strip().splitlines()) == 1
    r = verify("--suspect", FILES["ours"], "--binary")
    assert r.exit_code == 2 and "--binary only apply to http(s)://" in said(r), r.output


def test_concurrency_flag():
    with running(create_app(FILES["ours"])) as url:
        for n in ("1", "4"):
            r = verify("--suspect", f"{url}/v2/models/cnn", "--concurrency", n)
            assert r.exit_code == 0 and decision(r) == "owned", r.output
        r = verify("--suspect", f"{url}/v2/models/cnn", "--concurrency", "0")
        assert r.exit_code == 2 and "--concurrency must be an integer from 1 to 16, got 0" in said(r), r.output


def test_scikit_learn_server_with_flat_features_and_labels_only(digits):
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    raw = load_digits()
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(raw.data[:900], raw.target[:900])
    with running(flat_label_app(forest, features=64)) as url:
        opts = ["--layout", "flat", "--scale", "16", "--dtype", "FP64", "--input-name", "features"]
        r = verify("--suspect", f"{url}/v2/models/forest", *opts)
        assert r.exit_code == 1 and decision(r) == "not owned", r.output
        x = digits.test.images[:40]  # the flat mapping is exact: the served forest answers as in-process
        s = HttpSuspect(f"{url}/v2/models/forest", layout="flat", scale=16, dtype="FP64", input_name="features",
                        num_classes=10, input_shape=(1, 8, 8))
        assert torch.equal(s.predict(x), torch.from_numpy(forest.predict(x.reshape(40, -1).numpy() * 16).astype(np.int64)))
        r = verify("--suspect", f"{url}/v2/models/forest", "--layout", "flat", "--scale", "16")
        assert r.exit_code == 2 and "the server said \"expected input 'features' FP64" in said(r), said(r)
        assert "sent FP32 inputs of shape [10, 64], layout flat" in said(r)


def test_bearer_token_from_the_environment():
    with running(guarded(create_app(FILES["ours"]), token=TOKEN)) as url:
        r = verify("--suspect", f"{url}/v2/models/cnn", "--header-env", "Authorization=SUSPECT_TOKEN",
                   env={"SUSPECT_TOKEN": f"Bearer {TOKEN}"})
        assert r.exit_code == 0 and decision(r) == "owned", r.output
        r = verify("--suspect", f"{url}/v2/models/cnn", "--header", f"Authorization: Bearer {TOKEN}x")
        assert r.exit_code == 2 and "HTTP 401" in said(r) and "--header-env" in said(r) and TOKEN not in r.output
        r = verify("--suspect", f"{url}/v2/models/cnn", "--header-env", "Authorization=NO_SUCH_VARIABLE_HERE")
        assert r.exit_code == 2 and "NO_SUCH_VARIABLE_HERE is not set" in said(r)


def test_deterministic_errors_are_not_retried_and_say_what_was_sent():
    handler = lambda i, body: Reply(500, {"error": "shape mismatch: expected [-1, 3, 32, 32]"})  # noqa: E731
    server, script = scripted_app(handler)
    with running(server) as url:
        r = verify("--suspect", f"{url}/v2/models/m", "--retries", "3")
    assert r.exit_code == 2 and script.attempts == 1, r.output
    assert "no model metadata" in r.stderr  # the key's shape is used, with a note
    line = json.loads(r.stdout)["error"]  # one error, on stdout under --json
    assert "HTTP 500, the server said 'shape mismatch: expected [-1, 3, 32, 32]'" in line
    assert "sent FP32 inputs of shape [10, 1, 8, 8], layout NCHW" in line


def test_query_log_resumes_on_another_port_and_refuses_another_model():
    log = FILES["dir"] / "queries.jsonl"
    with running(create_app(FILES["ours"])) as url:
        r = verify("--suspect", f"{url}/v2/models/cnn", "--budget", "40", "--log", log)
        assert r.exit_code == 3 and decision(r) == "inconclusive", r.output
    with running(create_app(FILES["ours"])) as url:  # the same model on another port: the same look replays
        r = verify("--suspect", f"{url}/v2/models/cnn", "--budget", "40", "--log", log)
        assert r.exit_code == 3 and json.loads(r.stdout)["replayed"] == 40, r.output
        r = verify("--suspect", f"{url}/v2/models/cnn", "--log", log)  # a second fixed look: refused
        assert r.exit_code == 2 and "use --sequential" in said(r), said(r)
    with running(create_app(FILES["other"], name="other")) as url:
        r = verify("--suspect", f"{url}/v2/models/other", "--log", log)
        assert r.exit_code == 2 and "it was made with \"v2 model 'cnn' version 1\"" in said(r), said(r)


def _modelproof(*args: str) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("modelproof")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_modelproof_serve_process_nhwc_uint8_and_a_busy_port():
    proc = _modelproof("serve", str(FILES["ours"]), "--port", "0", "--layout", "NHWC", "--dtype", "UINT8")
    try:
        proc.stdout.readline()
        infer = proc.stdout.readline().split()[2]
        url = infer.rsplit("/", 1)[0]
        port = int(url.split(":")[2].split("/")[0])
        done = subprocess.run([str(Path(sys.executable).with_name("modelproof")), "verify", "--key", str(FILES["key"]),
                               "--suspect", url, "--layout", "NHWC", "--dtype", "UINT8", "--scale", "255"],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0 and done.stdout.startswith("decision: OWNED"), done.stdout + done.stderr
        busy = _modelproof("serve", str(FILES["ours"]), "--port", str(port))
        out, err = busy.communicate(timeout=120)
        assert busy.returncode == 2 and err.strip() == f"error: port {port} on 127.0.0.1 is already in use; pick another with --port"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
