"""docs/contract.md, the public contract, says what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from switchboard_common.contract.topics import TOPICS
from switchboard_devkit.paths import repo_root
from switchboard_devkit.running.processes import KNOWN_PORTS
from switchboard_ingest_email.settings import IngestEmailSettings
from switchboard_ingest_social.settings import IngestSocialSettings
from switchboard_router.settings import RouterSettings
from switchboard_sla_monitor.settings import SlaMonitorSettings
from switchboard_webchat.settings import WebchatSettings

pytestmark = pytest.mark.unit

CONTRACT = repo_root() / "docs" / "contract.md"


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows of the first Markdown table after ``heading``, cells stripped of backticks."""
    section = text.split(heading, 1)[1]
    rows: list[list[str]] = []
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("`", "") for c in line.strip("|").split("|")]
            if not set(cells[0]) <= {"-", " "}:
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # without the header row


def _topics(path: Path) -> dict[str, set[str]]:
    rows = _table(path.read_text(), "## Kafka topics")
    return {row[0]: {t.strip() for t in row[2].split(",")} for row in rows}


def test_every_public_topic_and_event_type_in_the_code_is_in_the_contract() -> None:
    documented = _topics(CONTRACT)
    for topic in TOPICS:
        assert topic.name in documented, f"{topic.name} is not in docs/contract.md"
        assert set(topic.types) == documented[topic.name], topic.name
    assert set(documented) == {t.name for t in TOPICS}


def test_the_contract_ports_are_the_services_defaults() -> None:
    rows = _table(CONTRACT.read_text(), "## Ports")
    ports = {(row[0], int(row[1])) for row in rows}
    defaults = {
        ("ingest-email", IngestEmailSettings.model_fields["smtp_port"].default),
        ("ingest-email", IngestEmailSettings.model_fields["http_port"].default),
        ("ingest-social", IngestSocialSettings.model_fields["http_port"].default),
        ("router", RouterSettings.model_fields["http_port"].default),
        ("sla-monitor", SlaMonitorSettings.model_fields["http_port"].default),
        ("webchat", WebchatSettings.model_fields["http_port"].default),
    }
    assert defaults <= ports


def test_the_contract_http_ports_are_those_make_run_and_the_stacks_use() -> None:
    rows = _table(CONTRACT.read_text(), "## Ports")
    http = {row[0]: int(row[1]) for row in rows if row[2].startswith("HTTP")}
    assert http == {name: port for name, (_, port) in KNOWN_PORTS.items()}


def test_the_contract_http_routes_are_served() -> None:
    from switchboard_devtools.docs import openapi_documents

    text = CONTRACT.read_text()
    routes = set(re.findall(r"`GET (/[^`?]*)", text))
    documents = openapi_documents()
    served = set(documents["router"]["paths"]) | set(documents["sla-monitor"]["paths"])
    assert routes, "the contract names no route"
    assert routes <= served, routes - served
    assert "/reports/kpis" in routes
