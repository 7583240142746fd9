"""Key files: round trip, digest, every validation error, encryption at rest, no pickles."""

import dataclasses
import json
import pickle

import pytest
import torch
from safetensors.torch import save

from modelproof.util.errors import KeyFileError
from modelproof.keys.key import FORMAT, FORMAT_VERSION, OwnershipKey, canonical_json, key_from_model
from modelproof.keys.container import META_KEY, is_encrypted, load_key, save_key
from modelproof.models.modelfile import weights_digest
from modelproof.models import build_model
from modelproof.models.training import predict

DIGEST = "ab" * 32


def make_key(n: int = 12, **changes) -> OwnershipKey:
    gen = torch.Generator().manual_seed(0)
    fields = dict(inputs=torch.rand(n, 1, 8, 8, generator=gen), labels=torch.randint(0, 10, (n,), generator=gen),
                  method="test", params={"eps": 0.25, "nested": {"a": [1, 2]}}, num_classes=10,
                  input_shape=(1, 8, 8), null_match_prob=0.5, null_source="1/2: the paper's null model",
                  model_digest=DIGEST, created="2024-01-02T03:04:05Z")
    fields.update(changes)
    return OwnershipKey(**fields)


def same(a: OwnershipKey, b: OwnershipKey) -> bool:
    return (torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
            and a.fields_json() == b.fields_json() and a.digest() == b.digest())


def test_round_trip_plain(tmp_path):
    key = make_key()
    path = save_key(key, tmp_path / "k.safetensors")
    loaded = load_key(path)
    assert same(key, loaded) and not is_encrypted(path)
    assert loaded.input_shape == (1, 8, 8) and isinstance(loaded.null_match_prob, float)


def test_round_trip_encrypted(tmp_path):
    key = make_key()
    path = save_key(key, tmp_path / "k.key", passphrase="correct horse")
    raw = path.read_bytes()
    assert is_encrypted(path) and key.method.encode() not in raw and b"safetensors" not in raw
    assert same(key, load_key(path, "correct horse"))


def test_digest_covers_content_not_creation_time():
    key = make_key()
    assert key.digest() == make_key(created="2030-01-01T00:00:00Z").digest()
    x = key.inputs.clone()
    x[0, 0, 0, 0] = 1.0 - x[0, 0, 0, 0]
    y = key.labels.clone()
    y[0] = (y[0] + 1) % 10
    for change in (dict(inputs=x), dict(labels=y), dict(method="other"), dict(params={"eps": 0.3}),
                   dict(num_classes=11), dict(null_match_prob=0.25), dict(null_source="calibrated"),
                   dict(model_digest="cd" * 32)):
        assert make_key(**change).digest() != key.digest(), change


def test_key_copies_its_tensors():
    x = torch.rand(3, 1, 8, 8)
    key = make_key(3, inputs=x, labels=torch.zeros(3, dtype=torch.int64))
    before = key.digest()
    x.zero_()
    assert key.digest() == before


def test_key_from_model():
    model = build_model("cnn", 10, (1, 8, 8), seed=0)
    inputs = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    key = key_from_model(model, inputs, method="fingerprint", null_match_prob=0.1, null_source="guess")
    assert torch.equal(key.labels, predict(model, inputs))
    assert key.model_digest == weights_digest(model) and key.num_classes == 10
    assert "inputs" not in key.info() and "labels" not in key.info() and key.info()["key_size"] == 20


