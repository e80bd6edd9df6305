"""Start-up refuses an invalid policy file with a clear message and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # runs the real entry point as a process


def test_an_invalid_policy_file_stops_start_up_naming_file_field_and_problem(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "calendars: {office: {timezone: Europe/Paris, hours: {monday: ['09:00-18:00']}}}\n"
        "policies: [{name: p, calendar: office, targets: {first_response: {target: 5m,"
        " warn_before: 1h}}}]\n"
    )
    env = {**os.environ, "SLA_MONITOR_POLICY_FILE": str(policy), "SWITCHBOARD_ENV": "test"}
    result = subprocess.run(
        [sys.executable, "-m", "switchboard_sla_monitor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert str(policy) in result.stderr
    assert "targets.first_response.warn_before" in result.stderr
    assert "shorter than the target" in result.stderr
