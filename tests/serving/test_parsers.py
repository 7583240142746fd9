"""The parser pool for big bodies: float32 arrays back, bad JSON as ValueError / TooDeep, a dead worker replaced."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelproof.serving.parsers import ParserPool, loads_arrays
from modelproof.util.jsonsafe import TooDeep


@pytest.fixture(scope="module")
def pool():
    return ParserPool(workers=1)


def test_a_body_comes_back_with_float32_arrays_and_the_holder_emptied(pool):
    values = np.random.default_rng(0).random(3 * 64).round(6)
    raw = bytearray(json.dumps({"inputs": [{"name": "input", "shape": [3, 64], "data": values.tolist()}]}).encode())
    holder = [raw]
    del raw
    body = pool.parse(holder)
    assert holder == []  # the caller keeps no reference while the worker parses
    data = body["inputs"][0]["data"]
    assert data.dtype == np.float32 and np.array_equal(data, values.astype(np.float32))


def test_bad_json_and_deep_nesting_are_value_errors(pool):
    with pytest.raises(ValueError, match="line 1"):
        pool.parse([b'{"inputs": [1, 2'])
    with pytest.raises(TooDeep):
        pool.parse([b"[" * 100000 + b"]" * 100000])
    assert pool.parse([b'{"ok": true}']) == {"ok": True}  # the worker lives on


def test_a_dead_worker_fails_its_request_and_is_replaced(pool):
    pool.parse([b"{}"])
    process, _ = pool._free.queue[0]
    process.kill()
    process.join(5)
    with pytest.raises(RuntimeError, match="died"):
        pool.parse([b"{}"])
    assert pool.parse([b'{"a": 1}']) == {"a": 1}


def test_integers_stay_exact():
    small = loads_arrays(b'{"inputs": [{"data": [0, 255, 7]}]}', dtype="float32")["inputs"][0]["data"]
    big = loads_arrays(b'{"inputs": [{"data": [0, 16777217]}]}', dtype="float32")["inputs"][0]["data"]
    assert small.dtype == np.float32 and small.tolist() == [0, 255, 7]
    assert big.dtype == np.int64 and big.tolist() == [0, 16777217]  # float32 would round 2**24 + 1