# One bad field at a time, through the constructor ...
BAD_FIELDS = [
    ("inputs", dict(inputs=torch.rand(12, 1, 8, 8, dtype=torch.float64))),
    ("inputs", dict(inputs=torch.rand(12, 8, 8))),
    ("inputs", dict(inputs=torch.rand(0, 1, 8, 8), labels=torch.zeros(0, dtype=torch.int64))),
    ("inputs", dict(inputs=torch.rand(12, 1, 8, 8) * 2)),
    ("inputs", dict(inputs=torch.rand(12, 1, 8, 8) - 0.5)),
    ("inputs", dict(inputs=torch.full((12, 1, 8, 8), float("nan")))),
    ("labels", dict(labels=torch.zeros(12, dtype=torch.int32))),
    ("labels", dict(labels=torch.zeros(11, dtype=torch.int64))),
    ("labels", dict(labels=torch.full((12,), 10, dtype=torch.int64))),
    ("labels", dict(labels=torch.full((12,), -1, dtype=torch.int64))),
    ("method", dict(method="")),
    ("method", dict(method=3)),
    ("params", dict(params=[1, 2])),
    ("params", dict(params={"x": object()})),
    ("params", dict(params={"x": float("nan")})),
    ("num_classes", dict(num_classes=1)),
    ("num_classes", dict(num_classes="10")),
    ("num_classes", dict(num_classes=True)),
    ("input_shape", dict(input_shape=(1, 8))),
    ("input_shape", dict(input_shape=(3, 8, 8))),
    ("input_shape", dict(input_shape=(1, 8, -8))),
    ("null_match_prob", dict(null_match_prob=1.5)),
    ("null_match_prob", dict(null_match_prob=-0.1)),
    ("null_match_prob", dict(null_match_prob=float("nan"))),
    ("null_match_prob", dict(null_match_prob="0.5")),
    ("null_source", dict(null_source="")),
    ("model_digest", dict(model_digest="abc")),
    ("model_digest", dict(model_digest="AB" * 32)),
    ("created", dict(created="yesterday")),
]


@pytest.mark.parametrize("field,change", BAD_FIELDS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_FIELDS)])
def test_constructor_names_the_bad_field(field, change):
    with pytest.raises(KeyFileError, match=f"'{field}'"):
        make_key(**change)


# ... and through a tampered file (metadata written by hand).
def write_raw(path, tensors, meta):
    path.write_bytes(save(tensors, metadata=meta))
    return path


def good_parts(key=None):
    key = key or make_key()
    meta = dict(key.fields_json(), format=FORMAT, format_version=FORMAT_VERSION, digest=key.digest())
    return {"inputs": key.inputs, "labels": key.labels}, meta


FILE_TAMPERS = [
    ("null_match_prob", lambda t, m: m.update(null_match_prob=1.5)),
    ("null_match_prob", lambda t, m: m.update(null_match_prob=None)),
    ("labels", lambda t, m: t.update(labels=torch.full((12,), 99, dtype=torch.int64))),
    ("labels", lambda t, m: t.update(labels=t["labels"].to(torch.int32))),
    ("inputs", lambda t, m: t.update(inputs=t["inputs"] + 1.0)),
    ("inputs", lambda t, m: t.update(inputs=t["inputs"].half())),
    ("input_shape", lambda t, m: m.update(input_shape=[1, 4, 16])),
    ("num_classes", lambda t, m: m.update(num_classes=1)),
    ("method", lambda t, m: m.update(method="")),
    ("params", lambda t, m: m.update(params="eps=3")),
    ("model_digest", lambda t, m: m.update(model_digest="not-a-digest")),
    ("created", lambda t, m: m.update(created="not a time")),
    ("null_source", lambda t, m: m.update(null_source="")),
    ("method", lambda t, m: m.pop("method")),
    ("null_match_prob", lambda t, m: m.pop("null_match_prob")),
    ("null_source", lambda t, m: m.pop("null_source")),
    ("model_digest", lambda t, m: m.pop("model_digest")),
    ("digest", lambda t, m: m.pop("digest")),
    ("digest", lambda t, m: m.update(null_source="edited after saving")),
    ("digest", lambda t, m: t["labels"].__setitem__(0, (int(t["labels"][0]) + 1) % 10)),
    ("format", lambda t, m: m.update(format="something-else")),
    ("version", lambda t, m: m.update(format_version=99)),
    ("tensors", lambda t, m: t.update(extra=torch.zeros(1))),
    ("tensors", lambda t, m: t.pop("labels")),
]


