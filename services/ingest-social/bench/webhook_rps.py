"""Benchmark: webhook requests per second, ingest-social versus a bare FastAPI endpoint.

Both sides run the same way: one process, uvicorn through ``switchboard_common.http``
(the same server configuration), on 127.0.0.1. The system is ``python -m
switchboard_ingest_social`` publishing to real Kafka (``acks=all``) and answering 200
only after the acknowledgement; the baseline is a FastAPI app whose POST
``/webhooks/meta`` reads the body and answers 200 without verifying or publishing.
The load is the same for both, in the same run: ``--concurrency`` keep-alive
connections, each posting signed WhatsApp text webhooks (a distinct message each) back
to back for ``--duration`` seconds, from a minimal asyncio HTTP/1.1 client (cheaper
than a general client, so the client is not what is measured).

    uv run python services/ingest-social/bench/webhook_rps.py --duration 20 --json out.json

Writes ``{"case", "unit", "system", "baseline", "ratio", ...}`` with p50/p99 latency
of both sides. Topics are created behind a unique prefix and deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from switchboard_common.http import http_server
from switchboard_common.topics import create_topics, delete_topics
from switchboard_devkit.running.inprocess import free_port
from switchboard_devkit.running.processes import cpu_seconds
from switchboard_devtools.testing.social import encode, load_sample, signed_headers

DEV_META_SECRET = "dev-meta-app-secret"  # noqa: S105 - the service's SWITCHBOARD_ENV=dev default
REPO = Path(__file__).resolve().parents[3]


# --------------------------------------------------------------------------- the bare side


def serve_bare(port: int) -> None:
    """The baseline: FastAPI, one POST route, 200 without publishing (same server)."""
    app = FastAPI()

    @app.post("/webhooks/meta")
    async def webhook(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"status": "accepted"})

    @app.get("/readyz")
    async def ready() -> JSONResponse:
        return JSONResponse({"status": "ready"})

    server = http_server(app, host="127.0.0.1", port=port)
    gc.freeze()  # as the service's __main__ does: served the same way
    asyncio.run(server.serve())


# --------------------------------------------------------------------------- load


def _requests(count: int) -> list[bytes]:
    """Signed WhatsApp text webhooks, each with its own message id, as raw HTTP/1.1."""
    sample = load_sample("whatsapp_text")
    message = sample["entry"][0]["changes"][0]["value"]["messages"][0]
    out = []
    for _ in range(count):
        message["id"] = f"wamid.bench{uuid.uuid4().hex}"
        body = encode(sample)
        headers = signed_headers("meta", body, DEV_META_SECRET)
        head = (
            "POST /webhooks/meta HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-Hub-Signature-256: {headers['X-Hub-Signature-256']}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _connection(
    port: int, requests: list[bytes], offset: int, until: float, latencies: list[float]
) -> tuple[int, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ok = failed = 0
    index = offset
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(requests[index % len(requests)])
            index += 7
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status_line.split(b" ")[1] == b"200":
                ok += 1
            else:
                failed += 1
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return ok, failed


async def _load(
    port: int, requests: list[bytes], concurrency: int, duration: float
) -> dict[str, Any]:
    # Warm-up (connections, caches, Kafka metadata), not measured.
    warmup = await asyncio.gather(
        *(_connection(port, requests, i, time.perf_counter() + 1.0, []) for i in range(concurrency))
    )
    latencies: list[float] = []
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            _connection(port, requests, i * 31, started + duration, latencies)
            for i in range(concurrency)
        )
    )
    elapsed = time.perf_counter() - started
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "rps": ok / elapsed,
        "ok": ok,
        "failed": failed,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "warmup": sum(r[0] + r[1] for r in warmup),
    }


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    log = Path(os.devnull).open("wb")  # noqa: SIM115 - closed below, after the process
    # Our own interpreter running our own module or this script: no untrusted input.
    process = subprocess.Popen(  # noqa: S603
        args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{args} exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{args} not ready in 60 s")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def _measure(
    process: subprocess.Popen[bytes], port: int, requests: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    """Load one server and report its throughput, latency and CPU per request."""
    cpu_before = cpu_seconds(process.pid)
    result = asyncio.run(_load(port, requests, args.concurrency, args.duration))
    cpu = cpu_seconds(process.pid) - cpu_before
    # CPU per request served (warm-up included in both counts): what the server costs.
    total = result["ok"] + result["failed"] + result["warmup"]
    result["cpu_ms_per_request"] = cpu * 1000 / total if total else 0.0
    return result


def _published(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('switchboard_events_published_total{topic="support.inbound.v1"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per side")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    requests = _requests(4000)
    env = {
        **os.environ,
        "SWITCHBOARD_ENV": "dev",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
        "SWITCHBOARD_LOG_FORMAT": "json",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SWITCHBOARD_TOPIC_PREFIX": prefix,
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("META_APP_SECRET", "META_APP_SECRET_FILE", "INGEST_SOCIAL_ACCOUNTS_FILE"):
        env.pop(name, None)
    asyncio.run(create_topics(bootstrap, prefix=prefix))
    try:
        bare_port = free_port()
        bare = [sys.executable, __file__, "--serve-bare", str(bare_port)]
        with _process(bare, env, bare_port) as process:
            baseline = _measure(process, bare_port, requests, args)
        system_port = free_port()
        system_env = {**env, "INGEST_SOCIAL_HTTP_PORT": str(system_port)}
        service = [sys.executable, "-m", "switchboard_ingest_social"]
        with _process(service, system_env, system_port) as process:
            system = _measure(process, system_port, requests, args)
            published = _published(system_port)
    finally:
        asyncio.run(delete_topics(bootstrap, prefix=prefix))
    result = {
        "case": "webhook_rps",
        "unit": "requests/s",
        "system": round(system["rps"], 1),
        "baseline": round(baseline["rps"], 1),
        "ratio": round(system["rps"] / baseline["rps"], 3) if baseline["rps"] else None,
        "system_p50_ms": round(system["p50_ms"], 2),
        "system_p99_ms": round(system["p99_ms"], 2),
        "baseline_p50_ms": round(baseline["p50_ms"], 2),
        "baseline_p99_ms": round(baseline["p99_ms"], 2),
        "system_cpu_ms_per_request": round(system["cpu_ms_per_request"], 3),
        "baseline_cpu_ms_per_request": round(baseline["cpu_ms_per_request"], 3),
        "system_errors": system["failed"],
        "baseline_errors": baseline["failed"],
        "messages_published": published,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "payload": "WhatsApp text webhook, 1 message, X-Hub-Signature-256 signed",
    }
    text = json.dumps(result, indent=2)
    print(text)  # noqa: T201 - a command-line benchmark reports on stdout
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
