"""A real Prometheus (the Debian package's binary) scrapes the running monitor and
evaluates the shipped rules: an induced breach makes the alert go firing."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from switchboard_common.contract import CONVERSATION_ACTIVITY
from switchboard_devkit.paths import repo_root
from switchboard_devkit.running.inprocess import free_port, running
from switchboard_devkit.testing.kafka_probe import TopicProbe
from switchboard_devtools.testing.sla_monitor import activity
from switchboard_sla_monitor.app import build
from switchboard_sla_monitor.settings import SlaMonitorSettings
from switchboard_sla_monitor.timesource import ManualClock

pytestmark = pytest.mark.integration

RULES = repo_root() / "deploy" / "prometheus" / "sla-monitor.rules.yml"


@contextlib.contextmanager
def prometheus(directory: Path, monitor_port: int) -> Iterator[str]:
    """The Prometheus binary on a free 127.0.0.1 port with its own data directory."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: Debian package prometheus; `make apt-test` installs it"
    port = free_port()
    config = directory / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "sla-monitor",
                        "static_configs": [{"targets": [f"127.0.0.1:{monitor_port}"]}],
                    }
                ],
            }
        )
    )
    log = (directory / "prometheus.log").open("w")
    process = subprocess.Popen(  # noqa: S603 - the packaged binary with our own arguments
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


async def poll(http: httpx.AsyncClient, check: Any, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            result = await check(http)
            if result:
                return result
        await asyncio.sleep(0.5)
    raise AssertionError(f"Prometheus never showed: {what}")


async def test_an_induced_breach_makes_the_shipped_alert_fire(
    service_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    probe: TopicProbe,
    tmp_path: Path,
) -> None:
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SLA_MONITOR_EVALUATION_INTERVAL", "0.2")
    monkeypatch.setenv("SLA_MONITOR_GAUGE_INTERVAL", "0.2")
    t0 = datetime.now(UTC).replace(microsecond=0)
    clock = ManualClock(t0)
    settings = SlaMonitorSettings.load(http_port=free_port())
    runtime, _ = build(settings, clock=clock)
    cid = "conv-prometheus-1"

    async with running(runtime), httpx.AsyncClient(timeout=5.0) as http:
        with prometheus(tmp_path, settings.http_port) as prom:

            async def ready(h: httpx.AsyncClient) -> bool:
                return (await h.get(f"{prom}/-/ready")).status_code == 200

            await poll(http, ready, "ready")
            await probe.send(CONVERSATION_ACTIVITY, activity(cid, "m1", t0, kind="opened"), key=cid)

            async def query(h: httpx.AsyncClient, expr: str) -> list[dict[str, Any]]:
                answer = await h.get(f"{prom}/api/v1/query", params={"query": expr})
                result: list[dict[str, Any]] = answer.json()["data"]["result"]
                return result

            async def zero_breaches_scraped(h: httpx.AsyncClient) -> bool:
                found = await query(
                    h, 'switchboard_sla_breaches_total{policy="email",metric="first_response"}'
                )
                return bool(found) and found[0]["value"][1] == "0"

            # The clock runs and its breach counter exists at zero before the breach.
            await poll(http, zero_breaches_scraped, "the breach counter at zero")

            async def firing(h: httpx.AsyncClient) -> list[dict[str, Any]]:
                alerts = (await h.get(f"{prom}/api/v1/alerts")).json()["data"]["alerts"]
                return [
                    a
                    for a in alerts
                    if a["labels"]["alertname"] == "SlaBreaches" and a["state"] == "firing"
                ]

            assert await firing(http) == []
            # Email's first response is due after 24 h: let them pass.
            clock.set(t0 + timedelta(hours=24, seconds=1))
            (alert,) = await poll(http, firing, "SlaBreaches firing")
            assert alert["labels"] == {
                "alertname": "SlaBreaches",
                "severity": "warning",
                "channel": "email",
                "priority": "unknown",
                "queue": "none",
                "policy": "email",
                "metric": "first_response",
            }
            assert await query(http, 'ALERTS{alertname="SlaMonitorNotScraped"}') == []

            async def recorded_breached_clock(h: httpx.AsyncClient) -> bool:
                found = await query(
                    h, 'switchboard_sla:breached_clocks:max{policy="email",metric="first_response"}'
                )
                return [r["value"][1] for r in found] == ["1"]

            # The shipped recording rule sees the breached clock still running.
            await poll(http, recorded_breached_clock, "the breached clock recorded")
