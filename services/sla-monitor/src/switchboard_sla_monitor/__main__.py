"""``python -m switchboard_sla_monitor``: run the SLA monitor until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from switchboard_common.logging import configure_logging
from switchboard_common.service import run_runtime
from switchboard_common.settings import SettingsError
from switchboard_sla_monitor.app import build
from switchboard_sla_monitor.policy import PolicyError
from switchboard_sla_monitor.settings import SlaMonitorSettings


def main() -> int:
    try:
        settings = SlaMonitorSettings.load()
    except SettingsError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    configure_logging(service="sla-monitor", level=settings.log_level, fmt=settings.log_format)
    try:
        runtime, _ = build(settings)
    except PolicyError as error:
        sys.stderr.write(f"sla-monitor: invalid SLA policy file: {error}\n")
        return 2
    return asyncio.run(run_runtime(runtime))


if __name__ == "__main__":
    raise SystemExit(main())
