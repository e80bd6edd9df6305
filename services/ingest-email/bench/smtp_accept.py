"""Benchmark: SMTP messages accepted per second with 10 concurrent senders.

Usage: ``uv run python services/ingest-email/bench/smtp_accept.py --duration 20 --json out.json``

Two servers, measured in the same run on the same machine and servers, one after the
other, by the same client:

- system: ``python -m switchboard_ingest_email`` as its own process, against real Kafka
  and the MongoDB-wire server (every 250 means: raw bytes stored, event acked by Kafka);
- baseline: a bare aiosmtpd server (same library) whose handler discards the message.

The client keeps 10 SMTP connections open (as a sending MTA caches connections) and
sends ~3 KB multipart messages, each with a unique Message-ID, back to back on each
connection. Latency is from ``MAIL FROM`` to the final reply to ``DATA``. Each side has
a short warm-up that is not counted. Writes ``{"case", "unit", "system", "baseline",
"ratio", ...}`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

SENDERS = 10
RCPT = "help@support.example.com"


def sample_message(n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {n % 97} <customer{n % 97}@example.com>"
    msg["To"] = RCPT
    msg["Subject"] = f"Order {n} has not arrived"
    msg["Date"] = "Mon, 02 Mar 2026 09:30:00 +0100"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@bench.example.com>"
    body = "Hello,\n\nmy order has not arrived yet. Could you check?\n\nThanks\n" * 8
    msg.set_content(body)
    msg.add_alternative(f"<html><body><p>{body.replace(chr(10), '<br>')}</p></body></html>",
                        subtype="html")  # fmt: skip
    data = msg.as_bytes(policy=SMTP_POLICY)
    # Dot-stuffing, as any SMTP client does.
    return b"\r\n".join(
        b"." + line if line.startswith(b".") else line for line in data.split(b"\r\n")
    )


@dataclass
class Result:
    accepted: int = 0
    refused: int = 0
    latencies: list[float] = field(default_factory=list)


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return int(line[:3])


async def sender(port: int, stop_at: float, warm_until: float, result: Result, seed: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _reply(reader)
        writer.write(b"EHLO bench.example.net\r\n")
        await _reply(reader)
        n = seed
        while time.monotonic() < stop_at:
            data = sample_message(n)
            n += SENDERS
            started = time.monotonic()
            writer.write(f"MAIL FROM:<customer@example.com> SIZE={len(data)}\r\n".encode())
            await _reply(reader)
            writer.write(f"RCPT TO:<{RCPT}>\r\n".encode())
            await _reply(reader)
            writer.write(b"DATA\r\n")
            await _reply(reader)
            writer.write(data + b"\r\n.\r\n")
            code = await _reply(reader)
            if started < warm_until:
                continue
            if code == 250:
                result.accepted += 1
                result.latencies.append(time.monotonic() - started)
            else:
                result.refused += 1
        writer.write(b"QUIT\r\n")
        with contextlib.suppress(Exception):
            await _reply(reader)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def load(port: int, duration: float, warmup: float) -> tuple[Result, float]:
    result = Result()
    start = time.monotonic()
    warm_until = start + warmup
    stop_at = warm_until + duration
    await asyncio.gather(*(sender(port, stop_at, warm_until, result, i) for i in range(SENDERS)))
    measured = time.monotonic() - warm_until
    return result, measured


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listening on {port}")


def wait_ready(http_port: int, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ingest-email exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError("ingest-email not ready")


def phase_profile(http_port: int) -> dict[str, float]:
    """Where the accept time goes, from the service's own histograms (means, ms):
    ``accept`` = raw store write + Kafka acknowledgement; ``publish`` = the Kafka part."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    out = {}
    for label, metric in (
        ("accept", "switchboard_email_accept_seconds"),
        ("publish", "switchboard_publish_seconds"),
    ):
        count = sums.get(f"{metric}_count", 0.0)
        if count:
            out[f"system_{label}_mean_ms"] = round(sums[f"{metric}_sum"] / count * 1000, 2)
    if len(out) == 2:
        out["system_store_mean_ms"] = round(
            out["system_accept_mean_ms"] - out["system_publish_mean_ms"], 2
        )
    return out


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# --------------------------------------------------------------------------- the baseline


def serve_bare(port: int) -> None:
    """A bare aiosmtpd server whose handler discards every message (the baseline)."""
    from aiosmtpd.smtp import SMTP

    class Discard:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802, ARG002 - aiosmtpd's hook
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(
                Discard(),
                data_size_limit=25 * 1024 * 1024,
                enable_SMTPUTF8=True,
                hostname="bare",
                loop=loop,
            ),
            "127.0.0.1",
            port,
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --------------------------------------------------------------------------- the run


