"""Benchmark: the agent workspace's HTTP API, the router versus a bare baseline.

Both sides are a process on 127.0.0.1 serving FastAPI on uvicorn through
``switchboard_common.http``, driven by the same clients in the same run. The system is
``python -m switchboard_router`` in a devkit ``Stack`` (its own topics and database on
the real Kafka and MongoDB-wire server); the baseline is ``bench/workspace_baseline.py``.

Set-up (not measured): ``--agents`` agents (profile and presence on the agent events
topic, as a helpdesk frontend sends them) with room for ``--conversations`` email
conversations each, then as many new customers' messages on ``support.inbound.v1`` as
ingest publishes them; the router opens and assigns every conversation, each agent
holding ``--conversations`` of them.

1. **Writes** (the case's figure, notes/s): every agent at the same time, with its own
   agent token, posts ``--notes`` internal notes (``POST /conversations/{id}/notes``, a
   fresh ``request_id`` each, on its own conversations in turn) one after another,
   waiting for each 202. The router answers only after its request claim (one unique
   insert, after an ``_id`` read of the request id and of the conversation) and Kafka's
   acknowledgement (``acks=all``); the baseline publishes a value of the same fields and
   size with ``acks=all`` and answers 202, no claim and no checks.
2. **Inbox reads** (row ``inbox_reads``, reads/s): every agent at the same time reads its
   own inbox (``GET /agents/{id}/conversations``) ``--reads`` times, one after another;
   the baseline serves the router's answer for agent 0, captured before, as static bytes.

Bounded: ``agents x notes`` writes and ``agents x reads`` reads per side, and
``--timeout`` seconds per phase.

    uv run python -m bench.workspace --agents 20 --notes 100 --reads 100 --json out.json

Writes ``{"case", "unit", "system", "baseline", "ratio", "rows", ...}``: requests per
second, latency p50/p99, server CPU per request (``/proc``) and the client's own CPU
share (near 1.0: the client, not the server, is the limit), and refusals by status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from switchboard_common.contract import (
    AGENT_EVENTS,
    CONVERSATION_EVENTS,
    INBOUND,
    AgentStatus,
    AgentStatusChanged,
    AgentUpserted,
    Channel,
    ContractModel,
    TopicNames,
)
from switchboard_common.topics import create_topics, delete_topics
from switchboard_devkit.running.inprocess import free_port
from switchboard_devkit.running.processes import (
    ServiceProcess,
    ServiceSpec,
    cpu_seconds,
    peak_rss_mb,
)
from switchboard_devkit.running.stack import TEST_SECRETS, Stack, running_stack
from switchboard_devkit.testing.kafka_probe import unique
from switchboard_devtools.testing.router_timeline import eventually, inbound, produce
from switchboard_router.agent_tokens import AgentTokens
from switchboard_router.timeline.identity import identity_of

#: One routing queue, no language detection: the set-up only needs every conversation
#: assigned; the routes measured do not depend on the policy.
POLICY = """
classification: {language: {detect: false}}
queues: [{name: general}]
"""
NOTE = "Customer called back: the parcel was left with a neighbour, closing after reply."
TEXT = "Hello, I have a question about my account, could somebody get back to me?"


@dataclass(frozen=True)
class Agent:
    agent_id: str
    headers: dict[str, str]
    conversations: list[str]


#: One request of an agent: (method, path, JSON body or None).
Request = Callable[[Agent, int], tuple[str, str, dict[str, Any] | None]]


def note(agent: Agent, number: int) -> tuple[str, str, dict[str, Any] | None]:
    conversation = agent.conversations[number % len(agent.conversations)]
    body = {"request_id": uuid.uuid4().hex, "text": NOTE}
    return "POST", f"/conversations/{conversation}/notes", body


def inbox(agent: Agent, _number: int) -> tuple[str, str, dict[str, Any] | None]:
    return "GET", f"/agents/{agent.agent_id}/conversations", None


async def one_agent(
    http: httpx.AsyncClient,
    agent: Agent,
    *,
    request: Request,
    count: int,
    expected: int,
    latencies: list[float],
    refusals: Counter[str],
) -> int:
    """``count`` requests one after another, each after the previous one's answer;
    returns how many got ``expected``."""
    done = 0
    for number in range(count):
        method, path, body = request(agent, number)
        started = time.perf_counter()
        answer = await http.request(method, path, json=body, headers=agent.headers)
        if answer.status_code == expected:
            latencies.append(time.perf_counter() - started)
            done += 1
        else:
            refusals[str(answer.status_code)] += 1
    return done


async def load(
    base: str, agents: list[Agent], request: Request, *, count: int, expected: int, timeout: float
) -> dict[str, Any]:
    """Every agent at once, ``count`` requests each; the clock runs from the first
    request to the last answer (connections are opened by a request each before)."""
    latencies: list[float] = []
    refusals: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=len(agents), max_keepalive_connections=len(agents))
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0) as http:

        async def every_agent(n: int, seen: list[float], refused: Counter[str]) -> list[int]:
            return await asyncio.gather(
                *(
                    one_agent(
                        http,
                        a,
                        request=request,
                        count=n,
                        expected=expected,
                        latencies=seen,
                        refusals=refused,
                    )
                    for a in agents
                )
            )

        # Every agent's connection open before the clock starts (not counted).
        await every_agent(1, [], Counter())
        async with asyncio.timeout(timeout):
            started, cpu_before = time.perf_counter(), time.process_time()
            done = await every_agent(count, latencies, refusals)
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "per_s": sum(done) / elapsed,
        "answered": sum(done),
        "refused": dict(refusals),
        "seconds": elapsed,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "client_cpu_share": (time.process_time() - cpu_before) / elapsed,
    }


def measure(
    process: ServiceProcess, agents: list[Agent], args: argparse.Namespace
) -> dict[str, Any]:
    """Writes, then inbox reads, on one server: rates, latencies and its CPU per request."""
    assert process.process is not None
    pid = process.process.pid
    result: dict[str, Any] = {}
    phases: tuple[tuple[str, Request, int, int], ...] = (
        ("writes", note, args.notes, 202),
        ("reads", inbox, args.reads, 200),
    )
    for phase, request, count, expected in phases:
        cpu_before = cpu_seconds(pid)
        run = load(
            process.base_url, agents, request, count=count, expected=expected, timeout=args.timeout
        )
        figures = asyncio.run(run)
        cpu = cpu_seconds(pid) - cpu_before
        figures["server_cpu_ms_per_request"] = cpu * 1000 / max(figures["answered"], 1)
        result[phase] = figures
    result["peak_rss_mb"] = peak_rss_mb(pid)
    return result


def warmed_then_measured(
    process: ServiceProcess, agents: list[Agent], args: argparse.Namespace
) -> dict[str, Any]:
    """``measure`` after a warm-up that is not counted: a few of each request, one agent."""
    measure(process, agents[:1], argparse.Namespace(**{**vars(args), "notes": 5, "reads": 5}))
    return measure(process, agents, args)


async def prepare(stack: Stack, args: argparse.Namespace) -> list[Agent]:
    """Agents online, each holding ``args.conversations`` new customers' conversations."""
    tokens = AgentTokens(TEST_SECRETS["ROUTER_AGENT_TOKEN_SECRET"])
    now = datetime.now(UTC)
    ids = [f"agent-{n:02}" for n in range(args.agents)]
    team: list[tuple[str, str, ContractModel]] = []
    for agent_id in ids:
        profile = AgentUpserted(
            agent_id=agent_id,
            display_name=agent_id,
            skills={},
            capacity={Channel.EMAIL: args.conversations},
            languages=["en"],
        )
        presence = AgentStatusChanged(agent_id=agent_id, status=AgentStatus.ONLINE)
        team += [(AGENT_EVENTS, agent_id, profile), (AGENT_EVENTS, agent_id, presence)]
    await produce(stack.kafka_bootstrap, stack.topics, team)
    read = stack.router_auth()
    async with httpx.AsyncClient(base_url=stack.url("router"), headers=read, timeout=30) as http:

        async def online() -> bool:
            items = (await http.get("/agents", params={"limit": 500})).json()["items"]
            return bool({a["agent_id"] for a in items if a["status"] == "online"} >= set(ids))

        await eventually(online, timeout=args.timeout, interval=0.5)
        total: int = args.agents * args.conversations
        messages = [
            inbound(
                f"bench-ws-{n}",
                sender=f"customer{n}@bench.example.com",
                display_name=f"Customer {n}",
                at=now,
                subject="Question about my account",
                text=TEXT,
            )
            for n in range(total)
        ]
        await produce(
            stack.kafka_bootstrap, stack.topics, [(INBOUND, identity_of(m), m) for m in messages]
        )
        held: dict[str, list[str]] = {}

        async def assigned() -> bool:
            held.clear()
            page = await http.get("/conversations", params={"status": "assigned", "limit": 200})
            for item in page.json()["items"]:
                held.setdefault(item["agent_id"], []).append(item["conversation_id"])
            return sum(len(c) for c in held.values()) >= total

        await eventually(assigned, timeout=args.timeout, interval=0.5)
    return [
        Agent(
            agent_id,
            {"Authorization": f"Bearer {tokens.mint(agent_id, now=now, ttl_seconds=7200)}"},
            sorted(held[agent_id]),
        )
        for agent_id in ids
    ]


