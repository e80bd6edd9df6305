"""Stopping a service: background loops end even when a cancellation is lost, and a task
that will not stop cannot hold the process forever."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from structlog.testing import capture_logs

from switchboard_common.service import run_service, where

pytestmark = pytest.mark.unit


async def test_a_loop_that_lost_its_cancellation_still_stops() -> None:
    # What Python 3.11's asyncio.wait_for does when the awaited read completes at the
    # moment the task is cancelled: the CancelledError never reaches the loop.
    cancels = 0

    async def evaluation_loop() -> None:
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                cancels += 1
                if cancels == 1:
                    continue  # swallowed, like the race does
                raise

    stop = asyncio.Event()
    service = asyncio.create_task(
        run_service("t", contextlib.AsyncExitStack(), background=[evaluation_loop], stop=stop)
    )
    await asyncio.sleep(0.05)
    stop.set()
    status = await asyncio.wait_for(service, timeout=10)
    assert status == 0
    assert cancels == 2


async def test_a_task_that_never_stops_is_named_and_left_behind_after_the_grace() -> None:
    release = asyncio.Event()

    async def stubborn_loop() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    stop = asyncio.Event()
    stop.set()
    with capture_logs() as logs:
        status = await asyncio.wait_for(
            run_service(
                "t",
                contextlib.AsyncExitStack(),
                background=[stubborn_loop],
                stop=stop,
                stop_grace=0.3,
            ),
            timeout=10,
        )
    release.set()
    assert status == 1
    (stuck,) = [e for e in logs if e["event"] == "tasks did not stop in time, leaving them behind"]
    assert stuck["tasks"][0].startswith("stubborn_loop at stubborn_loop:")


async def test_where_names_the_awaits_down_to_the_innermost() -> None:
    gate = asyncio.Event()

    async def inner() -> None:
        await gate.wait()

    async def outer() -> None:
        await inner()

    task = asyncio.create_task(outer(), name="outer-task")
    await asyncio.sleep(0)
    try:
        assert where(task).startswith("outer-task at outer:")
        assert "> inner:" in where(task)
    finally:
        gate.set()
        await task
