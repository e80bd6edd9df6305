"""Running a service ``Runtime`` inside the test's event loop (integration tests)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import httpx

from switchboard_common.service import Runtime, run_runtime


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
