"""How a service process ended is reported, so a failed test says which service died."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard_devkit.running.processes import ServiceProcess, ServiceSpec
from switchboard_devkit.running.stack import Stack

pytestmark = pytest.mark.unit


@pytest.fixture
def modules(tmp_path: Path) -> dict[str, str]:
    """The environment of two stand-in services: one that runs, one that crashes."""
    (tmp_path / "stand_in_running.py").write_text("import time\ntime.sleep(60)\n")
    (tmp_path / "stand_in_crashing.py").write_text(
        "print('cannot reach the database')\nraise SystemExit(3)\n"
    )
    return {"PYTHONPATH": str(tmp_path)}


def _process(module: str, env: dict[str, str]) -> ServiceProcess:
    return ServiceProcess(ServiceSpec(module, module, "SVC_HTTP_PORT", 0), env=env)


def _wait_ended(process: ServiceProcess) -> None:
    assert process.process is not None
    process.process.wait(30)
    if process._pump is not None:
        process._pump.join(5)  # its last lines are read


def test_a_process_that_exited_reports_its_status_and_a_killed_one_its_signal(
    modules: dict[str, str],
) -> None:
    crashing = _process("stand_in_crashing", modules)
    assert crashing.state == "not started"
    crashing.start()
    _wait_ended(crashing)
    assert crashing.state == "exited with 3"

    running = _process("stand_in_running", modules)
    running.start()
    assert running.state == "running"
    running.kill()
    assert running.state == "killed by SIGKILL"


def test_the_logs_of_a_stack_put_the_services_that_ended_first(modules: dict[str, str]) -> None:
    stack = Stack("127.0.0.1:1", "mongodb://127.0.0.1:1/")
    running = _process("stand_in_running", modules)
    crashing = _process("stand_in_crashing", modules)
    running.start()
    crashing.start()
    try:
        _wait_ended(crashing)
        stack.services = {"router": running, "ingest-email": crashing}
        assert stack.ended() == {"ingest-email": "exited with 3"}
        tail = stack.logs_tail()
        assert tail.index("----- ingest-email (exited with 3) -----") < tail.index(
            "----- router (running) -----"
        )
        assert "cannot reach the database" in tail
    finally:
        running.kill()
