"""The workspace benchmark still runs (``make bench`` is not part of CI).

It sets the router up as its tests do (agents online, customers' messages assigned)
and drives the write and read routes with agent tokens, so a change to the routes, the
tokens or the set-up breaks it. A small workload: the figures are not compared, only that
every request of each side got its expected answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from switchboard_devkit.paths import repo_root
from switchboard_devkit.servers.infra import Infra

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_the_workspace_benchmark_answers_every_request_on_both_sides(
    infra: Infra, tmp_path: Path
) -> None:
    out = tmp_path / "workspace.json"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "MONGODB_URL": infra.mongodb_url,
    }
    command = [sys.executable, "-m", "bench.workspace", "--agents", "2", "--conversations", "2"]
    result = subprocess.run(
        [*command, "--notes", "3", "--reads", "3", "--timeout", "120", "--json", str(out)],
        cwd=repo_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert (figures["case"], figures["unit"]) == ("workspace", "notes/s")
    assert set(figures["rows"]) == {"note_cpu", "inbox_reads", "inbox_cpu"}
    # Each agent's inbox holds the conversations it was assigned.
    assert figures["inbox_items"] == 2
    for side in ("router", "baseline"):
        for phase in ("writes", "reads"):
            measured = figures["detail"][side][phase]
            assert (measured["answered"], measured["refused"]) == (6, {}), (side, phase)
