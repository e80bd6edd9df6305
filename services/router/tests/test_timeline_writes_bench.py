"""The timeline-writes benchmark still runs (``make bench`` is not part of CI).

It builds the router in-process, so a new required setting breaks it; the router API
tokens did, unnoticed, until this test. A small workload: the figures are not compared,
only that each side measured messages it stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from switchboard_devkit.paths import repo_root

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_the_timeline_writes_benchmark_measures_both_sides(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "timeline_writes.json"
    script = repo_root() / "services" / "router" / "bench" / "timeline_writes.py"
    env = {**os.environ, **service_env}
    command = [sys.executable, str(script), "--messages", "3000", "--customers", "300"]
    result = subprocess.run(  # noqa: S603 - our own script
        [*command, "--partitions", "2", "--duration", "60", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    # With a minute to spare the baseline takes the whole backlog; the router's count
    # starts after identity resolution's first batch, so it stores most of it.
    assert figures["baseline_messages"] == figures["backlog"] == 3000
    assert 0 < figures["system_messages"] <= 3000
