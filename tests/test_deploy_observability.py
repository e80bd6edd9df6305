"""The monitoring assets match the code: every Grafana dashboard loads and each panel's
PromQL names only metrics the services really export (checked against a scrape of the
running services), every alert rule has a runbook entry in docs/operations.md and
links to it (``runbook_url``), and every rule file's ``promtool test rules`` cases pass."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from switchboard_devkit.paths import repo_root
from switchboard_devkit.running.stack import Stack
from switchboard_devkit.servers.infra import Infra

DEPLOY = repo_root() / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((DEPLOY / "prometheus").glob("*.rules.yml"))
OPERATIONS = repo_root() / "docs" / "operations.md"
#: Series Prometheus itself makes.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
#: PromQL functions and keywords that look like metric names to a regex.
METRIC = re.compile(r"\b(switchboard_[a-z0-9_:]+|up|ALERTS)\b(?!\s*\()")


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets and template variables."""
    found = [t["expr"] for p in panels(dashboard) for t in p.get("targets", []) if "expr" in t]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict) and "query" in query:
            found.append(query["query"])
    return found


def recorded_names() -> set[str]:
    names: set[str] = set()
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(r["record"] for r in group["rules"] if "record" in r)
    return names


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def used_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is used (dashboard panels and alert/recording rules)."""
    used: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        for query in queries(json.loads(path.read_text())):
            for name in METRIC.findall(query):
                used.setdefault(name, set()).add(path.name)
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for name in METRIC.findall(rule["expr"]):
                    used.setdefault(name, set()).add(path.name)
    return used


@pytest.mark.unit
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_loads_with_unique_ids_and_queries_on_every_panel(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"]
    assert dashboard["title"].startswith("Switchboard")
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert METRIC.search(target["expr"]), (panel["title"], target["expr"])
            assert target["expr"].count("(") == target["expr"].count(")")


@pytest.mark.unit
def test_dashboards_are_unique_and_cover_router_ingest_webchat_and_consumer_lag() -> None:
    dashboards = [json.loads(p.read_text()) for p in DASHBOARDS]
    assert len({d["uid"] for d in dashboards}) == len(dashboards)
    everything = " ".join(q for d in dashboards for q in queries(d))
    for name in (
        "switchboard_router_queue_depth",
        "switchboard_router_assignments_total",
        "switchboard_router_offers_total",
        "switchboard_router_agent_load",
        "switchboard_router_agent_capacity",
        "switchboard_ingest_social_requests_total",
        "switchboard_email_messages_received_total",
        "switchboard_publish_seconds_bucket",
        "switchboard_consumer_lag_records",
        "switchboard_webchat_open_sockets",
        "switchboard_webchat_messages_accepted_total",
        "switchboard_webchat_messages_refused_total",
        "switchboard_webchat_reconnect_resends_total",
        "switchboard_webchat_replies_pushed_total",
    ):
        assert name in everything, name


@pytest.mark.unit
def test_every_alert_has_a_runbook_entry_in_operations_md() -> None:
    headings = set(re.findall(r"^#{2,4} `?([A-Za-z]+)`?\s*$", OPERATIONS.read_text(), re.MULTILINE))
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts, "no alert rules found"
    missing = sorted(alerts - headings)
    assert not missing, f"alerts without a runbook heading in docs/operations.md: {missing}"


RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.test.yml"))


@pytest.mark.unit
@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_every_rule_file_has_promtool_cases_that_pass(path: Path) -> None:
    """Each alert fires and resolves when its cases say (``promtool test rules``)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: Debian package prometheus; `make apt-test` installs it"
    result = subprocess.run(
        [promtool, "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.unit
def test_every_rule_file_has_its_promtool_cases() -> None:
    # A rule file's cases may be split by evaluation interval (``<rules>-kpis.test.yml``).
    assert {p.name.removesuffix(".test.yml").removesuffix("-kpis") for p in RULE_TESTS} == {
        p.name.removesuffix(".rules.yml") for p in RULE_FILES
    }


#: Where alerts link to: docs/operations.md on the default branch (Chart.yaml's home).
RUNBOOKS_URL = "https://github.com/switchboard/switchboard/blob/main/docs/operations.md"


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (lower case, punctuation
    dropped, spaces as hyphens)."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", markdown, re.MULTILINE):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return anchors


@pytest.mark.unit
def test_every_alert_links_its_runbook_entry() -> None:
    anchors = heading_anchors(OPERATIONS.read_text())
    # The slugs are GitHub's: lower case, hyphens for spaces.
    assert {"slabreaches", "rotate-secrets"} <= anchors
    rules = alert_rules()
    assert rules, "no alert rules found"
    for rule in rules:
        url = rule["annotations"].get("runbook_url")
        assert url == f"{RUNBOOKS_URL}#{rule['alert'].lower()}", (rule["alert"], url)
        assert url.partition("#")[2] in anchors, (rule["alert"], url)


def exported_names(exposition: str) -> set[str]:
    """Series names a service exports, including those of labelled metrics not yet set."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.update({f"{family.name}_total", f"{family.name}_created"})
        if family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created"))
    return names


@pytest.fixture(scope="module")
def scraped(infra: Infra) -> Iterator[dict[str, set[str]]]:
    """Every service as a process on the shared servers; their /metrics, by job name."""
    # A relay and a provider token make both ingest services send replies (the reply
    # metrics exist only then); nothing here is sent.
    replies = {"OUTBOUND_SMTP_URL": "smtp://127.0.0.1:9?tls=none", "TELEGRAM_BOT_TOKEN": "1:t"}
    stack = Stack(infra.kafka_bootstrap, infra.mongodb_url, extra_env=replies)
    try:
        stack.start()
        yield {
            name: exported_names(httpx.get(f"{stack.url(name)}/metrics", timeout=10).text)
            for name in stack.services
        }
    except BaseException:
        stack.dump_logs()
        raise
    finally:
        stack.stop()
        stack.remove_data()


@pytest.mark.integration
def test_every_metric_in_dashboards_and_rules_is_exported_by_a_running_service(
    scraped: dict[str, set[str]],
) -> None:
    assert set(scraped) == {"ingest-email", "ingest-social", "router", "sla-monitor", "webchat"}
    exported = set().union(*scraped.values())
    known = exported | recorded_names() | PROMETHEUS_SERIES
    used = used_metrics()
    assert len(used) > 30  # the extraction finds the dashboards' and rules' metrics
    unknown = {name: sorted(where) for name, where in used.items() if name not in known}
    assert not unknown, f"metrics used but exported by no service: {unknown}"


@pytest.mark.integration
def test_rules_select_metrics_on_the_job_that_exports_them(
    scraped: dict[str, set[str]],
) -> None:
    """An alert on {job="router"} must use a metric the router exports, and so on."""
    checked = 0
    for rule in alert_rules():
        for metric, job in re.findall(
            r'(switchboard_[a-z0-9_]+)\{[^}]*job="([a-z-]+)"', rule["expr"]
        ):
            checked += 1
            assert metric in scraped[job], (rule["alert"], job, metric)
    assert checked > 0
