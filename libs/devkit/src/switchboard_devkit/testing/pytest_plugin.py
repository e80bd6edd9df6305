"""pytest fixtures and tier rules for every Switchboard test suite.

Tiers are markers (``unit``, ``integration``, ``e2e``, ``faults``): every test must carry
exactly one, enforced at collection. ``--no-skips`` (used by ``make test``) turns any
skip into a failure, so a missing server or feature can never pass silently.

Fixtures give each test its own topics (a unique prefix), database and consumer groups on
the real servers, so tests never see each other's data and can run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from switchboard_common.contract.topics import TopicNames
from switchboard_common.mongo import Document
from switchboard_common.topics import create_topics, delete_topics
from switchboard_devkit.running.stack import Stack
from switchboard_devkit.servers.infra import Infra, ensure_infra, probe_servers
from switchboard_devkit.testing.kafka_probe import TopicProbe, unique

TIERS = ("unit", "integration", "e2e", "faults")
_INFRA_KEY = pytest.StashKey[Infra]()
_WORKER_LINES_KEY = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-skips",
        action="store_true",
        default=False,
        help="fail any test that skips (make test uses this: no silent skips)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    untiered = [
        item.nodeid
        for item in items
        if sum(1 for tier in TIERS if item.get_closest_marker(tier)) != 1
    ]
    if untiered:
        raise pytest.UsageError(
            "every test needs exactly one tier marker (unit, integration, e2e, faults):\n  "
            + "\n  ".join(untiered[:20])
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" and report.failed:
        # A failed test shows what every service of its stack last said.
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Stack):
                report.sections.append(("service logs", value.logs_tail()))
    if report.skipped and item.config.getoption("--no-skips"):
        report.outcome = "failed"
        report.longrepr = f"skipped under --no-skips: {report.longrepr}"


def pytest_report_header() -> list[str]:
    described = os.environ.get("SWITCHBOARD_INFRA_DESCRIPTION")
    return [f"switchboard infra: {described}"] if described else []


def _servers_used(config: pytest.Config) -> list[str]:
    """What this process's tests ran against, as the summary says it (none: no test
    of this process touched the servers)."""
    infra = config.stash.get(_INFRA_KEY, None)
    if infra is None:
        return []
    described = os.environ.get("SWITCHBOARD_INFRA_DESCRIPTION") or (
        f"{infra.kafka_description}; {infra.mongodb_description}"
    )
    return [f"real servers used: {described}", f"the servers say: {probe_servers(infra)}"]


def pytest_sessionfinish(session: pytest.Session) -> None:
    # A test worker of ``pytest -n`` hands its lines to the controller, which prints the
    # summary (pytest-xdist's ``workeroutput``).
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["switchboard_servers"] = _servers_used(session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:  # noqa: ARG001 - the hook's signature
    lines = getattr(node, "workeroutput", {}).get("switchboard_servers", [])
    seen = node.config.stash.setdefault(_WORKER_LINES_KEY, [])
    seen.extend(line for line in lines if line not in seen)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    for line in _servers_used(config) or config.stash.get(_WORKER_LINES_KEY, []):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def infra(pytestconfig: pytest.Config) -> Iterator[Infra]:
    """Real Kafka and MongoDB-wire server (started if needed, stopped if we started them)."""
    handle = ensure_infra()
    pytestconfig.stash[_INFRA_KEY] = handle
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture
def topics(infra: Infra) -> Iterator[TopicNames]:
    """Contract topics behind a prefix unique to this test (created with 3 partitions)."""
    names = TopicNames(prefix=f"{unique('t')}.")
    asyncio.run(create_topics(infra.kafka_bootstrap, prefix=names.prefix, partitions=3))
    yield names
    # Clean-up is best effort: the data is isolated by the prefix anyway.
    with contextlib.suppress(Exception):
        asyncio.run(delete_topics(infra.kafka_bootstrap, prefix=names.prefix))


@pytest.fixture
def database_name(infra: Infra) -> Iterator[str]:
    """A database name unique to this test; dropped afterwards."""
    name = unique("t_")
    yield name
    asyncio.run(_drop_database(infra.mongodb_url, name))


async def _drop_database(url: str, name: str) -> None:
    client: AsyncMongoClient[Document] = AsyncMongoClient(url, serverSelectionTimeoutMS=3000)
    try:
        await client.drop_database(name)
    except Exception:  # noqa: BLE001, S110 - clean-up is best effort
        pass
    finally:
        await client.close()


@pytest.fixture
async def mongo_client(infra: Infra) -> AsyncIterator[AsyncMongoClient[Document]]:
    """An async client to the real MongoDB-wire server."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        infra.mongodb_url, tz_aware=True, serverSelectionTimeoutMS=5000
    )
    yield client
    await client.close()


@pytest.fixture
async def probe(infra: Infra, topics: TopicNames) -> AsyncIterator[TopicProbe]:
    """Read and write this test's topics."""
    async with TopicProbe(infra.kafka_bootstrap, topics) as p:
        yield p


@pytest.fixture
def service_env(infra: Infra, topics: TopicNames, database_name: str) -> dict[str, str]:
    """Environment for a service under test: this test's servers, topics and database."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "MONGODB_URL": infra.mongodb_url,
        "MONGODB_DATABASE": database_name,
        "SWITCHBOARD_TOPIC_PREFIX": topics.prefix,
        "SWITCHBOARD_ENV": "test",
        "SWITCHBOARD_LOG_FORMAT": "json",
    }


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost and its key (for the TLS of local
    test servers: IMAP, SMTP ingest, the outbound relay)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
