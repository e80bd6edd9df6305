"""Layers point one way: common knows no service, the devkit knows no service, and no
shipped service package imports development code or another service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from switchboard_devkit.paths import repo_root

pytestmark = pytest.mark.unit

ROOT = repo_root()
SERVICES = {
    "switchboard_ingest_email",
    "switchboard_ingest_social",
    "switchboard_router",
    "switchboard_sla_monitor",
    "switchboard_webchat",
}
DEVELOPMENT = {"switchboard_devkit", "switchboard_devtools", "pytest", "hypothesis"}


def imported_packages(package_dir: Path) -> dict[str, set[str]]:
    """Top-level package of every absolute import, by the file that makes it."""
    found: dict[str, set[str]] = {}
    for path in package_dir.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[path.as_posix()] = names
    return found


def offending(package_dir: Path, forbidden: set[str]) -> dict[str, set[str]]:
    return {
        path: names & forbidden
        for path, names in imported_packages(package_dir).items()
        if names & forbidden
    }


def test_common_imports_no_service_and_no_development_code() -> None:
    src = ROOT / "libs" / "common" / "src" / "switchboard_common"
    assert offending(src, SERVICES | DEVELOPMENT) == {}


def test_devkit_imports_no_service() -> None:
    src = ROOT / "libs" / "devkit" / "src" / "switchboard_devkit"
    assert offending(src, SERVICES | {"switchboard_devtools"}) == {}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_shipped_service_code_imports_no_development_code_and_no_other_service(
    service: str,
) -> None:
    (src,) = (ROOT / "services").glob(f"*/src/{service}")
    assert offending(src, DEVELOPMENT | (SERVICES - {service})) == {}


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from switchboard_devkit.testing.builders import T0\n")
    assert offending(tmp_path, DEVELOPMENT) == {probe.as_posix(): {"switchboard_devkit"}}
