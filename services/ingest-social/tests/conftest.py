"""Fixtures of ingest-social's tests (the sample deployment is in ``testing``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from switchboard_ingest_social.accounts import AccountDirectory, load_directory
from switchboard_ingest_social.testing import (
    ACCOUNTS_YAML,
    accounts_environment,
    default_secrets,
    load_sample,
)


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
