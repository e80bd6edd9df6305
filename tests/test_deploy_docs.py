"""The generated integrator documents are complete and internally consistent."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from switchboard_common.contract.topics import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    CONVERSATION_ACTIVITY,
    CONVERSATION_EVENTS,
    DEADLETTER,
    EVENT_TYPES,
    INBOUND,
    OUTBOUND,
    SLA_EVENTS,
    TOPICS,
    TOPICS_BY_NAME,
    TopicNames,
)
from switchboard_devkit.paths import repo_root

pytestmark = pytest.mark.unit

DOCS = repo_root() / "docs"


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


#: Who publishes each public topic (CONTRACT.md's table).
PRODUCERS = {
    INBOUND: {"ingest-email", "ingest-social", "webchat"},
    ASSIGNMENTS: {"router"},
    CONVERSATION_ACTIVITY: {"router"},
    # Frontends' own, and the router's for agents working in its workspace API.
    AGENT_EVENTS: {"helpdesk-frontend", "router"},
    # Frontends' own events (also through the router's workspace API), and
    # support.reply.sent for the replies Switchboard sends.
    CONVERSATION_EVENTS: {
        "helpdesk-frontend",
        "router",
        "ingest-email",
        "ingest-social",
        "webchat",
    },
    SLA_EVENTS: {"sla-monitor"},
    # Requests from frontends; statuses from the router (refused) and the channel's sender.
    OUTBOUND: {"helpdesk-frontend", "router", "ingest-email", "ingest-social", "webchat"},
    DEADLETTER: {"router", "sla-monitor", "ingest-email", "ingest-social", "webchat"},
}


def senders(document: dict[str, Any]) -> dict[str, set[str]]:
    """Topic -> the services with a send operation on it (titles ``<service>.publish:``)."""
    found: dict[str, set[str]] = {}
    for name, operation in document["operations"].items():
        if operation["action"] == "send":
            channel = resolve(document, operation["channel"]["$ref"])
            found.setdefault(channel["address"], set()).add(name.split(".publish:")[0])
    return found


def test_asyncapi_describes_every_public_topic_and_event_type_with_resolvable_refs() -> None:
    document = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    assert document["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in document["channels"].values()}
    assert {t.name for t in TOPICS} <= addresses
    schemas = document["components"]["schemas"]
    assert {model.__name__ for model in EVENT_TYPES.values()} <= set(schemas)
    for ref in refs(document):
        assert ref.startswith("#/"), ref
        resolve(document, ref)  # raises KeyError when dangling
    assert {t: senders(document).get(t) for t in PRODUCERS} == PRODUCERS
    (send,) = [
        o for name, o in document["operations"].items() if name == f"router.publish:{ASSIGNMENTS}"
    ]
    (reference,) = send["messages"]
    message = resolve(document, resolve(document, reference["$ref"])["$ref"])
    assert "support.conversation.assigned" in message["headers"]["properties"]["ce_type"]["enum"]
    assert message["bindings"]["kafka"]["key"]["description"] == "conversation_id"
    payload = resolve(document, message["payload"]["$ref"])
    variants = {resolve(document, v["$ref"])["title"] for v in payload["anyOf"]}
    assert "ConversationAssigned" in variants
    assert "seq" in schemas["ConversationAssigned"]["properties"]
    receivers = {
        op["bindings"]["kafka"]["groupId"]["const"]
        for op in document["operations"].values()
        if op["action"] == "receive" and "bindings" in op
    }
    assert {"router-agents", "router-assignment", "sla-monitor", "webchat-replies"} <= receivers


def test_asyncapi_comes_from_the_declared_publishers_and_subscribers() -> None:
    """A publisher or subscriber declared on a broker appears; nothing else does."""
    from faststream.kafka import KafkaBroker

    from switchboard_common.consumer import BatchConsumer, Delivery, subscribe_batch
    from switchboard_common.deadletter import DeadLetterPublisher
    from switchboard_common.kafka import EventPublisher
    from switchboard_common.metrics import ConsumerMetrics
    from switchboard_common.progress import ConsumerWatch
    from switchboard_devtools.docs import asyncapi

    async def nothing_to_do(batch: Sequence[Delivery]) -> list[tuple[Delivery, str]]:
        return []

    broker = KafkaBroker("kafka:9092")
    topics = TopicNames()
    metrics = ConsumerMetrics.create(CollectorRegistry())
    publisher = EventPublisher(broker, topics, "auditor", publishes=[SLA_EVENTS, DEADLETTER])
    subscribe_batch(
        broker,
        BatchConsumer(
            topics=topics,
            handler=nothing_to_do,
            dead_letters=DeadLetterPublisher(publisher, service="auditor", consumer_group="g"),
            metrics=metrics,
        ),
        topics=[ASSIGNMENTS],
        group_id="auditor-group",
        title="auditor-assignments",
        watch=ConsumerWatch(metrics),
    )
    document = asyncapi({"auditor": broker})
    assert senders(document) == {SLA_EVENTS: {"auditor"}, DEADLETTER: {"auditor"}}
    (receive,) = [o for o in document["operations"].values() if o["action"] == "receive"]
    assert resolve(document, receive["channel"]["$ref"])["address"] == ASSIGNMENTS
    assert receive["bindings"]["kafka"]["groupId"]["const"] == "auditor-group"
    (reference,) = receive["messages"]
    message = resolve(document, resolve(document, reference["$ref"])["$ref"])
    payload = resolve(document, message["payload"]["$ref"])
    assert payload["type"] == "array"  # a batch of the topic's events
    items = {resolve(document, v["$ref"])["title"] for v in payload["items"]["anyOf"]}
    assert items == {m.__name__ for m in TOPICS_BY_NAME[ASSIGNMENTS].events}


@pytest.mark.parametrize(
    ("name", "paths"),
    [
        ("ingest-social", {"/webhooks/meta", "/webhooks/x", "/webhooks/telegram"}),
        ("router", {"/queue", "/agents"}),
    ],
)
def test_openapi_documents_exist_for_the_webhook_and_read_apis(name: str, paths: set[str]) -> None:
    document = json.loads((DOCS / "openapi" / f"{name}.json").read_text())
    assert document["openapi"].startswith("3.")
    assert paths <= set(document["paths"])


def test_generated_documents_match_the_code() -> None:
    """What `make docs-check` checks, also in the test run."""
    from switchboard_devtools.docs import render

    stale = [
        name
        for name, content in render().items()
        if not Path(DOCS / name).exists() or (DOCS / name).read_text() != content
    ]
    assert not stale, f"run `make docs`: {stale}"