def system(args: argparse.Namespace, inbox_file: Path) -> tuple[dict[str, Any], list[Agent]]:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    mongodb = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017/")
    policy = inbox_file.parent / "routing.yaml"
    policy.write_text(POLICY)
    extra = {
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
        "ROUTER_POLICY_FILE": str(policy),
    }
    with running_stack(kafka, mongodb, "router", extra_env=extra) as stack:
        try:
            agents = asyncio.run(prepare(stack, args))
            router = stack.services["router"]
            # The router's answer, for the bare side to serve (notes do not change it).
            answer = httpx.get(
                f"{router.base_url}/agents/{agents[0].agent_id}/conversations",
                headers=agents[0].headers,
            )
            answer.raise_for_status()
            inbox_file.write_bytes(answer.content)
            result = warmed_then_measured(router, agents, args)
            result["inbox_bytes"] = len(answer.content)
            result["inbox_items"] = len(answer.json()["items"])
            return result, agents
        finally:
            stack.stop()
            stack.remove_data()


def baseline(args: argparse.Namespace, inbox_file: Path, agents: list[Agent]) -> dict[str, Any]:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    topics = TopicNames(f"{unique('wb')}.")
    asyncio.run(create_topics(kafka, prefix=topics.prefix, partitions=3))
    spec = ServiceSpec(
        "workspace-baseline", "bench.workspace_baseline", "WORKSPACE_BASELINE_HTTP_PORT", 0
    )
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "WORKSPACE_BASELINE_HTTP_PORT": str(free_port()),
        "WORKSPACE_BASELINE_TOPIC": topics(CONVERSATION_EVENTS),
        "WORKSPACE_BASELINE_INBOX": str(inbox_file),
    }
    bare = ServiceProcess(spec, env)
    bare.start()
    try:
        bare.wait_ready(timeout=60)
        return warmed_then_measured(bare, agents, args)
    finally:
        bare.stop()
        asyncio.run(delete_topics(kafka, prefix=topics.prefix))


