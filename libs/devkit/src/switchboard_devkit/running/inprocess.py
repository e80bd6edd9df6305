"""Running a service ``Runtime`` inside the test's event loop (integration tests)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from collections.abc import AsyncIterator

import httpx

from switchboard_common.service import Runtime, run_runtime

# Ports handed to test servers come from below Linux's ephemeral range (32768 and up), so
# an outgoing connection's local port never takes one between the check and the bind, and
# each pytest-xdist worker walks its own slice, so two workers never pick the same port.
# (Asking the kernel for port 0 raced both: CI saw "address already in use".)
_PORTS_FROM = 28000
_SLICE = 500
_SLICES = 9  # 28000-32499, clear of Kafka's controller (19093) and MongoDB (27017)


def _worker_slice() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... or unset
    index = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    return index % _SLICES


_next_in_slice = itertools.count(os.getpid() % _SLICE)


def free_port() -> int:
    """A TCP port on 127.0.0.1, free right now, that no other test worker will pick."""
    first = _PORTS_FROM + _worker_slice() * _SLICE
    for _ in range(_SLICE):
        port = first + next(_next_in_slice) % _SLICE
        with socket.socket() as s:
            # As the servers bind (asyncio sets SO_REUSEADDR): a port left in TIME_WAIT is
            # free to them, one held by any live socket is not.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{first + _SLICE - 1} on 127.0.0.1")


@contextlib.asynccontextmanager
async def running(runtime: Runtime, *, ready_timeout: float = 60.0) -> AsyncIterator[str]:
    """Start ``runtime`` in this loop, wait until ``/readyz`` is 200, yield its base URL,
    then stop it gracefully (and fail the test if it crashed)."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_runtime(runtime, stop=stop), name=runtime.service)
    base_url = f"http://{runtime.http_host}:{runtime.http_port}"
    deadline = time.monotonic() + ready_timeout
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as http:
        while True:
            if task.done():
                task.result()  # raises what made it stop
                raise RuntimeError(f"{runtime.service} stopped during start-up")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    break
            if time.monotonic() > deadline:
                stop.set()
                await task
                raise TimeoutError(f"{runtime.service} not ready after {ready_timeout}s")
            await asyncio.sleep(0.1)
    try:
        yield base_url
    finally:
        stop.set()
        status = await asyncio.wait_for(task, timeout=60)
        if status != 0:
            raise RuntimeError(f"{runtime.service} exited with status {status}")
