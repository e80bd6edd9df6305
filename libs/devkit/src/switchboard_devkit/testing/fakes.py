"""In-memory stand-ins for unit tests of pure cores (checked against the real adapters by
the shared contract suites in the tests)."""

from __future__ import annotations

from collections.abc import Sequence

from switchboard_common.contract import DeliveryUpdated
from switchboard_common.deadletter import Rejection
from switchboard_common.kafka import Outgoing


class InMemoryDeadLetters:
    """A ``DeadLetterSink`` that keeps rejections in a list."""

    def __init__(self) -> None:
        self.rejections: list[Rejection] = []

    async def publish(self, rejections: Sequence[Rejection]) -> None:
        self.rejections.extend(rejections)


class Published:
    """A ``Publisher`` that keeps what it was given (a reply dispatcher's statuses; Kafka
    itself is exercised by the e2e tests)."""

    def __init__(self) -> None:
        self.items: list[Outgoing] = []

    async def publish_all(self, items: Sequence[Outgoing]) -> object:
        self.items.extend(items)
        return None

    def statuses(self) -> list[DeliveryUpdated]:
        return [i.event for i in self.items if isinstance(i.event, DeliveryUpdated)]