async def count_published(bootstrap: str, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = await consumer.end_offsets(tps)
        return sum(ends.values())
    finally:
        await consumer.stop()


def run(duration: float, warmup: float) -> dict[str, Any]:
    from switchboard_common.contract import TopicNames
    from switchboard_common.topics import create_topics
    from switchboard_devkit.running.inprocess import free_port
    from switchboard_devkit.running.processes import cpu_seconds, peak_rss_mb
    from switchboard_devkit.servers.infra import ensure_infra

    infra = ensure_infra()
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    database = f"bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topics(infra.kafka_bootstrap, prefix=prefix))
    smtp_port, http_port, bare_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "MONGODB_URL": infra.mongodb_url,
        "MONGODB_DATABASE": database,
        "SWITCHBOARD_TOPIC_PREFIX": prefix,
        "SWITCHBOARD_ENV": "test",
        "SWITCHBOARD_LOG_FORMAT": "json",
        "SUPPORT_EMAIL_DOMAINS": "support.example.com",
        "INGEST_EMAIL_SMTP_PORT": str(smtp_port),
        "INGEST_EMAIL_HTTP_PORT": str(http_port),
        # One address stands for many sending servers here: no per-address rate limit.
        "INGEST_EMAIL_MESSAGES_PER_IP_PER_MINUTE": "1000000",
    }
    figures: dict[str, Any] = {}
    system = subprocess.Popen(
        [sys.executable, "-m", "switchboard_ingest_email"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(http_port, system)
        cpu_before = cpu_seconds(system.pid)
        sys_result, sys_seconds = asyncio.run(load(smtp_port, duration, warmup))
        cpu_used = cpu_seconds(system.pid) - cpu_before
        # CPU of the service process per message (warm-up included in both counts).
        figures["system_cpu_ms_per_message"] = round(
            cpu_used / max(1, sys_result.accepted + sys_result.refused) * 1000, 2
        )
        figures["system_peak_rss_mb"] = peak_rss_mb(system.pid)
        figures.update(phase_profile(http_port))
    finally:
        stop(system)
    figures["published"] = asyncio.run(
        count_published(infra.kafka_bootstrap, TopicNames(prefix).inbound)
    )

    bare = subprocess.Popen(  # noqa: S603 - this interpreter running this very script
        [sys.executable, __file__, "--serve-bare", str(bare_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(bare_port, bare)
        base_result, base_seconds = asyncio.run(load(bare_port, duration, warmup))
    finally:
        stop(bare)
    _cleanup(infra.kafka_bootstrap, infra.mongodb_url, prefix, database)

    system_rate = sys_result.accepted / sys_seconds
    baseline_rate = base_result.accepted / base_seconds
    return {
        "case": "smtp_accept",
        "unit": "messages/s",
        "system": round(system_rate, 1),
        "baseline": round(baseline_rate, 1),
        "ratio": round(system_rate / baseline_rate, 3) if baseline_rate else None,
        "senders": SENDERS,
        "message_bytes": len(sample_message(0)),
        "duration_s": duration,
        "system_accepted": sys_result.accepted,
        "system_refused": sys_result.refused,
        "system_p50_ms": round(percentile(sys_result.latencies, 0.50) * 1000, 2),
        "system_p99_ms": round(percentile(sys_result.latencies, 0.99) * 1000, 2),
        "system_mean_ms": round(statistics.fmean(sys_result.latencies) * 1000, 2)
        if sys_result.latencies
        else None,
        "baseline_accepted": base_result.accepted,
        "baseline_p50_ms": round(percentile(base_result.latencies, 0.50) * 1000, 2),
        "baseline_p99_ms": round(percentile(base_result.latencies, 0.99) * 1000, 2),
        **figures,
    }


def _cleanup(bootstrap: str, mongodb_url: str, prefix: str, database: str) -> None:
    from pymongo import MongoClient

    from switchboard_common.topics import delete_topics

    with contextlib.suppress(Exception):
        asyncio.run(delete_topics(bootstrap, prefix=prefix))
    with contextlib.suppress(Exception), MongoClient[dict[str, Any]](mongodb_url) as client:
        client.drop_database(database)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per side")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds per side")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    figures = run(args.duration, args.warmup)
    text = json.dumps(figures, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
