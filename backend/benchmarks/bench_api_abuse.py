"""The embedded bot's tick pace while its API is sent 10 MB request bodies, against the same
bot left alone, measured in the same run.

`upstox-bot run` trades the simulated market with its API in the same process (as the trader
runs it; the API serves from a thread of its own). For a window of wall time this process
samples GET /health (the ticks the engine has processed, its market time, and how long the
answer took); then, for a window of the same length, it does the same while other
threads send PATCHes that declare and send 10 MB bodies, each thread one body every `pause`
seconds (0 = as fast as it can: a connection flood), with a trade key, with a read key and
without one. The API refuses each with 413 from its headers and closes the connection without
reading the body. Printed: ticks per second in each window and their ratio (the session's tick
pace, alone = 1.00), the p50 and p99 of the /health answer in each, and how many 10 MB bodies
were refused, and last, the market's pace (simulated seconds per wall second: the speed, when
the engine keeps up) with the bodies over its pace alone: 1.00 is no slower. Ticks per second
follow the market's activity, which changes over a session. (Before the body limit, one such
body stalled the engine 1.4 s to 5.5 s.)

Usage: python benchmarks/bench_api_abuse.py [window_seconds] [abusers] [pause_seconds]
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

TEN_MB = 10 * 1024 * 1024
SPEED = 60  # simulated seconds per second: a live-looking pace with ticks every wall second


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "upstox_bot.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _sample(url: str, seconds: float) -> tuple[float, float, list[float]]:
    """Over `seconds`: the market's pace (simulated seconds per wall second, SPEED when the
    engine keeps up), ticks per wall second, and the /health answer times (s)."""
    latencies: list[float] = []
    with httpx.Client(timeout=60) as client:
        first = client.get(f"{url}/health").json()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            asked = time.perf_counter()
            client.get(f"{url}/health")
            latencies.append(time.perf_counter() - asked)
            time.sleep(0.05)
        last = client.get(f"{url}/health").json()
        wall = time.monotonic() - start
    market = datetime.fromisoformat(last["market_time"]) - datetime.fromisoformat(
        first["market_time"]
    )
    return market.total_seconds() / wall, (last["ticks"] - first["ticks"]) / wall, latencies


def _abuse(
    port: int, key: str | None, pause: float, stop: threading.Event, refused: list[int]
) -> None:
    body = b"x" * (1024 * 1024)
    auth = f"X-API-Key: {key}\r\n" if key else ""
    head = (
        "PATCH /api/v1/settings HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {TEN_MB}\r\n\r\n"
    ).encode()
    while not stop.is_set():
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            try:
                sock.sendall(head)
                for _ in range(10):  # the whole 10 MB, as a client that does not wait would
                    sock.sendall(body)
            except OSError:
                pass  # the API answered and closed: the rest of the body was never read
            try:
                answer = sock.recv(4096)
            except OSError:
                answer = b""
            if b" 413 " in answer.split(b"\r\n", 1)[0]:
                refused.append(1)
        stop.wait(pause)


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1] if len(values) > 1 else 0.0


def main() -> None:
    window = float(sys.argv[1]) if len(sys.argv) > 1 else 15.0
    abusers = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "DATA_DIR": str(tmp), "LOG_LEVEL": "WARNING"}
        env.pop("DATABASE_URL", None)
        keys = [
            _cli(env, tmp, "apikey", "create", "--scope", "trade", "--quiet"),
            _cli(env, tmp, "apikey", "create", "--scope", "read", "--quiet"),
            None,
        ]
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        run = ["run", "--speed", str(SPEED), "--seed", "7", "--date", "2026-11-25"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "upstox_bot.cli", *run, "--port", str(port), "--no-live"],
            env=env,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=5).json().get("ticks"):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the bot did not start trading")
                time.sleep(0.2)
            alone_pace, alone, alone_latency = _sample(url, window)
            stop = threading.Event()
            refused: list[int] = []
            threads = [
                threading.Thread(target=_abuse, args=(port, keys[i % 3], pause, stop, refused))
                for i in range(abusers)
            ]
            for thread in threads:
                thread.start()
            abused_pace, abused, abused_latency = _sample(url, window)
            stop.set()
            for thread in threads:
                thread.join()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    every = f"every {pause:g} s" if pause else "back to back"
    print(f"window {window:g} s, speed x{SPEED}, {abusers} clients sending 10 MB bodies {every}")
    for name, pace, ticks, latency in (
        ("alone", alone_pace, alone, alone_latency),
        ("abused", abused_pace, abused, abused_latency),
    ):
        p50, p99 = _quantile(latency, 0.5) * 1000, _quantile(latency, 0.99) * 1000
        print(
            f"{name:7s} market x{pace:5.1f}  {ticks:7.1f} ticks/s  "
            f"/health p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
        )
    print(f"{len(refused)} bodies of 10 MB refused with 413")
    print(f"market pace under 10 MB bodies / alone: {abused_pace / alone_pace:.2f}")


if __name__ == "__main__":
    main()
