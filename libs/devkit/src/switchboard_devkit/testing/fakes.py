"""In-memory stand-ins for unit tests of pure cores (checked against the real adapters by
the shared contract suites in the tests)."""

from __future__ import annotations

from collections.abc import Sequence

from switchboard_common.deadletter import Rejection


class InMemoryDeadLetters:
    """A ``DeadLetterSink`` that keeps rejections in a list."""

    def __init__(self) -> None:
        self.rejections: list[Rejection] = []

    async def publish(self, rejections: Sequence[Rejection]) -> None:
        self.rejections.extend(rejections)
