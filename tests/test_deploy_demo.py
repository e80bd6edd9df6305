"""``make demo`` against the running services (what ``make run`` starts), on free ports:
every mail, webhook and web chat message acknowledged, the agents registered, decisions
routed, the new email conversations acknowledged and one answered, by mail to a local
sink, and the web chat's demo page named."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchboard_devkit.running.stack import Stack
from switchboard_devkit.servers.infra import Infra
from switchboard_devkit.servers.relay import LocalRelay

pytestmark = pytest.mark.e2e


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[LocalRelay]:
    """A mail sink like ``make run``'s, its mail kept in a directory."""
    with LocalRelay.started(outbox=tmp_path / "outbox") as relay:
        yield relay


@pytest.fixture
def stack(infra: Infra, sink: LocalRelay) -> Iterator[Stack]:
    stack = Stack(
        infra.kafka_bootstrap,
        infra.mongodb_url,
        extra_env={
            "OUTBOUND_SMTP_URL": f"{sink.url}?tls=none",
        },
    )
    try:
        stack.start()
        yield stack
    except BaseException:
        stack.dump_logs()
        raise
    finally:
        stack.stop()
        stack.remove_data()


def test_demo_sends_mail_signed_webhooks_and_a_web_chat_message_and_registers_agents(
    stack: Stack, sink: LocalRelay
) -> None:
    assert sink.outbox is not None
    env = {**os.environ, **stack.env, "SWITCHBOARD_DEMO_OUTBOX": str(sink.outbox)}
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
    assert output.count("ack seq ") == 1, output
    assert "3 mail(s), 3 webhook(s) and 1 web chat message(s) accepted" in output
    seen = output.split("routing decision(s) for ")[1].split(" conversation(s)")[0]
    assert int(seen) == 7, output  # every message opened a conversation that was routed
    assert f"{stack.url('webchat')}/chat/demo" in output
    # The demo read the router's API with the token it was given.
    assert "router GET /agents: 3 item(s)" in output, output
    agents = httpx.get(
        f"{stack.url('router')}/agents", headers=stack.router_auth(), timeout=10
    ).json()["items"]
    assert {a["agent_id"]: a["status"] for a in agents} == {
        "agent-ana": "online",
        "agent-ben": "online",
        "agent-chloe": "online",
    }

    # The three new email conversations were acknowledged, and the agent's reply went
    # out: statuses from the topic, and the mail itself from the sink.
    acknowledgements = output.split("acknowledgements (")[1].split("replies (")[0]
    assert acknowledgements.count("sent      email") == 3, output
    replied = output.split("replies (support.reply.requested")[1].split("mail sent to")[0]
    assert "sent      email" in replied, output
    mail = output.split("mail sent to the customers")[1]
    assert mail.count("acknowledgement ") == 3, output
    assert mail.count("agent reply") == 1, output
    assert "the second payment was a duplicate" in mail, output
    assert len(list(sink.outbox.glob("*.eml"))) == 4

    # It ends with the console and a token the router signs agent-ana in with.
    console = output.split("Agent console: ")[1]
    assert console.startswith(f"{stack.url('router')}/console\n"), output
    assert "the router signs it in as agent-ana" in console, output
    token = console.strip().splitlines()[-1].strip()
    me = httpx.get(
        f"{stack.url('router')}/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert me.json() == {"role": "agent", "agent_id": "agent-ana"}
