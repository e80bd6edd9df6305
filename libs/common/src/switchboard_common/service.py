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

#: Seconds background tasks get to finish once cancelled before the service gives up on
#: them (logging where each one is stuck) and exits anyway.
STOP_GRACE_SECONDS = 30.0
#: Seconds between repeated cancellations of a task that is still running.
RECANCEL_SECONDS = 1.0


async def run_service(
    service: str,
    lifespan: AbstractAsyncContextManager[Any],
    *,
    servers: Sequence[HttpServer] = (),
    background: Sequence[BackgroundTask] = (),
    stop: asyncio.Event | None = None,
    stop_grace: float = STOP_GRACE_SECONDS,
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
        if not await stop_tasks(tasks, grace=stop_grace):
            status = 1
        stopper.cancel()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)
    log.info("service stopped", status=status)
    return status


async def stop_tasks(tasks: Sequence[asyncio.Task[Any]], *, grace: float) -> bool:
    """Cancel the background tasks (HTTP servers stop by themselves) and wait for all of
    them; return False if some were still running after ``grace`` seconds.

    A cancellation can be lost: on Python 3.11 ``asyncio.wait_for`` (used by the database
    driver on every socket read) swallows it when the awaited result arrives at the same
    moment, and a ``while True`` loop then simply carries on. So a task that is still
    running is cancelled again every ``RECANCEL_SECONDS``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            if not task.get_name().startswith("http:"):
                task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.error(
                "tasks did not stop in time, leaving them behind",
                seconds=grace,
                tasks=[where(t) for t in sorted(pending, key=lambda t: t.get_name())],
            )
            return False
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_SECONDS, remaining))
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: a crash was already reported when it stopped
    return True


def where(task: asyncio.Task[Any]) -> str:
    """A task's name and the code location it is waiting at (no values: no data)."""
    frames: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is not None:
            frames.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return f"{task.get_name()} at " + " > ".join(frames[-4:])


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
    #: More of uvicorn's settings, e.g. ``ws`` and ``ws_max_size`` for a service that
    #: serves WebSockets (the others keep uvicorn's defaults).
    http_options: dict[str, Any] = field(default_factory=dict)


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

    server = http_server(
        runtime.http_app,
        host=runtime.http_host,
        port=runtime.http_port,
        **runtime.http_options,
    )
    return await run_service(
        runtime.service,
        lifespan(),
        servers=[server],
        background=runtime.background,
        stop=stop,
    )
