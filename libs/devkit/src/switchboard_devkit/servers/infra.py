"""Real Kafka and a MongoDB-wire server for tests and local runs.

Each server is chosen in this order:
  (a) the environment names one (``KAFKA_BOOTSTRAP_SERVERS`` / ``MONGODB_URL``): use it;
  (b) a Docker engine answers: testcontainers (Kafka in KRaft mode, ``mongo:7``), for as
      long as the process that asked lives (``switchboard-infra with`` and pytest);
  (c) otherwise provision locally (``switchboard_devkit.servers.local``).
``SWITCHBOARD_INFRA=local|docker`` forces (b) or (c).

Command line (the Makefile's infra targets):
  switchboard-infra up        start local servers unless running (idempotent)
  switchboard-infra down      stop them
  switchboard-infra status    say what runs where
  switchboard-infra env       print export lines for the shell
  switchboard-infra with -- CMD ...   run CMD with servers available; stop what was started
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from switchboard_common.topics import create_topics
from switchboard_devkit.servers.local import (
    LocalFerretDB,
    LocalKafka,
    ProvisionError,
    ferretdb_version,
    kafka_version,
    local_ferretdb,
    local_kafka,
)


@dataclass
class Infra:
    """Where the servers are, what they are, and how to stop what we started."""

    kafka_bootstrap: str
    mongodb_url: str
    kafka_description: str
    mongodb_description: str
    _cleanups: list[Any] = field(default_factory=list, repr=False)

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "MONGODB_URL": self.mongodb_url,
            "SWITCHBOARD_INFRA_DESCRIPTION": (
                f"{self.kafka_description}; {self.mongodb_description}"
            ),
        }

    def close(self) -> None:
        """Stop whatever this object started (in reverse order)."""
        while self._cleanups:
            cleanup = self._cleanups.pop()
            with contextlib.suppress(Exception):
                cleanup()


def probe_servers(infra: Infra) -> str:
    """Ask the servers themselves what they are (proof the tests ran against real ones)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from pymongo import MongoClient

    async def kafka() -> str:
        admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
        await admin.start()
        try:
            cluster = await admin.describe_cluster()
            brokers = len(cluster.get("brokers", []))
            return f"Kafka cluster {cluster.get('cluster_id')} ({brokers} broker(s))"
        finally:
            await admin.close()

    try:
        kafka_text = asyncio.run(kafka())
    except Exception as error:  # noqa: BLE001 - a report, not a check
        kafka_text = f"Kafka unreachable ({type(error).__name__})"
    try:
        with MongoClient[dict[str, Any]](infra.mongodb_url, serverSelectionTimeoutMS=3000) as c:
            info = c.admin.command("buildInfo")
        if "ferretdbVersion" in info:
            mongo_text = f"FerretDB (MongoDB wire {info['version']})"
        else:
            mongo_text = f"MongoDB {info['version']}"
    except Exception as error:  # noqa: BLE001 - a report, not a check
        mongo_text = f"MongoDB-wire server unreachable ({type(error).__name__})"
    return f"{kafka_text} at {infra.kafka_bootstrap}; {mongo_text}"


