"""One contract for both survey stores: in memory (unit) and FerretDB (integration)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest

from switchboard_common.contract import Channel, FeedbackKind
from switchboard_devkit.testing.builders import T0
from switchboard_devkit.testing.real_database import STORES, real_database
from switchboard_router.timeline.survey_store import (
    InMemorySurveyStore,
    MongoSurveyStore,
    SurveyStore,
)
from switchboard_router.timeline.surveys import Survey

HOUR = timedelta(hours=1)


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SurveyStore]:
    if request.param == "memory":
        yield InMemorySurveyStore()
        return
    async with real_database(request) as db:
        mongo = MongoSurveyStore(db)
        await mongo.ensure_indexes()
        await mongo.ensure_indexes()  # idempotent at every start
        yield mongo


def survey(conversation_id: str, resolved_hours: int) -> Survey:
    resolved = T0 + resolved_hours * HOUR
    return Survey(
        conversation_id=conversation_id,
        customer_id="cu-1",
        channel=Channel.EMAIL,
        state="scheduled",
        kind=FeedbackKind.NPS,
        resolved_at=resolved,
        due_at=resolved + HOUR,
    )


async def test_due_surveys_come_longest_due_first_and_only_once_due(store: SurveyStore) -> None:
    await store.schedule([survey("cv-2", 2), survey("cv-1", 1), survey("cv-3", 5)])
    due = await store.due(T0 + 3 * HOUR, 10)
    assert [s.conversation_id for s in due] == ["cv-1", "cv-2"]
    assert due[0] == survey("cv-1", 1)
    assert [s.conversation_id for s in await store.due(T0 + 3 * HOUR, 1)] == ["cv-1"]


async def test_a_later_resolution_moves_an_unsent_survey_never_a_sent_one(
    store: SurveyStore,
) -> None:
    await store.schedule([survey("cv-1", 1), survey("cv-2", 1)])
    await store.settle([("survey:cv-1", T0 + 2 * HOUR, T0 + 9 * HOUR)], [])
    await store.schedule([survey("cv-1", 4), survey("cv-2", 4)])  # both resolved again
    found = await store.get(["survey:cv-1", "survey:cv-2", "survey:cv-9"])
    assert set(found) == {"survey:cv-1", "survey:cv-2"}
    sent = found["survey:cv-1"]
    assert (sent.state, sent.due_at, sent.sent_at, sent.answer_until) == (
        "sent",
        T0 + 2 * HOUR,
        T0 + 2 * HOUR,
        T0 + 9 * HOUR,
    )
    assert found["survey:cv-2"] == survey("cv-2", 4)


async def test_each_step_happens_once_from_the_state_before_it(store: SurveyStore) -> None:
    await store.schedule([survey("cv-1", 1), survey("cv-2", 1)])
    await store.settle([("survey:cv-1", T0 + 2 * HOUR, T0 + 9 * HOUR)], [("survey:cv-2", "erased")])
    # Replayed, and a skip of one already sent: nothing changes.
    await store.settle([("survey:cv-1", T0 + 3 * HOUR, T0 + 8 * HOUR)], [("survey:cv-1", "x")])
    await store.answered([("survey:cv-1", "m-2"), ("survey:cv-2", "m-3")])
    await store.answered([("survey:cv-1", "m-4")])  # the first answer stays
    found = await store.get(["survey:cv-1", "survey:cv-2"])
    assert found["survey:cv-1"] == replace(
        survey("cv-1", 1),
        state="answered",
        sent_at=T0 + 2 * HOUR,
        answer_until=T0 + 9 * HOUR,
        answer_message_id="m-2",
    )
    assert found["survey:cv-2"] == replace(survey("cv-2", 1), state="skipped", reason="erased")
    assert await store.due(T0 + 9 * HOUR, 10) == []
    # A skipped survey is scheduled again by a later resolution.
    await store.schedule([survey("cv-2", 6)])
    assert [s.conversation_id for s in await store.due(T0 + 9 * HOUR, 10)] == ["cv-2"]
