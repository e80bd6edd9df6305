"""A flood of SMTP senders against the real service process, under a memory limit.

A few hundred concurrent sessions from eight loopback addresses each send a large
message (with a retry or two, as mail servers do) to ``python -m switchboard_ingest_email``
configured with a modest memory limit. The process's peak resident memory (VmHWM) must
stay under that limit, every message answered 250 must be on the real topic exactly
once, every other attempt must get a coded refusal (421, 451, 452), never a dropped
connection, and the service must still accept mail afterwards. A burst of connections
the service cannot accept at once waits in its listen queue for a reply.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import signal
import smtplib
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from switchboard_common.contract import INBOUND, MessageReceived
from switchboard_devkit.running.inprocess import free_port
from switchboard_devkit.running.processes import ServiceProcess, ServiceSpec, peak_rss_mb
from switchboard_devkit.testing.kafka_probe import TopicProbe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MIB = 1024 * 1024
MEMORY_LIMIT = 320 * MIB
LIMITS = {
    "INGEST_EMAIL_MEMORY_LIMIT_BYTES": str(MEMORY_LIMIT),
    "INGEST_EMAIL_MEMORY_BUDGET_BYTES": str(100 * MIB),
    "INGEST_EMAIL_MAX_MESSAGE_BYTES": str(4 * MIB),
    "INGEST_EMAIL_MAX_SESSIONS": "120",
    "INGEST_EMAIL_MAX_SESSIONS_PER_IP": "30",
    "INGEST_EMAIL_MESSAGES_PER_IP_PER_MINUTE": "15",
    "INGEST_EMAIL_MAX_RECIPIENTS": "2",
}
SENDERS = 300
SOURCES = [f"127.0.0.{n}" for n in range(2, 10)]  # per-IP limits need several clients
ATTEMPTS = 5
FLOOD_SECONDS = 120  # the flood stops by itself well before; this only bounds a hang
#: One large attachment shared by every message (the header differs): 1.5 MiB of data.
BODY = (
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nPlease find the logs attached.\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="logs.bin"\r\n\r\n'
    + base64.encodebytes(os.urandom(1100 * 1024)).replace(b"\n", b"\r\n")
    + b"--b--\r\n"
)
REFUSALS = {421, 451, 452}


@dataclass
class Attempt:
    """What one SMTP transaction was answered at its last step."""

    sender: int
    code: int | str  # the reply code, or "no reply" (connection ended, or none within 60 s)
    step: str
    rcpt_codes: tuple[int, ...] = ()


def header(sender: int) -> bytes:
    return (
        f"From: customer{sender}@example.com\r\nTo: help@support.example.com\r\n"
        f"Subject: crash logs {sender}\r\nMessage-ID: <flood-{sender}@example.com>\r\n"
    ).encode()


def raw_ref(sender: int) -> str:
    digest = hashlib.sha256(header(sender))
    digest.update(BODY)
    return f"sha256:{digest.hexdigest()}"


async def reply(reader: asyncio.StreamReader) -> int:
    """The code of one (possibly multi-line) SMTP reply."""
    while True:
        line = await asyncio.wait_for(reader.readline(), 60)
        if len(line) < 4:
            raise ConnectionResetError("connection ended without a reply")
        if line[3:4] != b"-":
            return int(line[:3])


async def transaction(port: int, sender: int, source: str) -> Attempt:
    """One session: EHLO, MAIL with SIZE, three RCPT, DATA; the answer where it stopped."""
    size = len(header(sender)) + len(BODY)
    step = "connect"
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0), limit=64 * 1024
        )
    except OSError:
        return Attempt(sender, "no reply", step)
    try:
        step = "greeting"
        if (code := await reply(reader)) != 220:
            return Attempt(sender, code, step)
        for step, command in (
            ("ehlo", b"EHLO mx.example.net"),
            ("mail", f"MAIL FROM:<customer{sender}@example.com> SIZE={size}".encode()),
        ):
            writer.write(command + b"\r\n")
            if (code := await reply(reader)) != 250:
                return Attempt(sender, code, step)
        rcpt_codes = []
        for rcpt in ("help", "billing", "sales"):  # one more than the limit of 2
            writer.write(f"RCPT TO:<{rcpt}@support.example.com>\r\n".encode())
            rcpt_codes.append(await reply(reader))
        step = "data"
        writer.write(b"DATA\r\n")
        if (code := await reply(reader)) != 354:
            return Attempt(sender, code, step, tuple(rcpt_codes))
        step = "end of data"
        writer.write(header(sender))
        view = memoryview(BODY)
        for start in range(0, len(BODY), 64 * 1024):  # bounded buffers on this side too
            writer.write(view[start : start + 64 * 1024])
            await writer.drain()
        writer.write(b".\r\n")
        return Attempt(sender, await reply(reader), step, tuple(rcpt_codes))
    except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
        return Attempt(sender, "no reply", step)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def sender_until_done(port: int, sender: int) -> list[Attempt]:
    """A sending mail server: retries a refused message a couple of times."""
    attempts = []
    for attempt in range(ATTEMPTS):
        result = await transaction(port, sender, SOURCES[sender % len(SOURCES)])
        attempts.append(result)
        if result.code not in REFUSALS:
            break
        await asyncio.sleep(attempt + 1)
    return attempts


@pytest.fixture
def service(service_env: dict[str, str]) -> Iterator[ServiceProcess]:
    """ingest-email as its own process, so its memory is its own."""
    env = {
        **os.environ,
        **service_env,
        **LIMITS,
        "PYTHONUNBUFFERED": "1",
        "SUPPORT_EMAIL_DOMAINS": "support.example.com",
        "INGEST_EMAIL_SMTP_PORT": str(free_port()),
        "INGEST_EMAIL_HTTP_PORT": str(free_port()),
    }
    spec = ServiceSpec("ingest-email", "switchboard_ingest_email", "INGEST_EMAIL_HTTP_PORT", 0)
    process = ServiceProcess(spec, env)
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@dataclass
class MemoryWatch:
    """The service process and the highest peak RSS seen (MiB) while watching."""

    service: ServiceProcess
    pid: int
    peak_mb: float = 0.0
    killed: bool = False


@pytest.fixture
async def watched(service: ServiceProcess) -> AsyncIterator[MemoryWatch]:
    """Kills the service at once if it goes over the memory limit (the test then fails),
    so a regression cannot take the machine's memory."""
    assert service.process is not None
    watch = MemoryWatch(service, service.process.pid)

    async def run() -> None:
        while watch.peak_mb * MIB <= MEMORY_LIMIT:
            watch.peak_mb = peak_rss_mb(watch.pid) or watch.peak_mb
            await asyncio.sleep(0.1)
        watch.killed = True
        service.kill()

    watcher = asyncio.create_task(run())
    yield watch
    watcher.cancel()


