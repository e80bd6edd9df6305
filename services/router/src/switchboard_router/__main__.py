"""``python -m switchboard_router``: run the router until SIGTERM.

``python -m switchboard_router agent-token <agent_id> [--ttl-seconds N]`` prints a signed
agent token instead (``ROUTER_AGENT_TOKEN_SECRET``; the development secret in dev).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from switchboard_common.logging import configure_logging
from switchboard_common.service import run_runtime
from switchboard_common.settings import SettingsError
from switchboard_router.agent_tokens import DEFAULT_TTL_SECONDS, AgentTokenError
from switchboard_router.app import build
from switchboard_router.settings import RouterSettings


def agent_token(arguments: list[str], settings: RouterSettings) -> int:
    parser = argparse.ArgumentParser(prog="python -m switchboard_router agent-token")
    parser.add_argument("agent_id")
    parser.add_argument("--ttl-seconds", type=int, default=DEFAULT_TTL_SECONDS)
    options = parser.parse_args(arguments)
    tokens = settings.agent_tokens()
    if tokens is None:
        sys.stderr.write("router: ROUTER_AGENT_TOKEN_SECRET is not set\n")
        return 2
    try:
        token = tokens.mint(
            options.agent_id, now=datetime.now(UTC), ttl_seconds=options.ttl_seconds
        )
    except AgentTokenError as error:
        sys.stderr.write(f"router: {error}\n")
        return 2
    sys.stdout.write(f"{token}\n")
    return 0


def main(arguments: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if arguments is None else arguments
    try:
        settings = RouterSettings.load()
    except SettingsError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    if arguments[:1] == ["agent-token"]:
        return agent_token(arguments[1:], settings)
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
