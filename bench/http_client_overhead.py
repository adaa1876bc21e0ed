#!/usr/bin/env python
"""HTTP client overhead: `HttpDeliveryClient.send` against a bare aiohttp session, one small JSON POST per request.

The target is `connector_pipelines_tests.servers.http_target --fast` in its own process. N requests (env N,
default 20,000) are sent by each case, 64 in flight, on asyncio's own event loop (the one an integration runs on):

- `bare`: one aiohttp session, a worker loop of `session.post(...)` + `read()`: the floor for aiohttp.
- `send`: `HttpDeliveryClient.send(HttpRequest(...))` with its defaults (retries, in-doubt classification,
  bounded body read, stats), `max_concurrency` 64, 64 callers.

Bodies and idempotency keys are built before the timed span; every run does a short untimed warm-up first. The
cases alternate for ROUNDS rounds (default 3) and the fastest run of each is reported. CPU is this process's
(user + system) over the timed span, so `cpu_s/1k` is what one core spends per 1,000 requests.

    .venv/bin/python bench/http_client_overhead.py
    N=5000 .venv/bin/python bench/http_client_overhead.py --profile /tmp/send.prof   # cProfile of the send case

Last line: `RESULT bench=http_client case=send rows=... rows_per_s=... baseline_rows_per_s=... ratio=...`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from connector_pipelines.spec.connections import HttpConnection
from connector_pipelines.transports.http import HttpDeliveryClient, HttpRequest

CONCURRENCY = 64
WARM_UP = 500
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def bodies(n: int) -> list[bytes]:
    encode = json.JSONEncoder(separators=(",", ":")).encode
    return [encode({"id": i, "name": f"Grace Hopper {i}", "email": f"u.{i}@example.test"}).encode() for i in range(n)]


async def bare(base_url: str, prefix: str, payloads: list[bytes]) -> None:
    """A tight aiohttp client: the least any aiohttp client spends per request. Its session is set up as the
    delivery client's is (no cookie jar, one timeout for the session), so the difference is `send`'s own."""
    url = f"{base_url}/{prefix}"
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CONCURRENCY),
        timeout=aiohttp.ClientTimeout(total=30),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    async with session:
        numbers = iter(range(len(payloads)))

        async def worker() -> None:
            for i in numbers:
                headers = {"Content-Type": "application/json", "Idempotency-Key": f"{prefix}-{i}"}
                async with session.post(url, data=payloads[i], headers=headers) as response:
                    await response.read()
                    if response.status >= 300:
                        raise RuntimeError(f"bare: the target answered {response.status}")

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def send(base_url: str, prefix: str, payloads: list[bytes]) -> None:
    """The delivery client, as an integration in single mode calls it."""
    connection = HttpConnection(type="http", base_url=base_url, max_concurrency=CONCURRENCY)
    requests = [
        HttpRequest(method="POST", path=f"/{prefix}", body=body, idempotency_key=f"{prefix}-{i}")
        for i, body in enumerate(payloads)
    ]
    async with HttpDeliveryClient(connection) as client:
        numbers = iter(range(len(requests)))

        async def worker() -> None:
            for i in numbers:
                outcome = await client.send(requests[i])
                if outcome.error is not None or outcome.status is None or outcome.status >= 300:
                    raise RuntimeError(f"send: {outcome.status} {outcome.error}")

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


Case = Callable[[str, str, list[bytes]], Awaitable[None]]


def measure(case: Case, base_url: str, name: str, payloads: list[bytes], profile: Path | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one timed run of `case`, after an untimed warm-up."""
    asyncio.run(case(base_url, f"{name}-warm", payloads[:WARM_UP]))
    profiler = cProfile.Profile() if profile is not None else None
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    asyncio.run(case(base_url, name, payloads))
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", type=Path, help="write a cProfile of the send case to this file")
    args = parser.parse_args()
    n = int(os.environ.get("N", "20000"))
    rounds = int(os.environ.get("ROUNDS", "3"))
    sys.path.insert(0, str(REPOSITORY_ROOT))  # connector_pipelines_tests is checked out, not installed
    from connector_pipelines_tests.servers.http_target import run_in_subprocess

    payloads = bodies(n)
    run_id = f"{os.getpid()}-{int(time.time())}"  # a fresh collection per run: the target keeps what it applied
    runs: dict[str, list[tuple[float, float]]] = {"bare": [], "send": []}
    with run_in_subprocess(fast=True) as target:
        # Alternated rounds, the best of each kept: the machine is shared, and noise only ever adds time.
        for round_ in range(rounds):
            for name, case in (("bare", bare), ("send", send)):
                profile = args.profile if name == "send" and round_ == 0 else None
                runs[name].append(measure(case, target.base_url, f"{name}-{run_id}-{round_}", payloads, profile))
        stats = target.stats()
    (bare_s, bare_cpu), (send_s, send_cpu) = min(runs["bare"]), min(runs["send"])
    duplicates = stats["duplicates"]
    if duplicates:
        raise SystemExit(f"the target applied {duplicates} requests more than once")

    bare_rate, send_rate = n / bare_s, n / send_s
    bare_per_1k, send_per_1k = bare_cpu * 1000 / n, send_cpu * 1000 / n
    ratio = send_rate / bare_rate
    print(f"{'case':<6} {'requests':>9} {'seconds':>8} {'requests/s':>11} {'cpu_s/1k':>9}")
    print(f"{'bare':<6} {n:>9,} {bare_s:>8.2f} {bare_rate:>11,.0f} {bare_per_1k:>9.3f}")
    print(f"{'send':<6} {n:>9,} {send_s:>8.2f} {send_rate:>11,.0f} {send_per_1k:>9.3f}")
    overhead_us = (send_per_1k - bare_per_1k) * 1000
    print(f"send/bare: {ratio:.2f} of the throughput; {overhead_us:+.1f} us of CPU per request on top of aiohttp")
    print(f"RESULT bench=http_client case=bare rows={n} rows_per_s={bare_rate:.0f} cpu_s_per_1k={bare_per_1k:.4f}")
    print(
        f"RESULT bench=http_client case=send rows={n} rows_per_s={send_rate:.0f} baseline_rows_per_s={bare_rate:.0f} "
        f"ratio={ratio:.3f} cpu_s_per_1k={send_per_1k:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
