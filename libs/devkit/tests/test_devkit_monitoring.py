"""The Prometheus configuration ``make run`` writes is valid and scrapes every service."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from switchboard_devkit.servers.monitoring import prometheus_config, rule_files

pytestmark = pytest.mark.unit


def test_config_scrapes_each_service_as_its_own_job_with_the_shipped_rules(
    tmp_path: Path,
) -> None:
    targets = {"router": ["127.0.0.1:8003"], "sla-monitor": ["127.0.0.1:8004"]}
    text = prometheus_config(targets, rule_files())
    config = yaml.safe_load(text)
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs == targets
    assert {Path(p).name for p in config["rule_files"]} >= {
        "sla-monitor.rules.yml",
        "switchboard.rules.yml",
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: Debian package prometheus; `make apt-test` installs it"
    result = subprocess.run(
        [promtool, "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout
