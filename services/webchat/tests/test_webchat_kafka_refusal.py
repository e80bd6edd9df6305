"""Kafka does not take a message: the widget is told ``unavailable`` and gets no ack, and
the resend once Kafka takes it again publishes the message exactly once.

Kafka's refusal is real, without stopping the shared broker: this test's own inbound
topic is deleted (topics are never created implicitly), then created again.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from switchboard_common.contract import INBOUND, TopicNames
from switchboard_common.topics import create_topics
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.testing.kafka_probe import TopicProbe

from .conftest import RunningChat, hello, receive, say, widget

pytestmark = pytest.mark.integration


async def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        for _ in range(100):  # deletion completes in the background
            if topic not in await admin.list_topics():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{topic} was not deleted")
    finally:
        await admin.close()


@pytest.mark.parametrize("chat_env", [{"WEBCHAT_PUBLISH_TIMEOUT_SECONDS": "2"}], indirect=True)
async def test_kafka_refusing_is_unavailable_without_ack_and_the_resend_publishes_once(
    chat: RunningChat, infra: Infra, topics: TopicNames, probe: TopicProbe
) -> None:
    async with widget(chat) as socket:
        await hello(socket)
        await delete_topic(infra.kafka_bootstrap, topics(INBOUND))
        await say(socket, {"type": "send", "client_id": "c-1", "text": "Are you there?"})
        refused = await receive(socket)
        await create_topics(infra.kafka_bootstrap, prefix=topics.prefix, partitions=3)
        resent = None
        while resent is None or resent["type"] != "ack":
            # What the widget does: send again after retry_after, same client_id.
            await asyncio.sleep((resent or refused)["retry_after"])
            await say(socket, {"type": "send", "client_id": "c-1", "text": "Are you there?"})
            resent = await receive(socket)
        records = await probe.read(INBOUND, count=1, settle=2.0)
    assert refused["type"] == "error"
    assert refused["code"] == "unavailable"
    assert refused["client_id"] == "c-1"
    assert refused["retry_after"] > 0
    assert resent["seq"] >= 1
    assert len(records) == 1
