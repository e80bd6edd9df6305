"""The SLA monitor running in this process for integration tests: start it with an
injected clock, wait for a condition, scrape its metrics (no test framework imports)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from switchboard_devkit.running.inprocess import free_port, running
from switchboard_sla_monitor.app import SlaMonitor, build
from switchboard_sla_monitor.settings import SlaMonitorSettings
from switchboard_sla_monitor.timesource import ManualClock

#: A scrape: (series name, its labels) -> value.
Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


@contextlib.asynccontextmanager
async def monitor(clock: ManualClock) -> AsyncIterator[tuple[str, SlaMonitor]]:
    """The monitor built from the environment, serving on a free port: (its URL, parts)."""
    settings = SlaMonitorSettings.load(http_port=free_port())
    runtime, parts = build(settings, clock=clock)
    async with running(runtime) as url:
        yield url, parts


async def eventually(check: Callable[[], object], timeout: float = 60.0) -> None:
    """Poll ``check`` (sync or async) until it is truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