def row(unit: str, field: str, measured: dict[str, Any], bare: dict[str, Any]) -> dict[str, Any]:
    """A report line: the system's and the baseline's ``field`` and their ratio."""
    return {
        "unit": unit,
        "system": round(measured[field], 3),
        "baseline": round(bare[field], 3),
        "ratio": round(measured[field] / bare[field], 3) if bare[field] else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=20, help="agents at the same time")
    parser.add_argument("--conversations", type=int, default=5, help="conversations per agent")
    parser.add_argument("--notes", type=int, default=100, help="notes per agent")
    parser.add_argument("--reads", type=int, default=100, help="inbox reads per agent")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per phase, at most")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    if args.agents * args.conversations > 200:
        parser.error("at most 200 conversations in all (one page of the set-up's check)")

    with tempfile.TemporaryDirectory() as tmp:
        inbox_file = Path(tmp) / "inbox.json"
        measured, agents = system(args, inbox_file)
        # The same agents' requests (tokens, paths) go to the baseline, which reads
        # neither.
        bare = baseline(args, inbox_file, agents)
    router, bare_writes, bare_reads = measured["writes"], bare["writes"], bare["reads"]
    cpu = "ms CPU per request"
    result: dict[str, Any] = {
        "case": "workspace",
        **row("notes/s", "per_s", router, bare_writes),
        "rows": {
            "note_cpu": row(cpu, "server_cpu_ms_per_request", router, bare_writes),
            "inbox_reads": row("reads/s", "per_s", measured["reads"], bare_reads),
            "inbox_cpu": row(cpu, "server_cpu_ms_per_request", measured["reads"], bare_reads),
        },
        "agents": args.agents,
        "conversations_per_agent": args.conversations,
        "notes_per_agent": args.notes,
        "reads_per_agent": args.reads,
        "inbox_bytes": measured["inbox_bytes"],
        "inbox_items": measured["inbox_items"],
        "detail": {
            "router": {k: measured[k] for k in ("writes", "reads")},
            "baseline": {k: bare[k] for k in ("writes", "reads")},
        },
        "peak_rss_mb": {
            "router-workspace": measured["peak_rss_mb"],
            "workspace-baseline": bare["peak_rss_mb"],
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
