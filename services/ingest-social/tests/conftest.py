"""Fixtures of ingest-social's tests (the sample deployment is in ``testing``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchboard_devkit.running.inprocess import free_port, running
from switchboard_devtools.testing.social import (
    ACCOUNTS_YAML,
    META_SECRET,
    RECEIVED_AT,
    TELEGRAM_TOKEN,
    VERIFY_TOKEN,
    X_SECRET,
    RunningSocial,
    accounts_environment,
    default_secrets,
    load_sample,
)
from switchboard_ingest_social.accounts import AccountDirectory, load_directory
from switchboard_ingest_social.app import build
from switchboard_ingest_social.settings import IngestSocialSettings

#: The body limit of services under test (small, so oversize tests stay cheap).
MAX_BODY_BYTES = 16 * 1024


@pytest.fixture
def payload() -> Callable[[str], dict[str, Any]]:
    """Load a sample payload by name as a fresh dict."""
    return load_sample


@pytest.fixture
def accounts_file(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.yaml"
    path.write_text(ACCOUNTS_YAML, encoding="utf-8")
    return path


@pytest.fixture
def directory(accounts_file: Path) -> AccountDirectory:
    """The sample deployment's accounts (unknown accounts accepted)."""
    return load_directory(accounts_file, default_secrets(), environ=accounts_environment())


@pytest.fixture
def social_env(
    request: pytest.FixtureRequest, service_env: dict[str, str], accounts_file: Path
) -> dict[str, str]:
    """Environment of an ingest-social under test (this test's Kafka topics).

    A test changes it with ``@pytest.mark.parametrize("social_env", [{NAME: value}],
    indirect=True)``; a value of None removes the variable.
    """
    env = {
        **service_env,
        **accounts_environment(),
        "META_APP_SECRET": META_SECRET,
        "META_VERIFY_TOKEN": VERIFY_TOKEN,
        "X_CONSUMER_SECRET": X_SECRET,
        "TELEGRAM_SECRET_TOKEN": TELEGRAM_TOKEN,
        "INGEST_SOCIAL_ACCOUNTS_FILE": str(accounts_file),
        "INGEST_SOCIAL_HTTP_PORT": str(free_port()),
        "INGEST_SOCIAL_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }
    changes: dict[str, str | None] = getattr(request, "param", {})
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@pytest.fixture
async def social(
    social_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningSocial]:
    """ingest-social started in-process on real Kafka, with a fixed clock."""
    for name, value in social_env.items():
        monkeypatch.setenv(name, value)
    runtime, parts = build(IngestSocialSettings.load(), clock=lambda: RECEIVED_AT)
    async with running(runtime) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield RunningSocial(url, http, parts)
