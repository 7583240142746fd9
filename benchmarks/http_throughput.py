"""HTTP verification throughput: key queries per second through HttpSuspect against `modelproof serve`
on 127.0.0.1, next to the same model in-process through TorchSuspect, for a 1,000-input key.

Usage: python benchmarks/http_throughput.py [--key-size 1000] [--server thread|process|both]
       [--wire json|binary|both] [--rounds 5] [--threads 1] [--concurrency 1 2] [--cpu] [--profile]

Trains the Keras-style CNN on the bundled digits (8x8), serves it with uvicorn (in a background thread
of this process, and/or as a separate `modelproof serve` process, which does not share this process's
GIL), and asks the key through QueriedSuspect (as `verify` does: chunks of 256 inputs, each sent as requests of
the batch size, ``--concurrency`` of them in flight at once) with batch sizes 1 and 64, once without
and once with the fsynced query log, each over plain JSON and over the binary tensor data extension
(``--wire``). Each row gives medians over ``--rounds`` rounds, each round one pass of the key in-process
and one over HTTP, back to back. Everything is measured in one run.
torch runs single-threaded by default (--threads): the model is tiny, and on a shared CPU torch's
intra-op threads spin against each other (batch-1 inference and training then slow down 10-100x).
``--cpu`` adds the CPU time per request of the client and of the `modelproof serve` child (Linux),
which a shared machine's load disturbs far less than the wall clock. ``--profile`` adds where the time
of one request goes: each step of the JSON path timed on its own (client encoding, server decoding, the
model, server encoding, client decoding) against the measured time per request; the rest is HTTP and
the ASGI stack (httpx, uvicorn, FastAPI).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import json

import httpx
import numpy as np
import torch

from modelproof.data.splits import load_splits
from modelproof.models.modelfile import save_model
from modelproof.serving.server import ServedModel, create_app
from modelproof.suspects.http.client import HttpSuspect
from modelproof.suspects.queried import QueriedSuspect
from modelproof.suspects.local import TorchSuspect
from modelproof.models.training import TrainConfig, evaluate, train_new

BATCH_SIZES = (1, 64)
CHILDREN: dict[str, int] = {}  # base URL -> pid of the `modelproof serve` child answering there


@contextmanager
def thread_server(model_path: Path) -> Iterator[str]:
    """`modelproof serve`'s app under uvicorn in a background thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # proto TCP -> asyncio sets TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(model_path), log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def process_server(model_path: Path) -> Iterator[str]:
    """`modelproof serve MODEL` as a child process; yields the base URL once it is ready."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", "from modelproof.cli import main; main()", "serve",
                             str(model_path), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("modelproof serve did not start")
            time.sleep(0.1)
        CHILDREN[url] = proc.pid
        yield url
    finally:
        CHILDREN.pop(url, None)
        proc.terminate()
        proc.wait(10)


def one_pass(suspect, key: torch.Tensor, batch: int, log_dir: Path | None) -> tuple[float, torch.Tensor]:
    """Key queries per second of one pass of the key through a fresh QueriedSuspect (and log), and its answers."""
    log = None if log_dir is None else log_dir / f"log-{time.perf_counter_ns()}.jsonl"
    queried = QueriedSuspect(suspect, log_path=log)  # chunks of 256 inputs, as verify asks a fixed-size key
    start = time.perf_counter()
    labels = queried.predict(key)
    seconds = time.perf_counter() - start
    assert queried.queries == len(key)
    return len(key) / seconds, labels


def measure(url: str, model: torch.nn.Module, key: torch.Tensor, log_dir: Path | None, binary: bool,
            rounds: int, concurrency: int) -> list[tuple[int, float, float, float]]:
    """(batch size, in-process queries/s, HTTP queries/s, HTTP / in-process) for each batch size.

    Each of ``rounds`` rounds is one pass of the key in-process and one over HTTP, back to back (in turns
    which goes first), so that the load of a shared machine (which comes in bursts of seconds) hits both alike; the rates are the
    medians over the rounds, the ratio the median of the rounds' ratios."""
    rows = []
    for batch in BATCH_SIZES:
        local = TorchSuspect(model, batch_size=batch)
        remote = HttpSuspect(url, model_name="cnn", batch_size=batch, num_classes=10, input_shape=(1, 8, 8),
                             binary=binary, concurrency=concurrency)
        warm = torch.rand((batch, *key.shape[1:]), generator=torch.Generator().manual_seed(99))
        local.predict(warm)
        remote.predict(warm)
        here, there = [], []
        for i in range(rounds):  # every other round HTTP goes first: neither side always meets the disk's backlog
            if i % 2:
                rate_there, got = one_pass(remote, key, batch, log_dir)
                rate_here, want = one_pass(local, key, batch, log_dir)
            else:
                rate_here, want = one_pass(local, key, batch, log_dir)
                rate_there, got = one_pass(remote, key, batch, log_dir)
            here.append(rate_here)
            there.append(rate_there)
            if not torch.equal(want, got):
                raise AssertionError("HTTP answers differ from in-process answers")
        remote.close()
        ratio = statistics.median(r / h for h, r in zip(here, there))
        rows.append((batch, statistics.median(here), statistics.median(there), ratio))
    return rows


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_costs(url: str, model: torch.nn.Module, key: torch.Tensor, wires: list[str]) -> None:
    """CPU milliseconds per batch: in-process, and the HTTP client's and the `serve` child's per request.

    CPU time is what a shared machine's load disturbs least; in-process / (client + server) is the ratio
    the wall clock would show on idle cores if nothing overlapped (the client waits for each answer)."""
    print(f"\n{'wire':<7} {'batch':>5} {'in-process ms':>14} {'client ms':>10} {'server ms':>10} "
          f"{'in-process / (client + server)':>31}   (CPU ms per batch of queries, no query log)")
    for wire in wires:
        for batch in BATCH_SIZES:
            x, repeat = key[:batch], 400 if batch == 1 else 200
            local = TorchSuspect(model, batch_size=batch)
            local.predict(x)
            start = time.process_time()
            for _ in range(repeat):
                local.predict(x)
            here = (time.process_time() - start) / repeat
            with HttpSuspect(url, model_name="cnn", batch_size=batch, num_classes=10, input_shape=(1, 8, 8),
                             binary=wire == "binary") as suspect:
                suspect.predict(x)
                start, served = time.process_time(), _cpu_seconds(CHILDREN[url])
                for _ in range(repeat):
                    suspect.predict(x)
                client = (time.process_time() - start) / repeat
                server = (_cpu_seconds(CHILDREN[url]) - served) / repeat
            print(f"{wire:<7} {batch:>5} {1000 * here:>14.2f} {1000 * client:>10.2f} {1000 * server:>10.2f} "
                  f"{here / (client + server):>30.2f}x")


