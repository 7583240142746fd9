"""Issue 23.2: a crash is never a decision. The answer decoder and the key, report and commitment readers,
fed random and mutated input, raise only the package's own errors (the CLI's exit 2), never a traceback."""

from __future__ import annotations

import json
import random
import struct

import httpx
import pytest
import torch

from modelproof.keys.commitments import read_commitment, write_commitment
from modelproof.keys.container import encrypt_bytes, key_from_bytes, load_key, save_key, _to_safetensors
from modelproof.keys.key import key_from_model
from modelproof.suspects.http.client import HttpSuspect
from modelproof.util.errors import ModelproofError
from modelproof.verification.report import check_report, write_report
from modelproof.verification.verifier import verify
from modelproof.suspects.local import TorchSuspect

pytestmark = pytest.mark.timeout(120)


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 6 else 5)
    leaves = [None, True, 1.5e308, -1, 3, "x", float("nan"), 10**30, "label"]
    if kind < 5:
        return rng.choice(leaves)
    if kind < 7:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["outputs", "data", "shape", "name", "predictions", "datatype", "error", "scores"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def mutations(raw: bytes, rng: random.Random, n: int):
    for _ in range(n):
        b = bytearray(raw)
        op = rng.randrange(4)
        if op == 0 and b:
            for _ in range(rng.randrange(1, 6)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            del b[rng.randrange(len(b) + 1):]
        elif op == 2 and b:
            i = rng.randrange(len(b))
            b[i:i] = rng.choice([b"[" * 50000, b"{\"a\":" * 50000, b"\x00", b"9" * 400, b"-"])
        else:
            b = bytearray(raw.replace(b"1", b"1e999", 1))
        yield bytes(b)


@pytest.fixture(scope="module")
def suspect():
    """An HttpSuspect whose shapes are given (no server needed to decode answers)."""
    s = HttpSuspect("http://127.0.0.1:9/v2/models/m", num_classes=10, input_shape=(1, 8, 8), retries=0, timeout=0.5)
    yield s
    s.close()


def decode(suspect, content: bytes, n: int = 2):
    return suspect._labels(suspect.codec.answer(suspect._json(httpx.Response(200, content=content)), suspect.identity), n)


def test_deep_nesting_is_a_suspect_error_not_a_crash(suspect):
    for deep in (b"[" * 100000 + b"]" * 100000, b'{"outputs": ' + b"[" * 100000 + b"]" * 100000 + b"}",
                 b'{"outputs": [{"name": "l", "shape": [2], "data": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}]}"):
        with pytest.raises(ModelproofError):
            decode(suspect, deep)


def test_fuzzed_answers_raise_only_our_errors(suspect):
    rng = random.Random(0)
    valid = json.dumps({"outputs": [{"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 2]}]}).encode()
    assert decode(suspect, valid).tolist() == [1, 2]
    cases = [json.dumps(random_json(rng), allow_nan=True).encode() for _ in range(400)]
    cases += list(mutations(valid, rng, 300))
    for content in cases:
        try:
            decode(suspect, content)
        except ModelproofError:
            pass


@pytest.fixture(scope="module")
def key(trained_cnn, digits):
    return key_from_model(trained_cnn, digits.test.images[:20], method="blend-fingerprint", params={},
                          null_match_prob=0.1, null_source="0.1 (test)")


def _only_our_errors(fn, cases) -> int:
    accepted = 0
    for raw in cases:
        try:
            fn(raw)
            accepted += 1
        except ModelproofError:
            pass
    return accepted


def test_fuzzed_key_files_raise_only_our_errors(key, tmp_path):
    rng = random.Random(1)
    plain = _to_safetensors(key)
    _only_our_errors(lambda raw: key_from_bytes(raw, "fuzz"), mutations(plain, rng, 300))
    path = tmp_path / "k.mpkey"
    save_key(key, path, "pw")
    blob = path.read_bytes()
    header_edits = []
    for log2_n, r, p in ((20, 8, 1), (20, 1, 1), (30, 255, 255), (0, 0, 0), (16, 1, 4)):
        header_edits.append(blob[:9] + struct.pack("BBB", log2_n, r, p) + blob[12:])
    header_edits += [blob[:40], blob[:20], b"MPKEYENC", blob[:50] + b"\x00" + blob[51:]]
    for i, raw in enumerate(header_edits):
        (tmp_path / f"e{i}.mpkey").write_bytes(raw)
    assert _only_our_errors(lambda i: load_key(tmp_path / f"e{i}.mpkey", "pw"), range(len(header_edits))) == 0
    assert encrypt_bytes(b"", "pw")  # the container itself still works


def test_fuzzed_reports_and_commitments_raise_only_our_errors(key, trained_cnn, tmp_path):
    rng = random.Random(2)
    report = write_report(verify(key, TorchSuspect(trained_cnn)), tmp_path / "r.json")
    write_commitment(key, tmp_path / "c.json")
    commitment = tmp_path / "c.json"
    for reader, source in ((check_report, report), (read_commitment, commitment)):
        raw = source.read_bytes()
        target = tmp_path / "fuzzed.json"
        cases = list(mutations(raw, rng, 150)) + [json.dumps(random_json(rng)).encode() for _ in range(100)]

        def read(content, reader=reader, target=target):
            target.write_bytes(content)
            return reader(target)

        _only_our_errors(read, cases)
