"""The router's transport shell: every topic it reads and writes is wired from here."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from switchboard_common.http import kafka_ready, mongo_ready, ops_router
from switchboard_common.kafka import EventPublisher, make_broker
from switchboard_common.mongo import database, make_mongo_client
from switchboard_common.progress import ConsumerWatch
from switchboard_common.service import Runtime
from switchboard_router import assignment, timeline
from switchboard_router.metrics import RouterMetrics
from switchboard_router.settings import RouterSettings
from switchboard_router.stage import RouterContext, StageParts


def build(settings: RouterSettings) -> tuple[Runtime, RouterContext, dict[str, StageParts]]:
    """Assemble the router: clients, the three stages and the HTTP app."""
    registry = CollectorRegistry()
    broker = make_broker(settings)
    client = make_mongo_client(settings)
    metrics = RouterMetrics.create(registry)
    consumers = ConsumerWatch(
        metrics.consumer,
        stall_after=settings.consumer_stall_seconds,
        interval=settings.consumer_lag_interval_seconds,
    )
    ctx = RouterContext(
        settings=settings,
        broker=broker,
        client=client,
        db=database(client, settings),
        publisher=EventPublisher(broker, settings.topics, settings.service_name),
        registry=registry,
        metrics=metrics,
        consumers=consumers,
    )
    stages = {"timeline": timeline.wire(ctx), "assignment": assignment.wire(ctx)}

    app = FastAPI(
        title="Switchboard router",
        version="1.0",
        description="Read API of the unified timeline, the queue and the agents.",
    )
    app.include_router(
        ops_router(
            registry=registry,
            checks=[kafka_ready(broker), mongo_ready(client)],
            liveness=[consumers.liveness_check()],
        )
    )
    runtime = Runtime(
        service=settings.service_name,
        http_app=app,
        http_host=settings.http_host,
        http_port=settings.http_port,
        broker=broker,
        background=[consumers.run],
    )
    for parts in stages.values():
        for router in parts.routers:
            app.include_router(router)
        runtime.on_start.extend(parts.on_start)
        runtime.on_stop.extend(parts.on_stop)
        runtime.background.extend(parts.background)

    async def close_client() -> None:
        await client.close()

    runtime.on_stop.append(close_client)
    return runtime, ctx, stages
