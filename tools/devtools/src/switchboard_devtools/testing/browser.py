"""Browser tests: Debian's ``chromium`` driven headless through its ``chromedriver``
(Selenium with the system browser and driver; nothing is downloaded), a line that can be
cut between the browser and a service, and where screenshots go."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from switchboard_devkit.paths import repo_root
from switchboard_devkit.running.inprocess import free_port

#: Where Debian puts them (packages ``chromium`` and ``chromium-driver``).
CHROMIUM = ("chromium", "/usr/bin/chromium")
CHROMEDRIVER = ("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _find(names: tuple[str, ...], package: str) -> str:
    for name in names:
        found = shutil.which(name)  # also takes an absolute path
        if found:
            return found
    raise RuntimeError(
        f"{names[0]} not found: install Debian's {package} (make test installs it; "
        "scripts/apt-packages lists it)"
    )


@contextlib.contextmanager
def chromium(*, width: int = 1100, height: int = 800) -> Iterator[webdriver.Chrome]:
    """A headless Chromium of the system, closed afterwards."""
    options = webdriver.ChromeOptions()
    options.binary_location = _find(CHROMIUM, "chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    # The driver's own path: Selenium then never looks for (or fetches) one.
    service = Service(executable_path=_find(CHROMEDRIVER, "chromium-driver"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def output_dir(test_name: str) -> Path:
    """The test's output directory (screenshots): ``SWITCHBOARD_TEST_OUTPUT`` or
    ``test-output/`` in the repository, one folder per test."""
    root = Path(os.environ.get("SWITCHBOARD_TEST_OUTPUT") or repo_root() / "test-output")
    path = root / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
    path.mkdir(parents=True, exist_ok=True)
    return path


class CuttableLine:
    """A TCP forwarder on 127.0.0.1 in front of a service: ``cut()`` drops every open
    connection and refuses new ones until ``restore()``, as a network failure would,
    while the service itself stays up. Its port is known at once (a service may need it as
    an allowed origin); ``target_port`` may be set once the service has started."""

    def __init__(self, target_port: int = 0) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._open: set[asyncio.StreamWriter] = set()
        self._cut = False
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> CuttableLine:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(self, *_: object) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self._call(self._drop())

    def restore(self) -> None:
        self._cut = False

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _drop(self) -> None:
        self._cut = True
        for writer in list(self._open):
            writer.transport.abort()  # a reset, not a polite close
        self._open.clear()

    async def _close(self) -> None:
        await self._drop()
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for end in (writer, up_writer):
            self._open.discard(end)
            end.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self._cut:
                return
            writer.write(data)
            await writer.drain()
