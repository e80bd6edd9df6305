"""The alerting assets shipped with the monitor: rule files pass ``promtool check`` and
every ``promtool test rules`` case (each alert fires and resolves when it should); the
dashboard and Alertmanager example refer only to things that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from switchboard_devkit.paths import repo_root
from switchboard_sla_monitor.metrics import SlaMetrics

DEPLOY = repo_root() / "deploy"
RULES = DEPLOY / "prometheus" / "sla-monitor.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "sla-monitor.test.yml"
#: The KPI recording rules' cases: hourly evaluation, in a file of their own.
KPI_RULE_TESTS = DEPLOY / "prometheus" / "tests" / "sla-monitor-kpis.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "sla-monitor.json"
KPI_DASHBOARD = DEPLOY / "grafana" / "dashboards" / "support-kpis.json"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.example.yml"
#: Metrics other services export that the SLA assets use (names fixed with their owners).
EXTERNAL = {"up", "ALERTS", "switchboard_router_queue_depth"}


def run(tool: str, package: str, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which(tool)
    assert binary, f"{tool} missing: Debian package {package}; `make apt-test` installs it"
    return subprocess.run(  # noqa: S603 - a packaged binary with our own file arguments
        [binary, *args], capture_output=True, text=True, timeout=300, check=False
    )


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return run("promtool", "prometheus", *args)


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return run("amtool", "prometheus-alertmanager", *args)


@pytest.mark.integration
def test_promtool_accepts_the_rule_files() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.integration
def test_every_promtool_rule_test_case_passes() -> None:
    result = promtool("test", "rules", str(RULE_TESTS), str(KPI_RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2, result.stdout


@pytest.mark.integration
def test_a_broken_expectation_makes_promtool_fail(tmp_path: Path) -> None:
    """The check above can fail: the same cases with one expectation flipped do."""
    broken = RULE_TESTS.read_text().replace(
        "      - eval_time: 20m\n        alertname: SlaBreaches\n        exp_alerts: []",
        "      - eval_time: 2m\n        alertname: SlaBreaches\n"
        "        exp_alerts: [{exp_labels: {}}]",
        1,
    )
    assert broken != RULE_TESTS.read_text()
    target = tmp_path / "tests" / "broken.test.yml"
    target.parent.mkdir()
    target.write_text(broken.replace("../sla-monitor.rules.yml", str(RULES)))
    result = promtool("test", "rules", str(target))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def alert_names() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())
    return {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def recorded_names() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


@pytest.mark.unit
def test_every_alert_has_promtool_cases_that_fire_and_resolve() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert alert_names() == firing
    assert alert_names() <= silent


def exported_names() -> set[str]:
    registry = CollectorRegistry()
    SlaMetrics.create(registry)
    names: set[str] = set()
    for family in registry.collect():
        names.update(sample.name for sample in family.samples)
        names.add(family.name)
    # Histogram series exist once labelled; their names are fixed by the client library.
    for family in registry.collect():
        if family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "sum", "count"))
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def used_metrics(text: str) -> set[str]:
    return set(re.findall(r"\b((?:switchboard_[a-z_:0-9]+)|up|ALERTS)\b", text))


@pytest.mark.unit
def test_rules_and_dashboard_use_only_metrics_that_exist() -> None:
    known = exported_names() | recorded_names() | EXTERNAL | {"switchboard_consumer_lag_records"}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert used_metrics(exprs) - known == set()
    assert used_metrics(RULES.read_text()) - known == set()
    assert "switchboard_router_queue_depth" in exprs


@pytest.mark.unit
def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "attainment",
        "breaches",
        "at-risk",
        "queue depth",
        "p90 by channel and priority",
    ):
        assert topic in titles
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    provisioning = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "switchboard.yml").read_text()
    )
    assert provisioning["providers"][0]["type"] == "file"


@pytest.mark.unit
def test_the_kpi_dashboard_shows_the_kpis_from_metrics_the_monitor_exports() -> None:
    dashboard = json.loads(KPI_DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    # The per-team row reads the router's figures (job="router"): those are checked
    # against a scrape of every service with the other dashboards.
    mine = " ".join(
        t["expr"]
        for p in dashboard["panels"]
        for t in p["targets"]
        if 'job="router"' not in t["expr"]
    )
    assert used_metrics(mine) - (exported_names() | recorded_names()) == set()
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("fcr", "within 24 h", "first responses within target", "csat", "nps"):
        assert topic in titles, topic
    assert "wall clock vs business time" in titles
    for name in (
        "switchboard_fcr_conversations_total",
        "switchboard_sla_achieved_wall_seconds_bucket",
        "switchboard_sla_achieved_business_seconds_bucket",
        "switchboard_feedback_score_bucket",
        "switchboard_kpi:resolved_within_24h:ratio_rate1d",
        "switchboard_kpi:first_response_within_target:ratio_rate1d",
    ):
        assert name in exprs, name
    # Ratings are grouped by agent group, channel or kind: never by anything per person.
    assert "customer" not in exprs
    assert "agent_id" not in exprs


@pytest.mark.unit
def test_alertmanager_routes_lead_to_defined_receivers() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    receivers = {r["name"] for r in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert {r["receiver"] for r in routes} <= receivers
    mentioned = set(re.findall(r"Sla[A-Za-z]+", yaml.safe_dump(config)))
    assert mentioned <= alert_names()


@pytest.mark.integration
def test_amtool_accepts_the_alertmanager_example() -> None:
    result = amtool("check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.integration
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=SlaMonitorDown", "severity=critical", "instance=a:8004"], "sre-pager"),
        (["alertname=SlaMonitorConsumerLag", "severity=warning"], "sre-pager"),
        (["alertname=SlaAttainmentBudgetBurnFast", "severity=critical"], "support-pager"),
        (["alertname=SlaBreaches", "severity=warning", "policy=email"], "support-ops"),
    ],
)
def test_alertmanager_routes_each_alert_to_its_team(labels: list[str], receiver: str) -> None:
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver
