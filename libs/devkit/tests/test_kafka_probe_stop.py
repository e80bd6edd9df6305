"""Stopping a probe's consumer while the broker is away never cancels the caller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchboard_devkit.testing.kafka_probe import stop_consumer

pytestmark = pytest.mark.unit


class FetcherCancelledOnClose:
    """aiokafka's behaviour when closed during an outage: its own fetch task's
    cancellation comes out of ``stop()``."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def stop(self) -> None:
        await asyncio.sleep(self.delay)
        raise asyncio.CancelledError


async def test_the_fetchers_own_cancellation_does_not_reach_the_caller() -> None:
    consumer: Any = FetcherCancelledOnClose()
    await stop_consumer(consumer)  # returns: the caller goes on


async def test_the_callers_own_cancellation_still_propagates() -> None:
    consumer: Any = FetcherCancelledOnClose(delay=10.0)
    stopping = asyncio.create_task(stop_consumer(consumer))
    await asyncio.sleep(0.05)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
