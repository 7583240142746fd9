"""Issue 23, points 1, 3, 4 and 6: a query log proves nothing about another endpoint, is hash-chained,
locked against a second writer, and never clobbers a file that is not a log of ours (or a symlink)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from modelproof.keys.key import key_from_model
from modelproof.models.modelfile import save_model
from modelproof.serving.server import create_app
from modelproof.suspects.http.client import HttpSuspect
from modelproof.suspects.queried import QueriedSuspect, recheck_size
from modelproof.util.errors import ConfigError, SuspectError
from modelproof.verification.report import summary
from modelproof.verification.verifier import verify
from servers import running

pytestmark = pytest.mark.timeout(120)
SHAPE = {"num_classes": 10, "input_shape": (1, 8, 8), "timeout": 5.0, "retries": 0}


@pytest.fixture(scope="module")
def key(trained_cnn, digits):
    return key_from_model(trained_cnn, digits.test.images[:60], method="blend-fingerprint", params={},
                          null_match_prob=0.1, null_source="0.1 (test)")


@pytest.fixture(scope="module")
def files(trained_cnn, digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    unrelated = copy.deepcopy(trained_cnn)  # same architecture, weights of its own: an unrelated model
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in unrelated.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return save_model(trained_cnn, folder / "protected.safetensors"), save_model(unrelated, folder / "other.safetensors")


def test_a_log_from_one_server_does_not_prove_ownership_of_another(key, files, tmp_path):
    protected, unrelated = files
    log = tmp_path / "q.jsonl"
    with running(create_app(protected, name="m")) as a:
        first = verify(key, HttpSuspect(f"{a}/v2/models/m", **SHAPE), log_path=log)
    assert first.decision == "owned" and first.queries_sent == 60
    with running(create_app(unrelated, name="m")) as b:  # same protocol, name and version; another model
        fresh = verify(key, HttpSuspect(f"{b}/v2/models/m", **SHAPE))
        assert fresh.decision == "not owned"
        with pytest.raises(SuspectError, match=r"answered \d+ of 23 re-asked logged inputs differently"):
            verify(key, HttpSuspect(f"{b}/v2/models/m", **SHAPE), log_path=log)
    with running(create_app(protected, name="m")) as moved:  # the same model on another port still resumes
        again = verify(key, HttpSuspect(f"{moved}/v2/models/m", **SHAPE), log_path=log)
    assert again.decision == "owned" and again.queries_sent == 0 and again.replayed == 60
    assert again.replay["rechecked"] == recheck_size(60) == 23 and again.replay["endpoints"] == [f"{a}/v2/models/m/infer"]
    assert again.replay["rechecked_at"] == f"{moved}/v2/models/m/infer"
    text = summary(again)
    assert f"60 answers from the query log {log}" in text and f"given by {a}/v2/models/m/infer" in text
    assert "23 re-asked" in text and "hash chain intact" in text


def test_an_edited_label_breaks_the_chain(key, trained_cnn, tmp_path):
    from modelproof.suspects.local import TorchSuspect

    log = tmp_path / "q.jsonl"
    verify(key, TorchSuspect(trained_cnn), log_path=log)
    assert log.stat().st_mode & 0o777 == 0o600  # an owned suspect's answers are the key's labels
    lines = log.read_text().splitlines()
    rec = json.loads(lines[5])
    rec["label"] = (rec["label"] + 1) % 10  # valid JSON, a valid label: only the chain can tell
    edited = lines[:5] + [json.dumps(rec, sort_keys=True)] + lines[6:]
    log.write_text("\n".join(edited) + "\n")
    with pytest.raises(ConfigError, match="line 7 breaks the hash chain"):
        verify(key, TorchSuspect(trained_cnn), log_path=log)
    assert log.read_text() == "\n".join(edited) + "\n"  # refused, not repaired


RUNNER = textwrap.dedent("""
    import sys, time, torch
    from modelproof.suspects.queried import QueriedSuspect
    class Slow:
        num_classes, input_shape, identity = 10, (1, 8, 8), "slow"
        def predict(self, x):
            return torch.zeros(len(x), dtype=torch.long)
    q = QueriedSuspect(Slow(), log_path=sys.argv[1])
    print("locked", flush=True)
    time.sleep(60)
""")


def test_a_second_writer_of_a_log_is_refused_with_the_holders_pid(tmp_path):
    log = tmp_path / "q.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(log)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"

        class Fake:
            num_classes, input_shape, identity = 10, (1, 8, 8), "slow"

            def predict(self, x):
                return torch.zeros(len(x), dtype=torch.long)

        with pytest.raises(ConfigError, match=rf"query log {log} is in use by process {proc.pid} "):
            QueriedSuspect(Fake(), log_path=log)
    finally:
        proc.kill()
        proc.wait()
    q = QueriedSuspect(Fake(), log_path=log)  # a killed holder leaves no lock behind (flock dies with it)
    q.predict(torch.rand(3, 1, 8, 8))
    q.close()
    assert not (tmp_path / "q.jsonl.lock").exists()


class Zero:
    num_classes, input_shape, identity = 10, (1, 8, 8), "zero"

    def predict(self, x):
        return torch.zeros(len(x), dtype=torch.long)


@pytest.mark.parametrize("content", [b"ghp_secrettoken1234", b"0\x82\x05\x12\x06\t*\x86H\x86\xf7\r\x01\x07\x02",
                                     b'{"an": "other json file"}\n', b'{"n": 0, "input_sha256": "ab", "label": 1}\n'])
def test_a_file_that_is_not_our_log_is_refused_untouched(tmp_path, content):
    target = tmp_path / "token.txt"
    target.write_bytes(content)
    with pytest.raises(ConfigError, match=r"--log .*token.txt (holds \d+ bytes that are not|is not) a modelproof query log"):
        QueriedSuspect(Zero(), log_path=target)
    assert target.read_bytes() == content


def test_a_torn_header_is_a_new_log_and_a_symlink_is_refused(tmp_path):
    log = tmp_path / "q.jsonl"
    log.write_bytes(b'{"format": "modelproof-qu')  # killed while writing the header
    q = QueriedSuspect(Zero(), log_path=log)
    q.predict(torch.rand(2, 1, 8, 8))
    q.close()
    assert json.loads(log.read_text().splitlines()[0])["format"] == "modelproof-query-log"
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    link = tmp_path / "link.jsonl"
    os.symlink(target, link)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        QueriedSuspect(Zero(), log_path=link)
    assert target.read_text() == "keep me"
