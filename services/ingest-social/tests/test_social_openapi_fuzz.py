"""Schema-driven fuzzing of the webhook API (schemathesis + hypothesis).

Requests are generated from the service's own OpenAPI document, positive (valid by the
schema) and negative (violating it), half of them signed as the provider signs so they
reach parsing, normalisation and publishing. They are sent over real HTTP to the service
running as a separate process on real Kafka. Property: no answer is a 5xx (the
documented 503 means Kafka is unavailable, which it is not here), and every status is
one the document declares.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode

from switchboard_devkit.running.processes import ServiceProcess, discover_services
from switchboard_devtools.testing.social import load_sample, signed_headers
from switchboard_ingest_social.app import build
from switchboard_ingest_social.settings import IngestSocialSettings

pytestmark = pytest.mark.integration


def _document() -> dict[str, Any]:
    # Building the app does no I/O; development secrets suffice to render the document.
    _, parts = build(IngestSocialSettings.load(environment="dev", accounts_file=None))
    return parts.app.openapi()


SCHEMA = schemathesis.openapi.from_dict(_document())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations() if isinstance(result, Ok)]
PROVIDERS = {"/webhooks/meta": "meta", "/webhooks/x": "x", "/webhooks/telegram": "telegram"}
SAMPLES = {
    "meta": ["whatsapp_text", "whatsapp_image", "messenger_postback", "instagram_story_reply"],
    "x": ["x_dm"],
    "telegram": ["telegram_message", "telegram_edited_message"],
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


@pytest.fixture
def social_process(social_env: dict[str, str]) -> Iterator[ServiceProcess]:
    (spec,) = [s for s in discover_services() if s.name == "ingest-social"]
    env = {
        **os.environ,
        **social_env,
        "INGEST_SOCIAL_MAX_BODY_BYTES": str(1024 * 1024),
        # Generous CRC limits, so generated checks reach the token rule (429 is documented).
        "INGEST_SOCIAL_CRC_PER_CLIENT_PER_MINUTE": "100000",
        "INGEST_SOCIAL_CRC_PER_MINUTE": "100000",
    }
    process = ServiceProcess(spec, env)
    process.start()
    try:
        process.wait_ready()
        yield process
    finally:
        status = process.stop()
        assert status == 0, process.tail()


def test_the_document_describes_every_webhook() -> None:
    labels = sorted(op.label for op in OPERATIONS)
    assert labels == [
        "GET /webhooks/meta",
        "GET /webhooks/x",
        "POST /webhooks/meta",
        "POST /webhooks/telegram",
        "POST /webhooks/x",
    ]
    for op in OPERATIONS:
        if op.method.upper() == "POST":
            assert "503" in op.definition.raw["responses"]
            assert op.definition.raw["requestBody"]["content"]["application/json"]["schema"]


def _headers(case: Any) -> dict[str, str]:
    headers = {str(k): str(v) for k, v in (case.headers or {}).items()}
    for value in headers.values():
        # Header values outside Latin-1 cannot be sent by any HTTP client.
        assume(value.isascii() and "\n" not in value and "\r" not in value)
    return headers


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_server_error_for_any_generated_request(
    social_process: ServiceProcess, data: st.DataObject
) -> None:
    operation = data.draw(st.sampled_from(OPERATIONS), label="operation")
    mode = data.draw(st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE]))
    case = data.draw(operation.as_strategy(generation_mode=mode), label="case")
    headers = _headers(case)
    content = None
    body = getattr(case, "body", None)
    if operation.method.upper() == "POST" and data.draw(st.integers(0, 2), label="from") == 0:
        # A real sample of the provider, maybe with one top-level value replaced: these
        # reach normalisation and publishing far more often than schema-generated bodies.
        sample = load_sample(data.draw(st.sampled_from(SAMPLES[PROVIDERS[operation.path]])))
        if data.draw(st.booleans(), label="mutate"):
            sample[data.draw(st.sampled_from(sorted(sample)))] = data.draw(JSON)
        body = sample
    if operation.method.upper() == "POST" and isinstance(body, dict | list | str | int | float):
        content = json.dumps(body).encode()
        headers["content-type"] = "application/json"
        if data.draw(st.booleans(), label="signed"):
            headers.update(signed_headers(PROVIDERS[operation.path], content))
    response = httpx.request(
        operation.method.upper(),
        f"{social_process.base_url}{case.formatted_path}",
        params=case.query or None,
        headers=headers,
        content=content,
        timeout=30,
    )
    outcome = ""
    if response.headers.get("content-type", "").startswith("application/json"):
        answer = response.json()
        outcome = answer.get("status", "") if isinstance(answer, dict) else ""
    event(f"{operation.label} -> {response.status_code} {outcome}")  # --hypothesis-show-statistics
    assert response.status_code < 500, (operation.label, response.status_code, response.text)
    documented = set(operation.definition.raw["responses"])
    assert str(response.status_code) in documented, (operation.label, response.status_code)
