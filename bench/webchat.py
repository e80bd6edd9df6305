"""Benchmark: web chat messages accepted per second, the web chat versus a bare echo.

Both sides are a process on 127.0.0.1 serving the widget's socket (``/chat/socket``)
with FastAPI on uvicorn through ``switchboard_common.http`` (one process each), driven
by the same clients in the same run. The system is ``python -m switchboard_webchat`` in
a devkit ``Stack`` (its own topics and database on the real Kafka and MongoDB-wire
server) acknowledging a message only once Kafka has it; the baseline is
``bench/webchat_echo.py``, which acknowledges at once. ``--clients`` visitors connect at
the same time (Origin: the web chat's own page), each says hello, waits for the welcome,
then sends ``--messages`` messages one after another, waiting for each ack. Bounded:
``clients x messages`` messages per side, and ``--timeout`` seconds.

    uv run python -m bench.webchat --clients 20 --messages 200 --json out.json
    uv run python -m bench.webchat --baseline-only   # the echo side alone

Writes ``{"case", "unit", "system", "baseline", "ratio", ...}``: accepted messages per
second, ack latency p50/p99, server CPU per message and the client's own CPU share (near
1.0: the client, not the server, is the limit), and refusals by error code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.typing import Origin

from switchboard_devkit.running.inprocess import free_port
from switchboard_devkit.running.processes import (
    ServiceProcess,
    ServiceSpec,
    cpu_seconds,
    peak_rss_mb,
)
from switchboard_devkit.running.stack import running_stack

TEXT = "Hello, my order 10422 has not arrived yet. Could you tell me where it is?"


async def visitor(
    base: str,
    messages: int,
    connected: asyncio.Barrier,
    latencies: list[float],
    refusals: Counter[str],
) -> int:
    """One visitor: hello and welcome; once every visitor is connected, each message
    after the previous one's ack. Returns how many were accepted."""
    url = base.replace("http://", "ws://", 1) + "/chat/socket"
    accepted = 0
    async with connect(url, origin=Origin(base), max_queue=None) as socket:
        hello = {"type": "hello", "token": None, "after": 0, "identity": None, "name": None}
        await socket.send(json.dumps(hello))
        while json.loads(await socket.recv()).get("type") != "welcome":
            pass  # the mailbox's messages come after the welcome; a new visitor has none
        await connected.wait()
        for _ in range(messages):
            client_id = uuid.uuid4().hex
            started = time.perf_counter()
            await socket.send(json.dumps({"type": "send", "client_id": client_id, "text": TEXT}))
            while True:
                frame = json.loads(await socket.recv())
                if frame.get("type") == "error":
                    refusals[str(frame.get("code"))] += 1
                    break
                if frame.get("type") == "ack" and frame.get("client_id") == client_id:
                    latencies.append(time.perf_counter() - started)
                    accepted += 1
                    break
    return accepted


async def load(base: str, clients: int, messages: int, timeout: float) -> dict[str, Any]:
    """Every visitor connects; the clock runs from the moment all are connected until
    the last ack (connecting is not measured)."""
    latencies: list[float] = []
    refusals: Counter[str] = Counter()
    connected = asyncio.Barrier(clients + 1)  # the visitors, and this task to start the clock
    async with asyncio.timeout(timeout):
        visitors = [
            asyncio.create_task(visitor(base, messages, connected, latencies, refusals))
            for _ in range(clients)
        ]
        await connected.wait()
        started, cpu_before = time.perf_counter(), time.process_time()
        accepted = await asyncio.gather(*visitors)
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "accepted_per_s": sum(accepted) / elapsed,
        "accepted": sum(accepted),
        "refused": dict(refusals),
        "seconds": elapsed,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "client_cpu_share": (time.process_time() - cpu_before) / elapsed,
    }


def measure(process: ServiceProcess, args: argparse.Namespace) -> dict[str, Any]:
    """Warm up (one visitor, not counted), then load one server; its CPU per message."""
    assert process.process is not None
    asyncio.run(load(process.base_url, 1, 5, args.timeout))
    cpu_before = cpu_seconds(process.process.pid)
    result = asyncio.run(load(process.base_url, args.clients, args.messages, args.timeout))
    cpu = cpu_seconds(process.process.pid) - cpu_before
    result["server_cpu_ms_per_message"] = cpu * 1000 / max(result["accepted"], 1)
    result["rss_mb"] = peak_rss_mb(process.process.pid)
    return result


def baseline(args: argparse.Namespace) -> dict[str, Any]:
    spec = ServiceSpec("webchat-echo", "bench.webchat_echo", "WEBCHAT_HTTP_PORT", free_port())
    echo = ServiceProcess(spec, {**os.environ, "WEBCHAT_HTTP_PORT": str(spec.http_port)})
    echo.start()
    try:
        echo.wait_ready(timeout=60)
        return measure(echo, args)
    finally:
        echo.stop()


def system(args: argparse.Namespace) -> dict[str, Any]:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    mongodb = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017/")
    extra = {"SWITCHBOARD_LOG_LEVEL": "WARNING", **dict(v.split("=", 1) for v in args.env)}
    with running_stack(kafka, mongodb, "webchat", extra_env=extra) as stack:
        try:
            return measure(stack.services["webchat"], args)
        finally:
            stack.stop()
            stack.remove_data()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20, help="visitors at the same time")
    parser.add_argument("--messages", type=int, default=200, help="messages per visitor")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per side, at most")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the web chat (e.g. its per-visitor rate limit)",
    )
    parser.add_argument("--baseline-only", action="store_true", help="measure the echo alone")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()

    bare = baseline(args)
    measured = None if args.baseline_only else system(args)
    result: dict[str, Any] = {
        "case": "webchat",
        "unit": "messages/s",
        "system": round(measured["accepted_per_s"], 1) if measured else None,
        "baseline": round(bare["accepted_per_s"], 1),
        "ratio": (
            round(measured["accepted_per_s"] / bare["accepted_per_s"], 3)
            if measured and bare["accepted_per_s"]
            else None
        ),
        "clients": args.clients,
        "messages_per_client": args.messages,
        "detail": {"webchat": measured, "echo": bare},
        "peak_rss_mb": {
            "webchat": measured["rss_mb"] if measured else None,
            "webchat-echo": bare["rss_mb"],
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
