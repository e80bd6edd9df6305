"""uvicorn logs every WebSocket handshake at INFO with the client's address and the
socket's URL, an access log the other services turn off for HTTP: personal data (the
address) once per visitor. webchat drops those lines; uvicorn's other messages stay."""

from __future__ import annotations

import logging


class NoSocketAccessLog(logging.Filter):
    """Drops uvicorn's per-socket ``<address> - "WebSocket <path>" ...`` lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith('%s - "WebSocket %s"')


def quiet_socket_access_log() -> None:
    """Install the filter on uvicorn's logger (once per process, after logging is set)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, NoSocketAccessLog) for f in logger.filters):
        logger.addFilter(NoSocketAccessLog())
