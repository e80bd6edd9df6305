"""The database hangs (accepts, never answers): operations time out as transient errors,
the batch is retried (not dead-lettered), ``/healthz`` fails while the consumer is
stalled, and once the database answers again the message is stored and health is back.

The hang is a TCP proxy in front of the shared FerretDB that stops forwarding; the
shared server itself is never touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchboard_common.contract import DEADLETTER, INBOUND
from switchboard_devkit.testing.builders import T0
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_timeline import (
    RunningRouter,
    eventually,
    inbound,
    running_router,
)
from switchboard_router.timeline.identity import identity_of

pytestmark = pytest.mark.integration


class FreezableProxy:
    """Forwards TCP to ``target``; while frozen it reads but forwards nothing (a hung
    server: connections are accepted and requests are never answered)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FreezableProxy:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self.flowing.wait()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()


@pytest.fixture
async def proxy(service_env: dict[str, str]) -> AsyncIterator[FreezableProxy]:
    url = urlsplit(service_env["MONGODB_URL"])
    async with FreezableProxy(url.hostname or "127.0.0.1", url.port or 27017) as running:
        yield running


@pytest.fixture
async def router(
    service_env: dict[str, str], proxy: FreezableProxy
) -> AsyncIterator[RunningRouter]:
    env = {**service_env, "MONGODB_URL": f"mongodb://127.0.0.1:{proxy.port}/"}
    async with running_router(
        env,
        mongodb_timeout_seconds=1.0,
        consumer_stall_seconds=3.0,
        consumer_lag_interval_seconds=0.2,
    ) as handle:
        yield handle


async def retries(router: RunningRouter) -> float:
    """Batch retries after transient failures, in identity resolution."""
    text = (await router.http.get("/metrics")).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "switchboard_consumer_retries_total" and s.labels["topic"] == INBOUND
    )


async def test_a_hung_database_times_out_fails_liveness_and_loses_nothing(
    router: RunningRouter, proxy: FreezableProxy, probe: TopicProbe
) -> None:
    first = inbound("e-1", sender="ana@example.com", at=T0)
    await probe.send(INBOUND, first, key=identity_of(first))
    await eventually(lambda: router.customer_of("email:ana@example.com"))
    assert (await router.http.get("/healthz")).status_code == 200

    proxy.freeze()
    second = inbound("e-2", sender="bob@example.com", at=T0)
    await probe.send(INBOUND, second, key=identity_of(second))

    async def healthz(status: int) -> bool:
        return (await router.http.get("/healthz")).status_code == status

    # Stalled: the batch is retried on timeouts instead of hanging, and liveness fails.
    await eventually(lambda: healthz(503))
    assert (await router.http.get("/healthz")).json()["checks"] == {"consumers": "failed"}
    assert await eventually(lambda: retries(router))  # timeouts seen as transient

    proxy.thaw()
    bob = await eventually(lambda: router.customer_of("email:bob@example.com"))
    items = await eventually(lambda: router.timeline(bob["customer_id"]))
    assert [i["message_id"] for i in items] == ["e-2"]
    await eventually(lambda: healthz(200))
    assert await probe.read(DEADLETTER, timeout=1.0) == []  # retried, never dead-lettered
