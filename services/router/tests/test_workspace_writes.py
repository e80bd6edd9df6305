"""The workspace's write API through real HTTP, against the router wired to real Kafka and
FerretDB: each write publishes the contract event a Kafka frontend would (read back
from the topic), idempotently by request id, refuses what it must, and answers 503 while
Kafka refuses and 202 on the retry, with nothing lost or doubled."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError

from switchboard_common.cloudevents import header_map
from switchboard_common.contract import (
    AGENT_EVENTS,
    ASSIGNMENTS,
    CONVERSATION_EVENTS,
    OUTBOUND,
    AgentStatus,
    AgentStatusChanged,
    Channel,
    ContractModel,
    ConversationAssigned,
    ConversationReopened,
    ConversationResolved,
    ConversationTransferred,
    NoteAdded,
    OfferAccepted,
    OfferRejected,
    ReplyRequested,
)
from switchboard_common.kafka import Outgoing
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_timeline import (
    ADMIN_TOKEN,
    READ_TOKEN,
    RunningRouter,
    agent_token,
    agents_online,
    bearer,
    customer_writes,
    eventually,
    running_router,
)
from switchboard_router.assignment.model import RouteStatus
from switchboard_router.timeline.replies import TEXT_LIMITS
from switchboard_router.workspace.requests_store import COLLECTION
from switchboard_router.workspace.write_api import KAFKA_DOWN, NOT_OFFERED, REUSED

pytestmark = pytest.mark.integration

POLICY = """
classification: {language: {detect: false}}
queues: [{name: general}, {name: billing}]
offers: {require_acceptance: true, timeout_seconds: 3600}
"""
ANA, BOB = bearer(agent_token("ana")), bearer(agent_token("bob"))
WORKSPACE_TOPICS = (AGENT_EVENTS, CONVERSATION_EVENTS, OUTBOUND)


@pytest.fixture
async def router(service_env: dict[str, str], tmp_path: Path) -> AsyncIterator[RunningRouter]:
    policy = tmp_path / "routing.yaml"
    policy.write_text(POLICY)
    async with running_router(service_env, routing_policy_file=str(policy)) as handle:
        yield handle


async def published(probe: TopicProbe, topic: str, event_id: str) -> list[tuple[str, Any]]:
    """(key, event) of every record on ``topic`` with this ``ce_id``, in order."""
    found = []
    for record, event in await probe.read_events(topic, timeout=2.0):
        if header_map(record.headers).get("ce_id") == event_id:
            found.append(((record.key or b"").decode(), event))
    return found


async def offered_to_ana(router: RunningRouter, probe: TopicProbe, *message_ids: str) -> list[str]:
    """Conversations from new customers, each offered to ana (the only agent online)."""
    await agents_online(probe, router.url, {"ana": {}}, capacity={Channel.EMAIL: 5})
    conversations = [await customer_writes(probe, m) for m in message_ids]

    async def all_offered() -> bool:
        heads = await router.parts.assignment.store.heads_of(conversations)
        return all(
            h.status == RouteStatus.OFFERED and h.agent_id == "ana" for h in heads.values()
        ) and len(heads) == len(conversations)

    await eventually(all_offered)
    return conversations


async def test_each_write_publishes_its_contract_event_with_the_contract_key(
    router: RunningRouter, probe: TopicProbe
) -> None:
    first, second = await offered_to_ana(router, probe, "m-w1", "m-w2")
    writes: list[tuple[str, str, dict[str, Any], str, str, type[ContractModel]]] = [
        ("POST", f"/conversations/{first}/accept", {}, AGENT_EVENTS, "ana", OfferAccepted),
        ("POST", f"/conversations/{second}/reject", {"reason": "not mine"}, AGENT_EVENTS, "ana",
         OfferRejected),
        ("POST", f"/conversations/{first}/replies", {"text": "Hello Ana"}, OUTBOUND, first,
         ReplyRequested),
        ("POST", f"/conversations/{first}/notes", {"text": "VIP"}, CONVERSATION_EVENTS, first,
         NoteAdded),
        ("POST", f"/conversations/{first}/transfer", {"to_queue": "billing"},
         CONVERSATION_EVENTS, first, ConversationTransferred),
        ("POST", f"/conversations/{second}/resolve", {}, CONVERSATION_EVENTS, second,
         ConversationResolved),
        ("POST", f"/conversations/{second}/reopen", {}, CONVERSATION_EVENTS, second,
         ConversationReopened),
        # Last: away, ana's open offers would go back to the queue.
        ("PUT", "/agents/ana/presence", {"status": "away"}, AGENT_EVENTS, "ana",
         AgentStatusChanged),
    ]  # fmt: skip
    for number, (method, path, body, topic, key, kind) in enumerate(writes):
        request_id = f"req-write-{number:03}"
        answer = await router.http.request(
            method, path, json={"request_id": request_id, **body}, headers=ANA
        )
        assert answer.status_code == 202, (path, answer.text)
        expected = {
            "request_id": request_id,
            "event_type": kind.ce_type,
            "event_id": f"workspace:{request_id}",
        }
        if "/conversations/" in path:
            expected["conversation_id"] = path.split("/")[2]
        assert answer.json() == expected
        # Answered only once Kafka had it: the record is there now.
        ((record_key, event),) = await published(probe, topic, expected["event_id"])
        assert (record_key, type(event)) == (key, kind), path
        assert getattr(event, "agent_id", getattr(event, "from_agent_id", "ana")) == "ana"
        if isinstance(event, ReplyRequested):
            assert (event.reply_id, event.text) == (request_id, "Hello Ana")
        if isinstance(event, NoteAdded):
            assert (event.note_id, event.text) == (request_id, "VIP")
        if isinstance(event, OfferRejected):
            assert event.reason == "not mine"
        if isinstance(event, ConversationTransferred):
            assert (event.to_queue, event.to_agent_id) == ("billing", None)
    # The router itself took ana's acceptance like any frontend's: she has it now.

    async def assigned() -> bool:
        return any(
            isinstance(e, ConversationAssigned)
            and e.agent_id == "ana"
            and e.offer_expires_at is None
            for _, e in await probe.read_events(ASSIGNMENTS, timeout=2.0)
        )

    await eventually(assigned)
    # A retry of the acceptance is answered as the first was, though the offer is gone.
    retried = await router.http.post(
        f"/conversations/{first}/accept", json={"request_id": "req-write-000"}, headers=ANA
    )
    assert (retried.status_code, retried.json()["event_id"]) == (202, "workspace:req-write-000")
    fresh = await router.http.post(
        f"/conversations/{first}/accept", json={"request_id": "req-write-999"}, headers=ANA
    )
    assert (fresh.status_code, fresh.json()) == (409, {"detail": NOT_OFFERED})


async def test_the_same_request_again_is_the_same_event_and_a_changed_one_is_refused(
    router: RunningRouter, probe: TopicProbe
) -> None:
    conversation = await customer_writes(probe, "m-i1")
    path = f"/conversations/{conversation}/notes"
    body = {"request_id": "req-note-001", "text": "call back after 5"}
    answers = [await router.http.post(path, json=body, headers=ANA) for _ in range(2)]
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json() == answers[1].json()
    conflicts = [
        await router.http.post(path, json={**body, "text": "another note"}, headers=ANA),
        await router.http.post(path, json=body, headers=BOB),  # another agent, same id
        await router.http.post(f"/conversations/{conversation}/replies", json=body, headers=ANA),
        await router.http.post(f"/conversations/{conversation}/resolve", json={
            "request_id": "req-note-001"}, headers=ANA),
    ]  # fmt: skip
    assert [c.status_code for c in conflicts] == [409] * 4
    assert conflicts[0].json() == {"detail": REUSED}
    # Two records of one event: same ce_id, payload and time; nothing from the conflicts.
    records = [
        r
        for r, _ in await probe.read_events(CONVERSATION_EVENTS, timeout=2.0)
        if header_map(r.headers).get("ce_id") == "workspace:req-note-001"
    ]
    assert len(records) == 2
    assert records[0].value == records[1].value
    times = {header_map(r.headers)["ce_time"] for r in records}
    assert len(times) == 1
    assert await published(probe, OUTBOUND, "workspace:req-note-001") == []


async def test_a_request_id_is_remembered_for_its_retention_and_then_forgotten(
    router: RunningRouter, probe: TopicProbe
) -> None:
    conversation = await customer_writes(probe, "m-r1")
    path = f"/conversations/{conversation}/notes"
    body = {"request_id": "req-kept-001", "text": "first"}
    assert (await router.http.post(path, json=body, headers=ANA)).status_code == 202
    changed = {**body, "text": "second"}
    # The router's own sweep, as its hourly loop runs it: a fresh id is kept.
    await router.parts.workspace.forget_old_requests()
    assert (await router.http.post(path, json=changed, headers=ANA)).status_code == 409
    # Eight days on (past the default seven), the sweep forgets it.
    requests = router.ctx.db[COLLECTION]
    claimed = await requests.find_one({"_id": "req-kept-001"})
    assert claimed is not None
    await requests.update_one(
        {"_id": "req-kept-001"}, {"$set": {"at": claimed["at"] - timedelta(days=8)}}
    )
    await router.parts.workspace.forget_old_requests()
    assert await requests.find_one({"_id": "req-kept-001"}) is None
    assert (await router.http.post(path, json=changed, headers=ANA)).status_code == 202


async def test_bad_requests_are_refused_and_publish_nothing(
    router: RunningRouter, probe: TopicProbe
) -> None:
    conversation = await customer_writes(probe, "m-b1")  # waiting: no agent is online
    on = f"/conversations/{conversation}"
    too_long = "x" * (max(TEXT_LIMITS.values()) + 1)
    cases: list[tuple[str, str, dict[str, Any], dict[str, str], int]] = [
        ("POST", "/conversations/c-unknown/notes", {"text": "x"}, ANA, 404),
        ("POST", "/conversations/c-unknown/accept", {}, ANA, 404),
        ("POST", f"{on}/accept", {}, ANA, 409),
        ("POST", f"{on}/reject", {}, ANA, 409),
        ("POST", f"{on}/transfer", {"to_queue": "billing", "to_agent_id": "bob"}, ANA, 422),
        ("POST", f"{on}/transfer", {}, ANA, 422),
        ("POST", f"{on}/replies", {"text": ""}, ANA, 422),
        ("POST", f"{on}/replies", {"text": "   "}, ANA, 422),
        ("POST", f"{on}/replies", {"text": too_long}, ANA, 422),
        ("POST", f"{on}/notes", {"text": "x", "request_id": "bad id!"}, ANA, 422),
        ("POST", f"{on}/notes", {"text": "x", "request_id": "short"}, ANA, 422),
        ("PUT", "/agents/ana/presence", {"status": "asleep"}, ANA, 422),
        ("PUT", "/agents/bob/presence", {"status": "online"}, ANA, 403),
        ("POST", f"{on}/resolve", {}, {}, 401),
        ("POST", f"{on}/resolve", {}, bearer("not-a-token"), 401),
        ("POST", f"{on}/resolve", {}, bearer(READ_TOKEN), 403),
        ("POST", f"{on}/resolve", {}, bearer(ADMIN_TOKEN), 403),
    ]
    seen = []
    async with httpx.AsyncClient(base_url=router.url, timeout=30) as http:
        for number, (method, path, body, headers, _) in enumerate(cases):
            request = {"request_id": f"req-bad-{number:03}", **body}
            answer = await http.request(method, path, json=request, headers=headers)
            seen.append(answer.status_code)
            if answer.status_code == 409:
                assert answer.json() == {"detail": NOT_OFFERED}
    assert seen == [expected for *_, expected in cases]
    for topic in WORKSPACE_TOPICS:
        for record, _ in await probe.read_events(topic, timeout=2.0):
            assert not header_map(record.headers)["ce_id"].startswith("workspace:"), topic


async def test_while_kafka_refuses_the_answer_is_503_and_the_retry_publishes_once(
    router: RunningRouter, probe: TopicProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = await customer_writes(probe, "m-k1")
    events = router.ctx.publisher
    working = events.publish_all

    async def refusing(items: Sequence[Outgoing]) -> Any:
        # Only the workspace's sends fail: the router's own pipeline carries on.
        if any(str(item.event_id).startswith("workspace:") for item in items):
            raise KafkaConnectionError("broker unreachable (test)")
        return await working(items)

    monkeypatch.setattr(events, "publish_all", refusing)
    presence = {"request_id": "req-kafka-01", "status": "online"}
    note = {"request_id": "req-kafka-02", "text": "customer is waiting"}
    for _ in range(2):
        refused = await router.http.put("/agents/ana/presence", json=presence, headers=ANA)
        assert (refused.status_code, refused.json()) == (503, {"detail": KAFKA_DOWN})
        refused = await router.http.post(
            f"/conversations/{conversation}/notes", json=note, headers=ANA
        )
        assert refused.status_code == 503
    monkeypatch.setattr(events, "publish_all", working)
    retried = await router.http.put("/agents/ana/presence", json=presence, headers=ANA)
    assert retried.status_code == 202
    retried = await router.http.post(f"/conversations/{conversation}/notes", json=note, headers=ANA)
    assert retried.status_code == 202
    ((key, status),) = await published(probe, AGENT_EVENTS, "workspace:req-kafka-01")
    assert (key, status.status) == ("ana", AgentStatus.ONLINE)
    ((key, added),) = await published(probe, CONVERSATION_EVENTS, "workspace:req-kafka-02")
    assert (key, added.note_id, added.text) == (conversation, "req-kafka-02", note["text"])
