"""The router's /metrics over real HTTP, on real Kafka and FerretDB: the standard process
and GC collectors, switchboard_build_info, and every request counted and timed under its
route template (never the raw path, which carries a customer id) and status code."""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator
from importlib.metadata import version

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from switchboard_common.contract import INBOUND
from switchboard_common.http import UNMATCHED_ROUTE
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.router_timeline import (
    RunningRouter,
    eventually,
    inbound,
    running_router,
)
from switchboard_router.timeline.identity import identity_of

pytestmark = pytest.mark.integration

TIMELINE = "/customers/{customer_id}/timeline"


@pytest.fixture
async def router(service_env: dict[str, str]) -> AsyncIterator[RunningRouter]:
    async with running_router(service_env) as handle:
        yield handle


async def scrape(router: RunningRouter) -> dict[str, list[Sample]]:
    """Samples of the router's /metrics, by sample name."""
    response = await router.http.get("/metrics")
    assert response.status_code == 200
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def requests(samples: dict[str, list[Sample]], **labels: str) -> float:
    """switchboard_http_requests_total summed over the series matching ``labels``."""
    return sum(
        s.value
        for s in samples.get("switchboard_http_requests_total", [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_metrics_carry_the_process_gc_and_build_info(router: RunningRouter) -> None:
    samples = await scrape(router)
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "python_gc_collections_total",
        "python_info",
    ):
        assert name in samples, name
    (build,) = samples["switchboard_build_info"]
    assert build.value == 1
    assert build.labels["service"] == "router"
    assert build.labels["version"] == version("switchboard-router")
    assert build.labels["python"] == platform.python_version()
    assert build.labels["commit"]


async def test_requests_are_counted_by_route_template_and_status(
    router: RunningRouter, probe: TopicProbe
) -> None:
    message = inbound("m-metrics-1", sender="ana@example.com", subject="Parcel")
    await probe.send(INBOUND, message, key=identity_of(message))
    found = await eventually(lambda: router.customer_of("email:ana@example.com"))
    assert found is not None
    customer_id = found["customer_id"]
    auth = router.admin

    for _ in range(2):
        response = await router.http.get(f"/customers/{customer_id}/timeline", headers=auth)
        assert response.status_code == 200
    assert (await router.http.get("/customers/cu-nope/timeline", headers=auth)).status_code == 404
    assert (await router.http.get(f"/no/such/{customer_id}", headers=auth)).status_code == 404
    # The harness sends the read token: an admin route refuses it.
    assert (await router.http.post("/admin/merges", json={})).status_code == 403

    samples = await scrape(router)
    assert requests(samples, route=TIMELINE, method="GET", status="200") == 2
    assert requests(samples, route=TIMELINE, method="GET", status="404") == 1
    assert requests(samples, route=UNMATCHED_ROUTE, method="GET", status="404") == 1
    # Refused before routing: counted without a route, so probes learn no route names.
    assert requests(samples, route=UNMATCHED_ROUTE, method="POST", status="403") == 1
    assert requests(samples, service="router", route="/readyz", status="200") >= 1  # start-up
    latency = [
        s
        for s in samples["switchboard_http_request_duration_seconds_count"]
        if s.labels["route"] == TIMELINE
    ]
    assert [s.value for s in latency] == [3]
    # Ids never become labels: the raw paths appear nowhere.
    labels = {v for series in samples.values() for s in series for v in s.labels.values()}
    assert not [v for v in labels if customer_id in v or "cu-nope" in v]
