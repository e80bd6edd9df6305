"""The generated integrator documents are complete and internally consistent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchboard_common.contract.topics import EVENT_TYPES, TOPICS
from switchboard_devkit.paths import repo_root

pytestmark = pytest.mark.unit

DOCS = repo_root() / "docs"


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_asyncapi_describes_every_public_topic_and_event_type_with_resolvable_refs() -> None:
    document = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
    assert document["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in document["channels"].values()}
    assert {t.name for t in TOPICS} <= addresses
    assert set(EVENT_TYPES) <= set(document["components"]["messages"])
    for ref in refs(document):
        assert ref.startswith("#/"), ref
        resolve(document, ref)  # raises KeyError when dangling
    message = document["components"]["messages"]["support.conversation.assigned"]
    assert message["headers"]["properties"]["ce_type"]["const"] == "support.conversation.assigned"
    assert message["bindings"]["kafka"]["key"]["description"] == "conversation_id"
    payload = resolve(document, message["payload"]["$ref"])
    assert "seq" in payload["properties"]
    receivers = {
        op["bindings"]["kafka"]["groupId"]["const"]
        for op in document["operations"].values()
        if op["action"] == "receive" and "bindings" in op
    }
    assert {"router-agents", "router-assignment", "sla-monitor"} <= receivers


@pytest.mark.parametrize(
    ("name", "paths"),
    [
        ("ingest-social", {"/webhooks/meta", "/webhooks/x", "/webhooks/telegram"}),
        ("router", {"/queue", "/agents"}),
    ],
)
def test_openapi_documents_exist_for_the_webhook_and_read_apis(name: str, paths: set[str]) -> None:
    document = json.loads((DOCS / "openapi" / f"{name}.json").read_text())
    assert document["openapi"].startswith("3.")
    assert paths <= set(document["paths"])


def test_generated_documents_match_the_code() -> None:
    """What `make docs-check` checks, also in the test run."""
    from switchboard_devtools.docs import render

    stale = [
        name
        for name, content in render().items()
        if not Path(DOCS / name).exists() or (DOCS / name).read_text() != content
    ]
    assert not stale, f"run `make docs`: {stale}"
