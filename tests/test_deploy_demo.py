"""``make demo`` against the running services (what ``make run`` starts), on free ports.

On this branch the router's stages 1-2 (identity, timeline) are not merged yet, so
inbound messages do not become assignments: the test checks what the demo can show
today (every mail and webhook acknowledged, the agents registered with the router) and
that it says so when no decision arrives. Once the timeline lands, the demo's exit
status 0 means decisions were seen (tighten ``ALLOWED_STATUS`` then).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from switchboard_devkit.infra import Infra
from switchboard_devkit.stack import Stack

pytestmark = pytest.mark.integration

#: 0 = decisions seen; 1 = traffic accepted but no decision yet (timeline not merged).
ALLOWED_STATUS = (0, 1)


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
        [sys.executable, "-m", "switchboard_devkit.demo", "--seconds", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout
    assert result.returncode in ALLOWED_STATUS, output + result.stderr
    assert output.count("SMTP 250") == 3, output
    assert output.count("HTTP 200") == 3, output
    assert "3 mail(s) and 3 webhook(s) accepted" in output
    agents = httpx.get(f"{stack.url('router')}/agents", timeout=10).json()["items"]
    assert {a["agent_id"]: a["status"] for a in agents} == {
        "agent-ana": "online",
        "agent-ben": "online",
        "agent-chloe": "online",
    }
