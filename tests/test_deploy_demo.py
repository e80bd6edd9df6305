"""``make demo`` against the running services (what ``make run`` starts), on free ports:
every mail and webhook acknowledged, the agents registered, decisions routed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from switchboard_devkit.running.stack import Stack
from switchboard_devkit.servers.infra import Infra

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(infra: Infra) -> Iterator[Stack]:
    stack = Stack(infra.kafka_bootstrap, infra.mongodb_url)
    try:
        stack.start()
        yield stack
    except BaseException:
        stack.dump_logs()
        raise
    finally:
        stack.stop()
        stack.remove_data()


def test_demo_sends_mail_and_signed_webhooks_and_registers_agents(stack: Stack) -> None:
    env = {**os.environ, **stack.env}
    result = subprocess.run(
        [sys.executable, "-m", "switchboard_devtools.demo", "--seconds", "15"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert output.count("SMTP 250") == 3, output
    assert output.count("HTTP 200") == 3, output
    assert "3 mail(s) and 3 webhook(s) accepted" in output
    seen = output.split("routing decision(s) for ")[1].split(" conversation(s)")[0]
    assert int(seen) == 6, output  # every message opened a conversation that was routed
    agents = httpx.get(f"{stack.url('router')}/agents", timeout=10).json()["items"]
    assert {a["agent_id"]: a["status"] for a in agents} == {
        "agent-ana": "online",
        "agent-ben": "online",
        "agent-chloe": "online",
    }
