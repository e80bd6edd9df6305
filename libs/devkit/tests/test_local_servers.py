"""Local provisioning: idempotent start, stale pid files, clean stop (real processes)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient, UpdateOne

from switchboard_devkit.running.inprocess import free_port
from switchboard_devkit.servers.local import LocalFerretDB, LocalKafka, ProvisionError, port_open


@pytest.fixture
def ferret() -> Iterator[LocalFerretDB]:
    server = LocalFerretDB(name="ferretdb-test", host="127.0.0.1", port=free_port())
    yield server
    server.stop()
    shutil.rmtree(server.state, ignore_errors=True)


@pytest.mark.unit
def test_a_stale_pid_file_is_detected_and_removed(tmp_path: object) -> None:
    server = LocalFerretDB(name="ferretdb-stale", host="127.0.0.1", port=free_port())
    server.state.mkdir(parents=True, exist_ok=True)
    try:
        # A pid that is certainly not a FerretDB of ours: this very test process.
        server.pidfile.write_text(str(os.getpid()))
        assert server.pid() is None
        assert not server.pidfile.exists()
        # A pid that no longer exists.
        done = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        server.pidfile.write_text(done.stdout.strip())
        assert server.pid() is None
    finally:
        shutil.rmtree(server.state, ignore_errors=True)


@pytest.mark.integration
def test_ferretdb_up_is_idempotent_and_survives_a_stale_pid(ferret: LocalFerretDB) -> None:
    assert ferret.start() is True
    first = ferret.pid()
    assert ferret.start() is False  # already running: a no-op
    assert ferret.pid() == first
    with MongoClient[dict[str, Any]](ferret.url, serverSelectionTimeoutMS=3000) as client:
        assert client.admin.command("ping")["ok"] == 1.0
        client["t_local"]["c"].insert_one({"_id": 1})
    assert first is not None
    os.kill(first, signal.SIGKILL)  # a crash leaves the pid file behind
    deadline = time.monotonic() + 10
    while port_open(ferret.host, ferret.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ferret.start() is True  # the stale pid file did not fool it
    with MongoClient[dict[str, Any]](ferret.url, serverSelectionTimeoutMS=3000) as client:
        assert client["t_local"]["c"].find_one({"_id": 1}) == {"_id": 1}  # data kept
    assert ferret.stop() is True
    assert ferret.stop() is False
    assert not port_open(ferret.host, ferret.port)


@pytest.mark.integration
def test_a_port_taken_by_someone_else_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        server = LocalFerretDB(name="ferretdb-busy", host="127.0.0.1", port=port)
        with pytest.raises(ProvisionError, match="in use by another process"):
            server.start()
        shutil.rmtree(server.state, ignore_errors=True)


@pytest.mark.integration
def test_kafka_starts_on_other_ports_and_stops() -> None:
    kafka = LocalKafka(
        name="kafka-test", host="127.0.0.1", port=free_port(), controller_port=free_port()
    )
    try:
        assert kafka.start() is True
        assert kafka.start() is False
        assert port_open(kafka.host, kafka.port)
    finally:
        assert kafka.stop() is True
        shutil.rmtree(kafka.state, ignore_errors=True)
    assert not port_open(kafka.host, kafka.port)


@pytest.mark.integration
def test_lookups_by_id_use_the_id_index(infra: object) -> None:
    """Hot paths address documents by `_id` (one, or a batch with `$in`); the server must
    answer both from an index.

    Our FerretDB build is patched for this (infra/ferretdb/patches.toml): unpatched,
    FerretDB v1.24 scans the whole table for every `_id` filter. MongoDB always does.
    """
    from switchboard_devkit.servers.infra import Infra

    assert isinstance(infra, Infra)
    with MongoClient[dict[str, Any]](infra.mongodb_url, serverSelectionTimeoutMS=3000) as client:
        ferretdb = "ferretdbVersion" in client.admin.command("buildInfo")
        database = client[f"t_plan_{os.getpid()}"]
        try:
            database["d"].insert_many([{"_id": f"k{i}", "n": i} for i in range(20)])
            plans = [
                database.command("explain", {"find": "d", "filter": flt})
                for flt in ({"_id": "k7"}, {"_id": {"$in": ["k1", "k7", "absent"]}})
            ]
            # The batch form returns exactly the listed documents, other conditions kept.
            found = database["d"].find({"_id": {"$in": ["k1", "k7", "absent"]}, "n": {"$gt": 1}})
            assert [d["_id"] for d in found] == ["k7"]
        finally:
            client.drop_database(database.name)
    for plan in plans:
        if ferretdb:
            (step,) = plan["queryPlanner"]["Plan"]
            assert "USING INDEX" in step
            assert "__id_" in step
        else:
            stage = str(plan["queryPlanner"]["winningPlan"])
            assert "IDHACK" in stage or "EXPRESS" in stage or "_id_" in stage or "IXSCAN" in stage


@pytest.mark.integration
@pytest.mark.timeout(120)  # a hang detector, not a speed limit: unpatched, this never ends
def test_a_bulk_write_of_hundreds_of_updates_completes(infra: object) -> None:
    """Unpatched FerretDB v1.24 holds one SQLite connection per update statement until
    the command ends and hangs past 100 statements (infra/ferretdb/patches.toml)."""
    from switchboard_devkit.servers.infra import Infra

    assert isinstance(infra, Infra)
    with MongoClient[dict[str, Any]](infra.mongodb_url, serverSelectionTimeoutMS=3000) as client:
        database = client[f"t_bulk_{os.getpid()}"]
        try:
            database["d"].insert_many([{"_id": f"k{i}", "n": 0} for i in range(300)])
            result = database["d"].bulk_write(
                [UpdateOne({"_id": f"k{i}"}, {"$inc": {"n": 1}}) for i in range(300)],
                ordered=False,
            )
            assert result.modified_count == 300
            assert database["d"].count_documents({"n": 1}) == 300
        finally:
            client.drop_database(database.name)
