"""``python -m switchboard_webchat``: serve the chat widget and its socket until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from switchboard_common.logging import configure_logging
from switchboard_common.service import run_runtime
from switchboard_common.settings import SettingsError
from switchboard_webchat.app import build
from switchboard_webchat.logs import quiet_socket_access_log
from switchboard_webchat.settings import WebchatSettings


def main() -> int:
    try:
        settings = WebchatSettings.load()
    except SettingsError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    configure_logging(
        service=settings.service_name, level=settings.log_level, fmt=settings.log_format
    )
    quiet_socket_access_log()
    runtime, _ = build(settings)
    return asyncio.run(run_runtime(runtime))


if __name__ == "__main__":
    raise SystemExit(main())
