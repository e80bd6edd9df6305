"""Where surveys wait for their delay and for an answer: the port, its MongoDB adapter
(collection ``surveys``, ``_id`` = ``survey:<conversation_id>``, index: state, due_at)
and an in-memory one for unit tests. The durable timer of surveys: a restart finds every
scheduled survey here, and every step is a conditional update by ``_id``, so replaying
one changes nothing twice. Each method is one bulk round trip."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from switchboard_common.bulk import find_by_ids, insert_each
from switchboard_common.contract import Channel, FeedbackKind
from switchboard_common.mongo import Document
from switchboard_router.timeline.surveys import Survey, SurveyState

#: Surveys not sent yet, which a later resolution may schedule again.
UNSENT = ["scheduled", "skipped"]


class SurveyStore(Protocol):
    """What surveys persist (see ``MongoSurveyStore`` for each method's contract)."""

    async def ensure_indexes(self) -> None: ...

    async def schedule(self, surveys: Sequence[Survey]) -> None: ...

    async def due(self, now: datetime, limit: int) -> list[Survey]: ...

    async def get(self, survey_ids: Sequence[str]) -> dict[str, Survey]: ...

    async def settle(
        self, sent: Sequence[tuple[str, datetime, datetime]], skipped: Sequence[tuple[str, str]]
    ) -> None: ...

    async def answered(self, answers: Sequence[tuple[str, str]]) -> None: ...


class InMemorySurveyStore:
    """The store in a dict, for unit tests of the shell."""

    def __init__(self) -> None:
        self.surveys: dict[str, Survey] = {}

    async def ensure_indexes(self) -> None:
        return None

    async def schedule(self, surveys: Sequence[Survey]) -> None:
        for survey in surveys:
            known = self.surveys.get(survey.survey_id)
            if known is None or known.state in UNSENT:
                self.surveys[survey.survey_id] = survey

    async def due(self, now: datetime, limit: int) -> list[Survey]:
        due = [s for s in self.surveys.values() if s.state == "scheduled" and s.due_at <= now]
        return sorted(due, key=lambda s: s.due_at)[:limit]

    async def get(self, survey_ids: Sequence[str]) -> dict[str, Survey]:
        return {i: self.surveys[i] for i in survey_ids if i in self.surveys}

    async def settle(
        self, sent: Sequence[tuple[str, datetime, datetime]], skipped: Sequence[tuple[str, str]]
    ) -> None:
        for survey_id, at, until in sent:
            self._step(survey_id, "scheduled", "sent", sent_at=at, answer_until=until)
        for survey_id, reason in skipped:
            self._step(survey_id, "scheduled", "skipped", reason=reason)

    async def answered(self, answers: Sequence[tuple[str, str]]) -> None:
        for survey_id, message_id in answers:
            self._step(survey_id, "sent", "answered", answer_message_id=message_id)

    def _step(self, survey_id: str, before: SurveyState, after: SurveyState, **fields: Any) -> None:
        known = self.surveys.get(survey_id)
        if known is not None and known.state == before:
            self.surveys[survey_id] = dataclasses.replace(known, state=after, **fields)


class MongoSurveyStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.surveys = db["surveys"]

    async def ensure_indexes(self) -> None:
        await self.surveys.create_index(
            [("state", ASCENDING), ("due_at", ASCENDING)], name="due_order"
        )

    async def schedule(self, surveys: Sequence[Survey]) -> None:
        """Schedule each survey, or move its due time to its latest resolution; one
        already sent (or answered) stays as it is: once per conversation. An insert, then
        for those that existed a conditional update (no upserts: FerretDB v1 answers a
        bulk upsert that hits an existing ``_id`` with a reply pymongo cannot read)."""
        latest = [{"_id": s.survey_id, **_document(s)} for s in surveys]
        latest = list({d["_id"]: d for d in latest}.values())
        taken = await insert_each(self.surveys, latest)
        await _write(
            self,
            [
                UpdateOne(
                    {"_id": latest[i]["_id"], "state": {"$in": UNSENT}},
                    {"$set": {k: v for k, v in latest[i].items() if k != "_id"}},
                )
                for i in sorted(taken)
            ],
        )

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
    if operations:
        await store.surveys.bulk_write(list(operations), ordered=False)


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
