"""The router as ``python -m switchboard_router`` runs it, with its database work counted.

A benchmark-only launcher: it registers a PyMongo command listener before the router
builds its client (clients copy the global listeners when created) and serves the
running totals at ``GET /bench/database-operations`` on the router's own HTTP port. The
shipped router knows nothing of it.

    python -m bench.probed_router   # from the repository root, with the router's env
"""

from __future__ import annotations

import asyncio

from pymongo import monitoring

from switchboard_common.logging import configure_logging
from switchboard_common.service import run_runtime
from switchboard_devkit.running.database_operations import HTTP_PATH, DatabaseOperations
from switchboard_router.app import build
from switchboard_router.settings import RouterSettings


def main() -> int:
    operations = DatabaseOperations()
    monitoring.register(operations)
    settings = RouterSettings.load()
    configure_logging(service="router", level=settings.log_level, fmt=settings.log_format)
    runtime = build(settings).runtime
    runtime.http_app.add_api_route(HTTP_PATH, operations.snapshot, methods=["GET"])
    return asyncio.run(run_runtime(runtime))


if __name__ == "__main__":
    raise SystemExit(main())
