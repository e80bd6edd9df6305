"""``python -m switchboard_router``: run the router until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from switchboard_common.logging import configure_logging
from switchboard_common.service import run_runtime
from switchboard_common.settings import SettingsError
from switchboard_router.app import build
from switchboard_router.settings import RouterSettings


def main() -> int:
    try:
        settings = RouterSettings.load()
    except SettingsError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    if tokens := settings.dev_tokens_in_use():
        # Public development values, printed so `make run` shows what the API accepts.
        shown = " ".join(f"{variable}={token}" for variable, token in tokens.items())
        sys.stderr.write(f"router: development API tokens (SWITCHBOARD_ENV=dev): {shown}\n")
    configure_logging(service="router", level=settings.log_level, fmt=settings.log_format)
    try:
        runtime = build(settings).runtime
    except SettingsError as error:  # e.g. an invalid routing policy file
        sys.stderr.write(f"{error}\n")
        return 2
    return asyncio.run(run_runtime(runtime))


if __name__ == "__main__":
    raise SystemExit(main())