def _seconds(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def profile(model_path: Path, key: torch.Tensor, url: str) -> None:
    """Milliseconds per request of each step of the JSON path, against the measured HTTP time per request."""
    served = ServedModel(model_path)
    print(f"\n{'batch':>5} {'request ms':>10} {'client enc':>10} {'server dec':>10} {'model':>8} {'server enc':>10} "
          f"{'client dec':>10} {'HTTP+ASGI':>10}   (ms per request)")
    for batch in BATCH_SIZES:
        suspect = HttpSuspect(url, model_name="cnn", batch_size=batch, num_classes=10, input_shape=(1, 8, 8))
        x = key[:batch]
        arr = suspect.encode(x)
        body = suspect.codec.body(arr, "FP32")[0]
        logits = served.logits(arr)
        reply = json.dumps({"outputs": [{"name": "logits", "datatype": "FP32", "shape": list(logits.shape),
                                         "data": logits.reshape(-1).tolist()}]}).encode()
        repeat = 400 if batch == 1 else 100
        steps = [_seconds(lambda: suspect.codec.body(suspect.encode(x), "FP32"), repeat),
                 _seconds(lambda: np.asarray(json.loads(body)["inputs"][0]["data"]).astype(np.float32), repeat),
                 _seconds(lambda: served.logits(arr), repeat),
                 _seconds(lambda: json.dumps({"outputs": [{"data": served.logits(arr).reshape(-1).tolist()}]}), repeat)
                 - _seconds(lambda: served.logits(arr), repeat),
                 _seconds(lambda: suspect._labels(suspect.codec.answer(json.loads(reply), "x"), batch), repeat)]
        total = _seconds(lambda: suspect.predict(x), repeat)
        suspect.close()
        ms = [1000 * v for v in steps]
        print(f"{batch:>5} {1000 * total:>10.2f} " + " ".join(f"{m:>10.2f}" if i != 2 else f"{m:>8.2f}" for i, m in enumerate(ms))
              + f" {1000 * total - sum(ms):>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--key-size", type=int, default=1000)
    parser.add_argument("--server", choices=("thread", "process", "both"), default="both")
    parser.add_argument("--wire", choices=("json", "binary", "both"), default="both",
                        help="JSON bodies, the binary tensor data extension, or both")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per row; the table gives their medians")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads here and in the served child (0: torch's default)")
    parser.add_argument("--profile", action="store_true", help="also time each step of one request (thread server)")
    parser.add_argument("--cpu", action="store_true", help="also CPU time per request, client and server (process server)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2],
                        help="HTTP requests in flight (HttpSuspect's concurrency; verify's default is 2)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the `modelproof serve` child process
    splits = load_splits("digits", seed=0)
    model, report = train_new("cnn", splits.owner, TrainConfig(epochs=10, batch_size=32, lr=0.002), seed=0)
    key = torch.rand((args.key_size, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads here and OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')} in the served child, {os.cpu_count()} CPUs; cnn on digits 8x8 "
          f"(test accuracy {evaluate(model, splits.test):.3f}, trained in {report.seconds:.1f} s); key of {len(key)} inputs")
    servers = {"thread": thread_server, "process": process_server}
    chosen = list(servers) if args.server == "both" else [args.server]
    wires = ["json", "binary"] if args.wire == "both" else [args.wire]
    print(f"{'server':<8} {'wire':<7} {'query log':<10} {'in flight':>9} {'batch':>5} {'in-process q/s':>15} "
          f"{'HTTP q/s':>10} {'HTTP / in-process':>18}")
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(model, Path(tmp) / "cnn.safetensors")
        for kind in chosen:
            with servers[kind](path) as url:
                for log_dir in (None, Path(tmp)):
                    for wire in wires:
                        for flight in args.concurrency:
                            for batch, local, remote, ratio in measure(url, model, key, log_dir, wire == "binary",
                                                                       args.rounds, flight):
                                print(f"{kind:<8} {wire:<7} {'fsynced' if log_dir else 'off':<10} {flight:>9} "
                                      f"{batch:>5} {local:>15,.0f} {remote:>10,.0f} {ratio:>17.2f}x", flush=True)
                if args.cpu and kind == "process":
                    cpu_costs(url, model, key, wires)
        if args.profile:
            with thread_server(path) as url:
                profile(path, key, url)
    print("HTTP answers equal the in-process answers for every run.")


if __name__ == "__main__":
    main()