def docker_available() -> bool:
    """A Docker engine answers (not just a docker client being installed)."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def _mode() -> str:
    forced = os.environ.get("SWITCHBOARD_INFRA", "").strip().lower()
    if forced in ("local", "docker"):
        return forced
    if forced:
        raise ProvisionError(f"SWITCHBOARD_INFRA={forced!r}: use 'local' or 'docker'")
    return "docker" if docker_available() else "local"


def ensure_infra(*, create_contract_topics: bool = False) -> Infra:
    """Make both servers available, starting what is missing; see the module docs.

    The returned ``Infra.close()`` stops only what this call started.
    """
    infra = Infra("", "", "", "")
    mode: str | None = None
    try:
        external_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if external_kafka:
            infra.kafka_bootstrap = external_kafka
            infra.kafka_description = f"Kafka at {external_kafka} (from KAFKA_BOOTSTRAP_SERVERS)"
        else:
            mode = _mode()
            if mode == "docker":
                _docker_kafka(infra)
            else:
                _local_kafka(infra)
        external_mongo = os.environ.get("MONGODB_URL")
        if external_mongo:
            infra.mongodb_url = external_mongo
            infra.mongodb_description = "MongoDB-wire server from MONGODB_URL"
        else:
            mode = mode or _mode()
            if mode == "docker":
                _docker_mongo(infra)
            else:
                _local_mongo(infra)
        if create_contract_topics:
            asyncio.run(create_topics(infra.kafka_bootstrap))
    except BaseException:
        infra.close()
        raise
    return infra


def _local_kafka(infra: Infra) -> None:
    kafka = local_kafka()
    started = kafka.start()
    if started:
        infra._cleanups.append(kafka.stop)
    infra.kafka_bootstrap = kafka.bootstrap
    infra.kafka_description = (
        f"Apache Kafka {kafka_version()} (local KRaft, {kafka.bootstrap}"
        f"{', started now' if started else ', already running'})"
    )


def _local_mongo(infra: Infra) -> None:
    ferret = local_ferretdb()
    started = ferret.start()
    if started:
        infra._cleanups.append(ferret.stop)
    infra.mongodb_url = ferret.url
    infra.mongodb_description = (
        f"FerretDB {ferretdb_version()} over SQLite (local, {ferret.host}:{ferret.port}"
        f"{', started now' if started else ', already running'})"
    )


def _docker_kafka(infra: Infra) -> None:
    from testcontainers.kafka import KafkaContainer

    container = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
    container.start()
    infra._cleanups.append(container.stop)
    infra.kafka_bootstrap = container.get_bootstrap_server()
    infra.kafka_description = f"Kafka in Docker (testcontainers, {infra.kafka_bootstrap})"


def _docker_mongo(infra: Infra) -> None:
    from testcontainers.mongodb import MongoDbContainer

    container = MongoDbContainer("mongo:7")
    container.start()
    infra._cleanups.append(container.stop)
    infra.mongodb_url = container.get_connection_url()
    infra.mongodb_description = "MongoDB 7 in Docker (testcontainers)"


@contextlib.contextmanager
def infra_session(*, create_contract_topics: bool = False) -> Iterator[Infra]:
    infra = ensure_infra(create_contract_topics=create_contract_topics)
    try:
        yield infra
    finally:
        infra.close()


# --------------------------------------------------------------------------- CLI


def _status(kafka: LocalKafka, ferret: LocalFerretDB) -> str:
    lines = []
    for server, where in ((kafka, kafka.bootstrap), (ferret, ferret.url)):
        pid = server.pid()
        state = f"running (pid {pid})" if pid else "stopped"
        lines.append(f"{server.name:9} {state:22} {where}   logs: {server.state}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="switchboard-infra", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start local Kafka and FerretDB unless running")
    sub.add_parser("down", help="stop them")
    sub.add_parser("status", help="show what runs")
    sub.add_parser("env", help="print export lines")
    sub.add_parser("provision", help="download and build without starting")
    with_cmd = sub.add_parser("with", help="run a command with servers available")
    with_cmd.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    kafka, ferret = local_kafka(), local_ferretdb()
    try:
        if args.command == "provision":
            from switchboard_devkit.servers.local import ferretdb_binary, kafka_classpath

            started = time.monotonic()
            print(f"kafka jars: {kafka_classpath()}")
            print(f"ferretdb:   {ferretdb_binary()}")
            print(f"provisioned in {time.monotonic() - started:.1f}s")
            return 0
        if args.command == "up":
            started = time.monotonic()
            k = kafka.start()
            f = ferret.start()
            asyncio.run(create_topics(kafka.bootstrap))
            verb = "started" if (k or f) else "already running"
            print(f"{verb} in {time.monotonic() - started:.1f}s")
            print(_status(kafka, ferret))
            return 0
        if args.command == "down":
            stopped = [s.name for s in (kafka, ferret) if s.stop()]
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
            return 0
        if args.command == "status":
            print(_status(kafka, ferret))
            return 0 if kafka.running() and ferret.running() else 3
        if args.command == "env":
            print(f"export KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap}")
            print(f"export MONGODB_URL={ferret.url}")
            return 0
        if args.command == "with":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not cmd:
                parser.error("with: give a command after --")
            with infra_session(create_contract_topics=True) as infra:
                print(f"infra: {infra.kafka_description}; {infra.mongodb_description}", flush=True)
                return subprocess.call(cmd, env={**os.environ, **infra.env()})
    except ProvisionError as error:
        print(f"switchboard-infra: {error}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
