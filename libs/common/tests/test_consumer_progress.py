"""A wedged consumer on real Kafka: its lag keeps rising and its last progress stays
frozen on ``/metrics``, ``/healthz`` fails while it is stalled, and all comes back once
it is released."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from switchboard_common.consumer import BatchConsumer, Delivery, subscribe_batch
from switchboard_common.contract import DEADLETTER, INBOUND
from switchboard_common.deadletter import DeadLetterPublisher
from switchboard_common.http import ops_router
from switchboard_common.kafka import EventPublisher, make_broker
from switchboard_common.metrics import ConsumerMetrics
from switchboard_common.progress import ConsumerWatch
from switchboard_common.settings import ServiceSettings
from switchboard_devkit.testing.builders import message
from switchboard_devkit.testing.kafka_probe import TopicProbe

pytestmark = pytest.mark.integration

GROUP = "wedge"


class WedgeSettings(ServiceSettings):
    service_name: ClassVar[str] = "wedge"


@dataclass
class WedgedHandler:
    """Blocks inside the first batch until released (a dependency that never answers)."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[str] = field(default_factory=list)

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        self.entered.set()
        await self.release.wait()
        self.seen += [d.event.message_id for d in deliveries]  # type: ignore[attr-defined]
        return []


@dataclass
class Running:
    handler: WedgedHandler
    http: httpx.AsyncClient

    async def samples(self, name: str) -> dict[str, float]:
        """``topic`` label → value of one metric, as ``/metrics`` shows it."""
        text = (await self.http.get("/metrics")).text
        return {
            s.labels["topic"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and s.labels.get("group") == GROUP
        }


@pytest.fixture
async def running(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Running]:
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    settings = WedgeSettings.load()
    registry = CollectorRegistry()
    metrics = ConsumerMetrics.create(registry)
    watch = ConsumerWatch(metrics, stall_after=1.0, interval=0.2)
    broker = make_broker(settings)
    handler = WedgedHandler()
    consumer = BatchConsumer(
        topics=settings.topics,
        handler=handler,
        dead_letters=DeadLetterPublisher(
            EventPublisher(broker, settings.topics, "wedge", publishes=[DEADLETTER]),
            service="wedge",
            consumer_group=GROUP,
        ),
        metrics=metrics,
    )
    subscribe_batch(
        broker,
        consumer,
        topics=[INBOUND],
        group_id=settings.topic_prefix + GROUP,
        max_records=1,
        watch=watch,
    )
    app = FastAPI()
    app.include_router(ops_router(registry=registry, checks=[], liveness=[watch.liveness_check()]))
    await broker.start()
    sampler = asyncio.create_task(watch.run())
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://wedge") as http:
            yield Running(handler, http)
    finally:
        handler.release.set()
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        await broker.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_a_wedged_consumer_shows_rising_lag_frozen_progress_and_fails_liveness(
    running: Running, probe: TopicProbe
) -> None:
    topic = INBOUND
    progress = "switchboard_consumer_last_progress_timestamp_seconds"
    lag = "switchboard_consumer_lag_records"
    await probe.send(INBOUND, message("m-1"), key="email:ana@example.com")
    await asyncio.wait_for(running.handler.entered.wait(), 60)
    frozen = (await running.samples(progress))[topic]

    for n in range(2, 6):
        await probe.send(INBOUND, message(f"m-{n}"), key="email:ana@example.com")

    async def lag_is(value: float) -> bool:
        return (await running.samples(lag)).get(topic) == value

    # Five records behind the committed offset while the handler holds the first one.
    await eventually(lambda: lag_is(5))
    assert (await running.samples(progress))[topic] == frozen

    async def healthz(status: int) -> bool:
        return (await running.http.get("/healthz")).status_code == status

    await eventually(lambda: healthz(503))
    body = (await running.http.get("/healthz")).json()
    assert body["checks"] == {"consumers": "failed"}
    assert (await running.samples(progress))[topic] == frozen

    running.handler.release.set()
    await eventually(lambda: lag_is(0))
    await eventually(lambda: healthz(200))
    assert (await running.samples(progress))[topic] > frozen
    assert sorted(running.handler.seen) == [f"m-{n}" for n in range(1, 6)]
