"""Where surveys wait for their delay and for an answer: collection ``surveys`` (``_id`` =
``survey:<conversation_id>``, index: state, due_at). The durable timer of surveys: a
restart finds every scheduled survey here, and every step is a conditional update by
``_id``, so replaying one changes nothing twice. Each method is one bulk round trip."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from switchboard_common.bulk import find_by_ids
from switchboard_common.contract import Channel, FeedbackKind
from switchboard_common.mongo import Document
from switchboard_router.timeline.surveys import Survey

#: Surveys not sent yet, which a later resolution may schedule again.
UNSENT = ["scheduled", "skipped"]


class MongoSurveyStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.surveys = db["surveys"]

    async def ensure_indexes(self) -> None:
        await self.surveys.create_index(
            [("state", ASCENDING), ("due_at", ASCENDING)], name="due_order"
        )

    async def schedule(self, surveys: Sequence[Survey]) -> None:
        """Schedule each survey, or move its due time to its latest resolution; one
        already sent (or answered) stays as it is: once per conversation."""
        operations = [
            UpdateOne(
                {"_id": s.survey_id, "state": {"$in": UNSENT}},
                {"$set": _document(s)},
                upsert=True,
            )
            for s in {s.survey_id: s for s in surveys}.values()
        ]
        await _write(self, operations)

    async def due(self, now: datetime, limit: int) -> list[Survey]:
        """Scheduled surveys due by ``now``, the longest due first (one indexed read)."""
        cursor = (
            self.surveys.find({"state": "scheduled", "due_at": {"$lte": now}})
            .sort("due_at", ASCENDING)
            .limit(limit)
        )
        return [_survey(d) async for d in cursor]

    async def get(self, survey_ids: Sequence[str]) -> dict[str, Survey]:
        found = await find_by_ids(self.surveys, survey_ids)
        return {key: _survey(doc) for key, doc in found.items()}

    async def settle(
        self, sent: Sequence[tuple[str, datetime, datetime]], skipped: Sequence[tuple[str, str]]
    ) -> None:
        """Record surveys handed to the sender (id, sent at, answers until) and those not
        sent (id, reason); only scheduled ones change."""
        operations = [
            UpdateOne(
                {"_id": survey_id, "state": "scheduled"},
                {"$set": {"state": "sent", "sent_at": at, "answer_until": until}},
            )
            for survey_id, at, until in sent
        ] + [
            UpdateOne(
                {"_id": survey_id, "state": "scheduled"},
                {"$set": {"state": "skipped", "reason": reason}},
            )
            for survey_id, reason in skipped
        ]
        await _write(self, operations)

    async def answered(self, answers: Sequence[tuple[str, str]]) -> None:
        """Record each survey's answer (id, message id); the first answer stays."""
        operations = [
            UpdateOne(
                {"_id": survey_id, "state": "sent"},
                {"$set": {"state": "answered", "answer_message_id": message_id}},
            )
            for survey_id, message_id in answers
        ]
        await _write(self, operations)


async def _write(store: MongoSurveyStore, operations: Sequence[UpdateOne]) -> None:
    if not operations:
        return
    try:
        await store.surveys.bulk_write(list(operations), ordered=False)
    except BulkWriteError as error:
        # A duplicate key is an upsert whose filter missed a survey already sent: it
        # stays as it is (that is the point); anything else is a real failure.
        if any(e.get("code") != 11000 for e in error.details.get("writeErrors", [])):
            raise


def _document(survey: Survey) -> dict[str, Any]:
    return {
        "conversation_id": survey.conversation_id,
        "customer_id": survey.customer_id,
        "channel": survey.channel.value,
        "state": survey.state,
        "kind": survey.kind.value,
        "resolved_at": survey.resolved_at,
        "due_at": survey.due_at,
        "reason": survey.reason,
    }


def _survey(document: Document) -> Survey:
    return Survey(
        conversation_id=str(document["conversation_id"]),
        customer_id=str(document["customer_id"]),
        channel=Channel(document["channel"]),
        state=document["state"],
        kind=FeedbackKind(document["kind"]),
        resolved_at=document["resolved_at"],
        due_at=document["due_at"],
        sent_at=document.get("sent_at"),
        answer_until=document.get("answer_until"),
        answer_message_id=document.get("answer_message_id"),
        reason=document.get("reason"),
    )
