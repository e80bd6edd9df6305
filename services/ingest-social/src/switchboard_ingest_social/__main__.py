"""``python -m switchboard_ingest_social``: serve the webhooks until SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import sys

from switchboard_common.logging import configure_logging
from switchboard_common.service import run_runtime
from switchboard_common.settings import SettingsError
from switchboard_ingest_social.accounts import AccountsFileError
from switchboard_ingest_social.app import build
from switchboard_ingest_social.settings import IngestSocialSettings


def main() -> int:
    try:
        settings = IngestSocialSettings.load()
    except SettingsError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    configure_logging(
        service=settings.service_name, level=settings.log_level, fmt=settings.log_format
    )
    try:
        runtime, _ = build(settings)
    except AccountsFileError as error:
        sys.stderr.write(f"{settings.service_name}: accounts file: {error}\n")
        return 2
    # Everything built so far lives as long as the process: keep the cyclic garbage
    # collector from rescanning it on every collection (measurably cheaper per request).
    gc.freeze()
    return asyncio.run(run_runtime(runtime))


if __name__ == "__main__":
    raise SystemExit(main())