@pytest.mark.parametrize("what,tamper", FILE_TAMPERS, ids=[f"{w}-{i}" for i, (w, _) in enumerate(FILE_TAMPERS)])
def test_load_names_the_tampered_field(tmp_path, what, tamper):
    tensors, meta = good_parts()
    tensors = {k: v.clone() for k, v in tensors.items()}
    tamper(tensors, meta)
    path = write_raw(tmp_path / "k.safetensors", tensors, {META_KEY: json.dumps(meta)})
    with pytest.raises(KeyFileError, match=what) as info:
        load_key(path)
    assert str(path) in str(info.value)


def test_load_refuses_non_keys(tmp_path):
    with pytest.raises(KeyFileError, match="not found"):
        load_key(tmp_path / "missing.safetensors")
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"inputs": [1, 2]}))
    with pytest.raises(KeyFileError, match="never unpickles"):
        load_key(evil)
    zipped = tmp_path / "zip.pt"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(KeyFileError, match="never unpickles"):
        load_key(zipped)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(KeyFileError, match="safetensors"):
        load_key(junk)
    tensors, _ = good_parts()
    with pytest.raises(KeyFileError, match="metadata"):
        load_key(write_raw(tmp_path / "nometa.safetensors", tensors, {}))
    with pytest.raises(KeyFileError, match="JSON"):
        load_key(write_raw(tmp_path / "badjson.safetensors", tensors, {META_KEY: "{oops"}))
    model_like = write_raw(tmp_path / "model.safetensors", {"w": torch.zeros(2)}, {"modelproof": "{}"})
    with pytest.raises(KeyFileError, match="tensors"):
        load_key(model_like)


def test_canonical_json_is_stable_and_strict():
    assert canonical_json({"b": 1, "a": [1.5, "x"]}) == b'{"a":[1.5,"x"],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("inf")})


def test_wrong_or_missing_passphrase(tmp_path):
    path = save_key(make_key(), tmp_path / "k.key", passphrase="right")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_key(path, "wrong")
    with pytest.raises(KeyFileError, match="encrypted; pass its passphrase"):
        load_key(path)
    with pytest.raises(KeyFileError, match="non-empty"):
        save_key(make_key(), tmp_path / "k2.key", passphrase="")


def test_any_flipped_byte_is_refused(tmp_path):
    path = save_key(make_key(), tmp_path / "k.key", passphrase="pw")
    raw = path.read_bytes()
    gen = torch.Generator().manual_seed(0)
    body = torch.randint(40, len(raw) - 16, (8,), generator=gen).tolist()
    positions = list(range(40)) + body + list(range(len(raw) - 16, len(raw), 5))  # header, ciphertext, GCM tag
    for pos in positions:
        bad = bytearray(raw)
        bad[pos] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(KeyFileError):
            load_key(path, "pw")
    for bad in (raw[:-1], raw + b"\0", raw[:30]):
        path.write_bytes(bad)
        with pytest.raises(KeyFileError):
            load_key(path, "pw")


def test_save_is_atomic_and_replace_keeps_validation(tmp_path):
    key = make_key()
    path = save_key(key, tmp_path / "sub" / "k.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["k.safetensors"]
    changed = dataclasses.replace(key, null_match_prob=0.25)
    assert changed.digest() != key.digest()
    with pytest.raises(KeyFileError, match="null_match_prob"):
        dataclasses.replace(key, null_match_prob=2.0)


def test_model_files_are_readable_keys_are_not(tmp_path):
    """Every output was left 0600 by mkstemp; now only keys and signing keys are owner-only."""
    import os

    from modelproof.keys.signing import generate_signing_key, save_signing_key
    from modelproof.models.modelfile import save_model

    old = os.umask(0o022)
    try:
        model = save_model(build_model("mlp", num_classes=10, input_shape=(1, 8, 8)), tmp_path / "m.safetensors")
        key = save_key(make_key(), tmp_path / "k.mpkey")
        encrypted = save_key(make_key(), tmp_path / "e.mpkey", passphrase="pw")
        private, public = save_signing_key(generate_signing_key(), tmp_path / "owner")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (model, key, encrypted, private, public)}
    assert modes == {model.name: 0o644, key.name: 0o600, encrypted.name: 0o600, private.name: 0o600,
                     public.name: 0o644}
