"""Live updates: which agent hears of which event, and the hub that fans them out to an
agent's streams without ever waiting for a slow one."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from switchboard_common.consumer import Delivery
from switchboard_common.contract import (
    Channel,
    ContractModel,
    ConversationActivity,
    ConversationAssigned,
    ConversationQueued,
    ConversationRequeued,
    ConversationResolved,
    ConversationTransferred,
    DeliveryStatus,
    DeliveryUpdated,
    NoteAdded,
    Priority,
    ReplyRequested,
)
from switchboard_devkit.testing.builders import T0, delivery
from switchboard_devtools.testing.router_assignment import activity, state
from switchboard_router.assignment.model import RouteState, RouteStatus
from switchboard_router.metrics import LiveMetrics
from switchboard_router.workspace.live import (
    RESET,
    LiveFeed,
    LiveHub,
    LiveUpdate,
    assignment_updates,
    held_updates,
)

pytestmark = pytest.mark.unit


def decision(kind: type[Any], agent_id: str | None, **fields: Any) -> Any:
    return kind(
        conversation_id="c-1",
        customer_id="cu-1",
        channel=Channel.EMAIL,
        priority=Priority.NORMAL,
        agent_id=agent_id,
        queue="general",
        seq=2,
        decided_at=T0,
        **fields,
    )


def names(updates: Sequence[tuple[str, LiveUpdate]]) -> list[tuple[str, str]]:
    return [(agent, update.event) for agent, update in updates]


def test_an_offer_an_assignment_and_a_requeue_reach_the_agent_concerned() -> None:
    until = T0 + timedelta(seconds=30)
    offer = assignment_updates(decision(ConversationAssigned, "ana", offer_expires_at=until))
    assert names(offer) == [("ana", "offer")]
    assert offer[0][1].data == {
        "type": "offer",
        "conversation_id": "c-1",
        "offered_until": until.isoformat(),
        "queue": "general",
        "priority": "normal",
        "seq": 2,
    }
    assert names(assignment_updates(decision(ConversationAssigned, "ana"))) == [("ana", "assigned")]
    rejected = decision(
        ConversationRequeued, None, reason={"trigger": "rejected", "previous_agent_id": "ana"}
    )
    (taken,) = assignment_updates(rejected)
    assert taken[0] == "ana"
    assert (taken[1].event, taken[1].data["reason"]) == ("unassigned", "rejected")
    moved = decision(
        ConversationRequeued, None, reason={"trigger": "transferred", "from_agent_id": "bob"}
    )
    assert names(assignment_updates(moved)) == [("bob", "unassigned")]
    # Waiting in a queue concerns no agent.
    assert assignment_updates(decision(ConversationQueued, None)) == []


def test_conversation_events_reach_the_agent_holding_it_without_any_text() -> None:
    written = activity("c-1", kind="message", message_id="m-9", text="my card number is 4242")
    (message,) = held_updates(written, "ana")
    assert message == (
        "ana",
        LiveUpdate(
            "message",
            {"type": "message", "conversation_id": "c-1", "message_id": "m-9", "kind": "message"},
        ),
    )
    assert "4242" not in repr(message)
    assert held_updates(written, None) == []
    note = NoteAdded(note_id="n-1", conversation_id="c-1", agent_id="bob", text="secret", at=T0)
    assert names(held_updates(note, "ana")) == [("ana", "note")]
    assert "secret" not in repr(held_updates(note, "ana"))
    status_update = DeliveryUpdated(
        reply_id="r-1",
        conversation_id="c-1",
        channel=Channel.EMAIL,
        status=DeliveryStatus.DELIVERED,
        at=T0,
    )
    assert held_updates(status_update, "ana")[0][1].data["status"] == "delivered"
    resolved = ConversationResolved(conversation_id="c-1", at=T0)
    assert names(held_updates(resolved, "ana")) == [("ana", "unassigned")]
    transferred = ConversationTransferred(
        conversation_id="c-1", from_agent_id="ana", to_queue="billing", at=T0
    )
    # Told once, whether or not the routing state still names them.
    assert names(held_updates(transferred, "ana")) == [("ana", "unassigned")]
    assert names(held_updates(transferred, None)) == [("ana", "unassigned")]


def update(n: int) -> LiveUpdate:
    return LiveUpdate("message", {"type": "message", "conversation_id": f"c-{n}"})


async def test_the_hub_fans_out_to_every_stream_of_that_agent_only() -> None:
    hub = LiveHub(queue_size=8)
    ana_desk, ana_phone, bob = hub.open("ana"), hub.open("ana"), hub.open("bob")
    hub.publish("ana", update(1))
    hub.publish("nobody", update(2))
    assert await hub.next(ana_desk, 1.0) == update(1)
    assert await hub.next(ana_phone, 1.0) == update(1)
    # Nothing for bob: the heartbeat's turn (None), immediately once the wait is over.
    assert await hub.next(bob, 0.01) is None
    hub.close(ana_phone)
    assert hub.streams("ana") == 1
    hub.publish("ana", update(3))
    assert await hub.next(ana_desk, 1.0) == update(3)


async def test_a_stream_that_falls_behind_is_dropped_with_a_reset_and_never_blocks() -> None:
    registry = CollectorRegistry()
    hub = LiveHub(queue_size=2, metrics=LiveMetrics.create(registry))
    slow, fast = hub.open("ana"), hub.open("ana")
    for n in range(3):
        hub.publish("ana", update(n))  # returns at once though nobody reads the slow one
        assert await hub.next(fast, 1.0) == update(n)
    assert hub.streams("ana") == 1
    last = await hub.next(slow, 1.0)
    assert last == LiveUpdate(RESET, {"type": RESET, "reason": "too_slow"})
    hub.publish("ana", update(4))
    assert await hub.next(fast, 1.0) == update(4)
    hub.close(slow)  # the stream's own clean-up after its reset: counted once
    figures = {
        "open": registry.get_sample_value("switchboard_router_live_streams"),
        "ended": registry.get_sample_value(
            "switchboard_router_live_streams_ended_total", {"reason": "too_slow"}
        ),
        "queued": registry.get_sample_value(
            "switchboard_router_live_updates_total", {"event": "message"}
        ),
    }
    assert figures == {"open": 1.0, "ended": 1.0, "queued": 7.0}


async def test_stopping_ends_every_stream_even_one_waiting() -> None:
    hub = LiveHub(queue_size=2)
    stream = hub.open("ana")
    waiting = asyncio.ensure_future(hub.next(stream, 3600))
    await asyncio.sleep(0)
    runner = asyncio.ensure_future(hub.run())
    await asyncio.sleep(0)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert await waiting == LiveUpdate(RESET, {"type": RESET, "reason": "shutdown"})
    assert hub.streams("ana") == 0


def delivered(event: ContractModel, offset: int) -> Delivery:
    return delivery(event, "t", key="c", offset=offset)


async def test_the_feed_looks_up_holders_once_per_batch_and_skips_what_concerns_nobody() -> None:
    hub = LiveHub(queue_size=16)
    ana, bob = hub.open("ana"), hub.open("bob")
    lookups: list[list[str]] = []
    states = {
        "c-1": state("c-1", status=RouteStatus.ASSIGNED, agent_id="ana"),
        "c-2": state("c-2", status=RouteStatus.WAITING),
    }

    async def held_by(ids: Sequence[str]) -> Mapping[str, RouteState]:
        lookups.append(list(ids))
        return {i: states[i] for i in ids if i in states}

    def message(conversation_id: str, message_id: str) -> ConversationActivity:
        return activity(conversation_id, kind="message", message_id=message_id)

    reply = ReplyRequested(
        reply_id="r-1", conversation_id="c-3", agent_id="ana", text="hi", requested_at=T0
    )
    feed = LiveFeed(hub, held_by)
    batch = [
        delivered(message("c-1", "m-1"), 0),
        delivered(message("c-2", "m-2"), 1),
        delivered(message("c-1", "m-3"), 2),
        delivered(decision(ConversationAssigned, "bob"), 3),
        delivered(reply, 4),
    ]
    assert await feed(batch) == []
    assert lookups == [["c-1", "c-2"]]
    got = [await hub.next(ana, 1.0), await hub.next(ana, 1.0)]
    assert [u.data["message_id"] for u in got if u is not None] == ["m-1", "m-3"]
    assert await hub.next(ana, 0.01) is None
    assigned = await hub.next(bob, 1.0)
    assert assigned is not None
    assert assigned.event == "assigned"
    assert await hub.next(bob, 0.01) is None