async def test_a_flood_of_large_messages_stays_under_the_memory_limit(
    watched: MemoryWatch, probe: TopicProbe
) -> None:
    service = watched.service
    port = int(service.env["INGEST_EMAIL_SMTP_PORT"])
    async with asyncio.timeout(FLOOD_SECONDS):
        results = await asyncio.gather(*(sender_until_done(port, n) for n in range(SENDERS)))
    peak = peak_rss_mb(watched.pid) or watched.peak_mb
    attempts = [a for attempts in results for a in attempts]
    outcomes = Counter((a.step, a.code) for a in attempts)
    print(f"\nflood: peak RSS {peak:.0f} MiB; {sorted(outcomes.items(), key=str)}")

    assert not watched.killed, f"over the memory limit: peak RSS {watched.peak_mb:.0f} MiB"
    assert service.process is not None
    assert service.process.poll() is None, f"the service died:\n{service.tail()}"
    assert peak * MIB <= MEMORY_LIMIT
    codes = Counter(a.code for a in attempts)
    # Never a dropped connection; the step says where one was dropped.
    assert set(codes) <= {250, *REFUSALS}, sorted(outcomes.items(), key=str)
    # Every limit was reached, and mail still got through.
    assert codes[250] > 0
    assert {step for step, code in outcomes if code in REFUSALS} >= {"greeting", "mail", "data"}
    assert all(a.rcpt_codes == (250, 250, 452) for a in attempts if a.code == 250)

    accepted = {raw_ref(a.sender) for a in attempts if a.code == 250}
    records = await probe.read_events(INBOUND, count=len(accepted), timeout=60, settle=3)
    published = Counter(e.raw_ref for _, e in records if isinstance(e, MessageReceived))
    assert {ref: published[ref] for ref in accepted} == dict.fromkeys(accepted, 1)

    # Still serving: a normal message afterwards is accepted and published.
    after = header(SENDERS) + b"\r\nstill there?\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.sendmail("customer@example.com", ["help@support.example.com"], after)
    after_ref = f"sha256:{hashlib.sha256(after).hexdigest()}"
    records = await probe.read_events(INBOUND, count=len(published) + 1, timeout=60)
    assert after_ref in {e.raw_ref for _, e in records if isinstance(e, MessageReceived)}


def accept_queue(port: int) -> int | None:
    """Connections waiting in the kernel for the listener on ``port`` to accept them
    (the ``rx_queue`` of a LISTEN socket in /proc/net/tcp), or None without a listener."""
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            return int(queues.split(":")[1], 16)
    return None


def greeting(client: socket.socket) -> int | str:
    """The code of the first reply on ``client``, or "no reply"."""
    received = b""
    with contextlib.suppress(OSError):
        while not received.endswith(b"\r\n") and (chunk := client.recv(1024)):
            received += chunk
    return int(received[:3]) if received[:3].isdigit() else "no reply"


def test_a_burst_of_connections_is_queued_and_answered(service: ServiceProcess) -> None:
    """300 connections arriving while the service cannot accept (here: stopped) wait in the
    listen queue and each gets its 220 or 421 once it runs. With a short queue the rest
    would be left to TCP retransmissions, and a sender could get no reply at all."""
    assert service.process is not None
    port = int(service.env["INGEST_EMAIL_SMTP_PORT"])
    clients = []
    service.signal(signal.SIGSTOP)
    try:
        for n in range(SENDERS):
            client = socket.socket()
            clients.append(client)
            client.bind((SOURCES[n % len(SOURCES)], 0))
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))  # the kernel completes the handshake
        deadline = time.monotonic() + 10
        while (queued := accept_queue(port)) != SENDERS and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        service.signal(signal.SIGCONT)
    try:
        assert queued == SENDERS, f"{queued} of {SENDERS} connections queued for the service"
        for client in clients:
            client.setblocking(True)
            client.settimeout(60)
        codes = Counter(greeting(client) for client in clients)
    finally:
        for client in clients:
            client.close()
    # The sessions stay open while they are counted: the first 120 (the limit) are greeted.
    admitted = int(LIMITS["INGEST_EMAIL_MAX_SESSIONS"])
    assert codes == {220: admitted, 421: SENDERS - admitted}
