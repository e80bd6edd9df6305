"""``python -m switchboard_ingest_email``: run the SMTP server (and IMAP pollers) until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from switchboard_common.logging import configure_logging
from switchboard_common.service import run_runtime
from switchboard_common.settings import SettingsError
from switchboard_ingest_email.app import build
from switchboard_ingest_email.settings import IngestEmailSettings


def main() -> int:
    try:
        settings = IngestEmailSettings.load()
    except SettingsError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    configure_logging(
        service=settings.service_name, level=settings.log_level, fmt=settings.log_format
    )
    service = build(settings)
    return asyncio.run(run_runtime(service.runtime))


if __name__ == "__main__":
    raise SystemExit(main())
