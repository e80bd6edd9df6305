"""Kafka down: the webhook is answered 503 with nothing left behind, and the provider's
retry after Kafka is back publishes the message exactly once.

Runs against a Kafka of its own (started and stopped here), never the shared one.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchboard_common.contract import INBOUND, MessageReceived, TopicNames
from switchboard_common.topics import create_topics
from switchboard_devkit.running.inprocess import free_port, running
from switchboard_devkit.servers.local import LocalKafka
from switchboard_devkit.testing.kafka_probe import TopicProbe, unique
from switchboard_devtools.testing.social import (
    ACCOUNTS_YAML,
    META_SECRET,
    TELEGRAM_TOKEN,
    VERIFY_TOKEN,
    X_SECRET,
    accounts_environment,
    encode,
    load_sample,
    signed_headers,
)
from switchboard_ingest_social.app import build
from switchboard_ingest_social.settings import IngestSocialSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def own_kafka() -> Iterator[LocalKafka]:
    kafka = LocalKafka(
        name=unique("kafka-social-"),
        host="127.0.0.1",
        port=free_port(),
        controller_port=free_port(),
    )
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()
        shutil.rmtree(kafka.state, ignore_errors=True)


async def _post(http: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await http.post("/webhooks/meta", content=body, headers=signed_headers("meta", body))


async def test_kafka_down_gives_503_and_the_retry_publishes_exactly_once(
    own_kafka: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = TopicNames(prefix=f"{unique('t')}.")
    await create_topics(own_kafka.bootstrap, prefix=topics.prefix, partitions=3)
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(ACCOUNTS_YAML)
    env = {
        **accounts_environment(),
        "KAFKA_BOOTSTRAP_SERVERS": own_kafka.bootstrap,
        "SWITCHBOARD_TOPIC_PREFIX": topics.prefix,
        "SWITCHBOARD_ENV": "test",
        "META_APP_SECRET": META_SECRET,
        "META_VERIFY_TOKEN": VERIFY_TOKEN,
        "X_CONSUMER_SECRET": X_SECRET,
        "TELEGRAM_SECRET_TOKEN": TELEGRAM_TOKEN,
        "INGEST_SOCIAL_ACCOUNTS_FILE": str(accounts),
        "INGEST_SOCIAL_HTTP_PORT": str(free_port()),
        "INGEST_SOCIAL_PUBLISH_TIMEOUT_SECONDS": "3",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime, _ = build(IngestSocialSettings.load())
    before = encode(load_sample("messenger_text"))
    during = encode(load_sample("whatsapp_text"))

    async with running(runtime) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        assert (await _post(http, before)).status_code == 200

        await asyncio.to_thread(own_kafka.stop)
        refused = await _post(http, during)
        assert refused.status_code == 503
        assert refused.json()["status"] == "unavailable"
        # Still down: every attempt is refused, none leaves a record behind.
        assert (await _post(http, during)).status_code == 503

        await asyncio.to_thread(own_kafka.start)
        # The provider retries until it gets a 200 (reconnecting may take a moment).
        deadline = time.monotonic() + 90
        while (status := (await _post(http, during)).status_code) != 200:
            assert status == 503
            assert time.monotonic() < deadline, "no 200 within 90 s of Kafka's return"
            await asyncio.sleep(1)

        metrics = (await http.get("/metrics")).text
        assert (
            'switchboard_ingest_social_requests_total{outcome="unavailable",provider="whatsapp"}'
            in metrics
        )

    async with TopicProbe(own_kafka.bootstrap, topics) as probe:
        records = await probe.read_events(INBOUND, count=2, settle=3.0)
    ids = sorted(e.message_id for _, e in records if isinstance(e, MessageReceived))
    assert ids == sorted(
        [
            "messenger:m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P",
            "whatsapp:wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        ]
    )
