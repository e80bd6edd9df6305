"""Where the repository, the cache and the local servers' state live."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The workspace root (the directory holding ``infra/`` and the root pyproject)."""
    override = os.environ.get("SWITCHBOARD_REPO_ROOT")
    if override:
        return Path(override).resolve()
    for parent in Path(__file__).resolve().parents:
        if (parent / "infra" / "kafka" / "pom.xml").is_file() and (
            parent / "pyproject.toml"
        ).is_file():
            return parent
    for parent in Path.cwd().resolve().parents:
        if (parent / "infra" / "kafka" / "pom.xml").exists():
            return parent
    raise RuntimeError(
        "cannot find the Switchboard repository (infra/kafka/pom.xml); "
        "run from a checkout or set SWITCHBOARD_REPO_ROOT"
    )


def cache_dir() -> Path:
    """Downloads, builds and server data: ``~/.cache/switchboard`` unless overridden."""
    override = os.environ.get("SWITCHBOARD_CACHE_DIR")
    base = Path(override) if override else Path.home() / ".cache" / "switchboard"
    base.mkdir(parents=True, exist_ok=True)
    return base
