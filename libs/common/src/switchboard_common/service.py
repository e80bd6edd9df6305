"""Running a service process: start its parts, serve until told to stop, stop cleanly.

A service's ``__main__`` builds its settings, configures logging and calls
``run_service`` with an async context manager that starts its parts (broker, database,
SMTP server, ...) on enter and stops them on exit. SIGTERM and SIGINT stop the service
gracefully: HTTP servers stop accepting, in-flight work finishes, the broker commits and
closes. A background task that crashes stops the service with exit status 1, so the
orchestrator restarts it instead of leaving a half-alive process.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from faststream.kafka import KafkaBroker

from switchboard_common.http import HttpServer, http_server
from switchboard_common.logging import get_logger

log = get_logger(__name__)

BackgroundTask = Callable[[], Coroutine[Any, Any, None]]


async def run_service(
    service: str,
    lifespan: AbstractAsyncContextManager[Any],
    *,
    servers: Sequence[HttpServer] = (),
    background: Sequence[BackgroundTask] = (),
    stop: asyncio.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or ``stop`` is set); return the process exit status."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Not possible outside the main thread (tests drive `stop` instead).
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    status = 0
    async with lifespan:
        tasks = [asyncio.create_task(s.serve(), name=f"http:{s.config.port}") for s in servers]
        tasks += [asyncio.create_task(job(), name=job.__name__) for job in background]
        stopper = asyncio.create_task(stop.wait(), name="stop")
        log.info("service started", service=service, ports=[s.config.port for s in servers])
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is stopper:
                continue
            error = task.exception() if not task.cancelled() else None
            log.error(
                "background task ended, stopping service",
                task=task.get_name(),
                error_type=type(error).__name__ if error else None,
                exc_info=error,
            )
            status = 1
        log.info("service stopping")
        for server in servers:
            server.should_exit = True
        for task in tasks:
            if not task.done() and not task.get_name().startswith("http:"):
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stopper.cancel()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)
    log.info("service stopped", status=status)
    return status


@dataclass
class Runtime:
    """Everything a service process runs, assembled by the service's ``build`` function.

    ``run_runtime`` starts it in this order: ``on_start`` hooks (e.g. index creation,
    SMTP listener), the Kafka broker (producer and subscribers), the HTTP server and the
    background tasks; and stops it in reverse, with ``on_stop`` hooks last.
    """

    service: str
    http_app: Any
    http_host: str
    http_port: int
    broker: KafkaBroker | None = None
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    background: list[BackgroundTask] = field(default_factory=list)


async def run_runtime(runtime: Runtime, *, stop: asyncio.Event | None = None) -> int:
    """Run a service until SIGTERM/SIGINT or ``stop``; return the exit status.

    Tests run services in-process with a ``stop`` event; ``__main__`` passes none.
    """

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        try:
            for hook in runtime.on_start:
                await hook()
            if runtime.broker is not None:
                await runtime.broker.start()
            yield
        finally:
            if runtime.broker is not None:
                await runtime.broker.stop()
            for hook in reversed(runtime.on_stop):
                with contextlib.suppress(Exception):
                    await hook()

    server = http_server(runtime.http_app, host=runtime.http_host, port=runtime.http_port)
    return await run_service(
        runtime.service,
        lifespan(),
        servers=[server],
        background=runtime.background,
        stop=stop,
    )
