"""The HTTP side every service shares: ``/healthz``, ``/readyz``, ``/metrics``.

``/healthz`` answers 200 while the process runs and its liveness checks pass (a
consumer stalled past its window fails it, see ``progress``: a restart is what helps
then). ``/readyz`` runs the
service's readiness checks (Kafka and MongoDB reachable, plus its own) concurrently with
a timeout and answers 200 or 503 with which check failed. ``/metrics`` serves the
service's Prometheus registry. ``instrument`` counts and times every request by route
template and status.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pymongo import AsyncMongoClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchboard_common.metrics import HttpMetrics

#: The route label of requests that match no route (their raw paths are unbounded).
UNMATCHED_ROUTE = "<unmatched>"
#: Method labels; anything else a client sends is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class ReadinessCheck:
    """A named check that raises (or returns False) when the service is not ready (or,
    among the liveness checks, not alive)."""

    name: str
    check: Callable[[], Awaitable[bool | None]]


def kafka_ready(broker: KafkaBroker, timeout: float = 2.0) -> ReadinessCheck:
    """Kafka answers a metadata request."""

    async def check() -> bool:
        return bool(await broker.ping(timeout=timeout))

    return ReadinessCheck("kafka", check)


def mongo_ready(client: AsyncMongoClient[Any]) -> ReadinessCheck:
    """The MongoDB-wire server answers ``ping``."""

    async def check() -> bool:
        await client.admin.command("ping")
        return True

    return ReadinessCheck("mongodb", check)


def ops_router(
    *,
    registry: CollectorRegistry,
    checks: Sequence[ReadinessCheck],
    liveness: Sequence[ReadinessCheck] = (),
    timeout: float = 3.0,
) -> APIRouter:
    """Routes for ``/healthz``, ``/readyz`` and ``/metrics`` (excluded from OpenAPI).

    ``liveness`` checks must be cheap and local (no dependency I/O): a failing one gets
    the process restarted."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        report = await _report(liveness, timeout)
        alive = all(r == "ok" for r in report.values())
        body: dict[str, object] = {"status": "ok" if alive else "failing"}
        if report:
            body["checks"] = report
        return JSONResponse(body, status_code=200 if alive else 503)

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        report = await _report(checks, timeout)
        ready = all(r == "ok" for r in report.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": report},
            status_code=200 if ready else 503,
        )

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


async def _report(checks: Sequence[ReadinessCheck], timeout: float) -> dict[str, str]:
    results = await asyncio.gather(*(_run(c, timeout) for c in checks))
    return dict(zip((c.name for c in checks), results, strict=True))


async def _run(check: ReadinessCheck, timeout: float) -> str:
    try:
        async with asyncio.timeout(timeout):
            result = await check.check()
    except TimeoutError:
        return "timeout"
    except Exception as error:  # noqa: BLE001 - any failure means "not ready"; say which
        return f"error: {type(error).__name__}"
    return "ok" if result is not False else "failed"


def ops_app(
    *,
    title: str,
    registry: CollectorRegistry,
    checks: Sequence[ReadinessCheck],
) -> FastAPI:
    """A minimal app with only the ops routes (services without an API of their own)."""
    app = FastAPI(title=title, openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(ops_router(registry=registry, checks=checks))
    return app


def instrument(app: FastAPI, *, registry: CollectorRegistry, service: str) -> None:
    """Count and time every request of ``app`` in ``registry`` (``HttpMetrics``)."""
    app.add_middleware(RequestMetrics, metrics=HttpMetrics.create(registry), service=service)


class RequestMetrics:
    """ASGI middleware behind ``instrument``.

    The route template is read after the request was handled: the router puts the
    matched route into the scope while routing.
    """

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics, service: str) -> None:
        self._app = app
        self._metrics = metrics
        self._service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        status = 500  # unless a response starts: an unhandled error becomes a 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self._app(scope, receive, send_observed)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            method = scope["method"] if scope["method"] in METHODS else "other"
            self._metrics.seconds.labels(self._service, route, method).observe(
                time.perf_counter() - started
            )
            self._metrics.requests.labels(self._service, route, method, str(status)).inc()


class HttpServer(uvicorn.Server):
    """uvicorn inside our own event loop; the service runner owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_server(app: Any, *, host: str, port: int, **options: Any) -> HttpServer:
    """An HTTP server for ``app`` that the service runner starts and stops; ``options``
    are more of uvicorn's settings (a WebSocket implementation and its frame limit)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=10,
        server_header=False,
        **options,
    )
    return HttpServer(config)
