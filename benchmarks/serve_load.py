"""`modelproof serve` under load: requests/s and p50/p99 latency at 8 and 32 concurrent clients, batch 1 and
64, each alone and with one huge request in flight, plus the health check's worst latency and the server's
peak memory against its body cap.

Usage: OMP_NUM_THREADS=1 python benchmarks/serve_load.py [--seconds 3] [--big-mb 100]

The server is `modelproof serve` in its own process (a CIFAR-shaped MLP, 3x32x32, untrained: the load
is the server's, not the model's), so its default body cap is the largest batch it accepts (1,024 images, about
76 MB of JSON). "100 MB" runs send, over and over from one more client, a body of --big-mb MB (refused
with 413 while reading once it passes the cap); "max batch" runs send a legal batch of 1,024 images
(about 61 MB of JSON, parsed in the server's worker process and answered): the worst a client may ask. The huge
requests come from another process; the clients are threads of this one with pre-encoded bodies. "p99 added"
is the row's p99 less that of the same clients without the huge request: what it costs the others. On a
machine with few cores the clients and the server compete for them, so the figures are a floor; where the
clients alone saturate the server, p99 is the queue (clients / requests per second), not a stall.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

SHAPE = (3, 32, 32)


def start_server(model: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", "from modelproof.cli import main; main()", "serve", str(model),
                             "--port", str(port), "--name", "m"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("modelproof serve did not start")
        time.sleep(0.2)


def body(batch: int, seed: int = 0) -> bytes:
    x = np.random.default_rng(seed).random((batch, *SHAPE), dtype=np.float32)
    return json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}).encode()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the server's JSON parser workers sit under its forkserver)."""
    out, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def big_body(kind: str, big_mb: int) -> bytes:
    """The huge request: --big-mb MB of JSON numbers (over the cap), or a legal batch of 1,024 images."""
    if kind == "100 MB":
        return b'{"inputs": [{"name": "input", "data": [' + b"0.5, " * (big_mb * 2 ** 20 // 5) + b"0]}]}"
    return body(1024, seed=1)


def hog(url: str, kind: str, big_mb: int, seconds: float, sent) -> None:
    """Send the huge request over and over for ``seconds`` (in its own process: it must not take the clients'
    GIL); ``sent`` counts the requests that got an answer."""
    payload = big_body(kind, big_mb)
    stop = time.monotonic() + seconds
    with httpx.Client(timeout=120, headers={"content-type": "application/json"}) as c:
        while time.monotonic() < stop:
            try:
                c.post(f"{url}/v2/models/m/infer", content=payload)
                sent.value += 1
            except httpx.TransportError:
                pass


def run(url: str, clients: int, payload: bytes, seconds: float, big: tuple[str, int] | None) -> dict:
    sender = None
    if big:
        context = multiprocessing.get_context("spawn")
        sent = context.Value("i", 0)
        sender = context.Process(target=hog, args=(url, *big, seconds + 1.0, sent))
        sender.start()
        time.sleep(1.0)  # the sender has started and its first body is on its way
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    health: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=60, headers={"content-type": "application/json"}) as c:
            while time.monotonic() < stop:
                t = time.monotonic()
                ok = c.post(f"{url}/v2/models/m/infer", content=payload).status_code == 200
                with lock:
                    latencies.append(time.monotonic() - t)
                    errors[0] += not ok

    def checker() -> None:
        with httpx.Client(timeout=60) as c:
            while True:  # at least one check, however late this thread starts
                t = time.monotonic()
                try:
                    ok = c.get(f"{url}/v2/health/live").status_code == 200
                except httpx.HTTPError as exc:  # a failed check counts as an error, its wait as its latency
                    print(f"health check failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                    ok = False
                with lock:
                    health.append(time.monotonic() - t)
                    errors[0] += not ok
                if time.monotonic() >= stop:
                    return
                time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(clients)] + [threading.Thread(target=checker)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if sender is not None:
        sender.join(30)
    lat = np.array(latencies)
    return {"big_sent": sent.value if big else 0, "rps": len(lat) / (time.monotonic() - start), "p50": 1000 * np.percentile(lat, 50),
            "p99": 1000 * np.percentile(lat, 99), "health_max": 1000 * max(health, default=float("nan")),
            "errors": errors[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--big-mb", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from modelproof.models.registry import build_model
    from modelproof.models.modelfile import save_model
    from modelproof.serving.bodies import body_cap

    cap = body_cap(list(SHAPE), 1024)
    with tempfile.TemporaryDirectory() as tmp:
        model = save_model(build_model("mlp", 10, SHAPE, seed=0), Path(tmp) / "cifar-mlp.safetensors")
        proc, url = start_server(model)
        base = peak_rss_mb(proc.pid)  # the idle server (torch and the model loaded)
        try:
            largest = len(big_body("max batch", args.big_mb))
            print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; body cap {cap / 2 ** 20:.1f} MB; big bodies "
                  f"{len(big_body('100 MB', args.big_mb)) / 2 ** 20:.0f} MB (over the cap) and {largest / 2 ** 20:.0f} "
                  "MB (1,024 images), sent over and over by another process")
            print("| clients | batch | big request (answered) | requests/s | p50 ms | p99 ms | p99 added ms "
                  "| health check max ms | errors | server peak MB so far |")
            print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
            for clients in (8, 32):
                for batch in (1, 64):
                    payload = body(batch)
                    alone = None
                    for name in ("none", "100 MB", "max batch"):
                        r = run(url, clients, payload, args.seconds, None if name == "none" else (name, args.big_mb))
                        alone = alone or r
                        label = name if name == "none" else f"{name} ({r['big_sent']})"
                        print(f"| {clients} | {batch} | {label} | {r['rps']:.0f} | {r['p50']:.0f} | {r['p99']:.0f} | "
                              f"{r['p99'] - alone['p99']:+.0f} | {r['health_max']:.0f} | {r['errors']} | "
                              f"{peak_rss_mb(proc.pid):.0f} |", flush=True)
            rss, largest = peak_rss_mb(proc.pid), largest / 2 ** 20
            workers = [peak_rss_mb(p) for p in descendants(proc.pid)]
            print(f"server process: {base:.0f} MB idle, peak {rss:.0f} MB: it grew by {rss - base:.0f} MB = "
                  f"{(rss - base) / largest:.2f}x the largest body sent ({largest:.0f} MB), "
                  f"{(rss - base) / (cap / 2 ** 20):.2f}x the body cap; its helper processes' peaks (forkserver, "
                  f"JSON parsers): {', '.join(f'{w:.0f}' for w in workers) or 'none'} MB")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
