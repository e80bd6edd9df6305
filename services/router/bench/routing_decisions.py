"""Benchmark: routing decisions per second and p99 decision latency with 10, 100, 1,000
and 10,000 agents, on the real MongoDB-wire server.

A decision is ``AssignmentEngine.on_activity`` for a new conversation: classification
(language model included), matching over the in-memory agent index, the atomic
reservation of a capacity slot (insert by ``_id``), the exclusive claim of the decision
(insert by ``_id``), the head write and the sticky record. Publishing is a no-op here
(Kafka is measured by the pipeline case). Every conversation is resolved after its
decision, untimed, so agents never fill up and every timed decision is an assignment.

``system`` is the mean cost of a decision with the most agents, ``baseline`` with the
fewest; ``ratio`` is how the cost grows (target: ≤ 3 from 10 to 10,000 agents).

    uv run python services/router/bench/routing_decisions.py --duration 20 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from switchboard_common.contract import AgentStatus, Channel, ConversationActivity
from switchboard_common.kafka import Outgoing
from switchboard_common.mongo import Document
from switchboard_router.assignment.classify import Py3LangIdDetector
from switchboard_router.assignment.clock import SystemClock
from switchboard_router.assignment.engine import AssignmentEngine
from switchboard_router.assignment.matcher import choose_agent
from switchboard_router.assignment.model import Agent, RouteStatus
from switchboard_router.assignment.policy import load_policy
from switchboard_router.assignment.store import MongoAssignmentStore

SKILLS = ["billing", "technical", "orders", "vip", "returns", "fraud", "b2b", "api"]
LANGUAGES = ["en", "es", "fr", "de", "pt"]
TEXTS = {
    "en": "Hello, my invoice shows a payment I did not make, please check my order",
    "es": "Hola, mi factura muestra un pago que no hice, por favor revisen mi pedido",
    "fr": "Bonjour, ma facture montre un paiement que je n'ai pas fait, merci de vérifier",
    "de": "Hallo, meine Rechnung zeigt eine Zahlung, die ich nicht gemacht habe, bitte prüfen",
    "pt": "Olá, a minha fatura mostra um pagamento que não fiz, por favor verifiquem",
}


async def discard(items: Sequence[Outgoing]) -> None:
    del items


def agents(count: int, rng: random.Random) -> list[Agent]:
    out = []
    for i in range(count):
        # Every agent can take every conversation: the matcher scores all of them, the
        # worst case for how the cost grows with the number of agents.
        skills = {s: rng.randint(1, 10) for s in [*SKILLS[:3], *rng.sample(SKILLS[3:], 2)]}
        out.append(
            Agent(
                agent_id=f"agent-{i:05d}",
                display_name=f"Agent {i}",
                skills=skills,
                languages=frozenset(LANGUAGES),
                capacity={Channel.EMAIL: 3, Channel.WHATSAPP: 2},
                status=AgentStatus.ONLINE,
                version=(0, i),
            )
        )
    return out


async def run_size(
    client: AsyncMongoClient[Document], size: int, seconds: float, rng: random.Random
) -> dict[str, Any]:
    db = client[f"bench_routing_{uuid.uuid4().hex[:10]}"]
    store = MongoAssignmentStore(db)
    await store.ensure_indexes()
    engine = AssignmentEngine(
        store=store,
        policy=load_policy(),
        clock=SystemClock(),
        publish=discard,
        detector=Py3LangIdDetector(),
    )
    for agent in agents(size, rng):
        engine.directory.apply(agent)
    latencies: list[float] = []
    matcher: list[float] = []
    try:
        deadline = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < deadline or n < 20:
            language = rng.choice(LANGUAGES)
            cid = f"conv-{size}-{n}"
            activity = ConversationActivity(
                conversation_id=cid,
                customer_id=f"cust-{size}-{n}",
                channel=Channel.EMAIL,
                kind="opened",
                message_id=f"m-{cid}",
                received_at=datetime.now(UTC),
                text=TEXTS[language],
            )
            started = time.perf_counter()
            outcome = await engine.on_activity(activity)
            latencies.append(time.perf_counter() - started)
            state = await engine.current(cid)
            if outcome != "routed" or state is None or state.status != RouteStatus.ASSIGNED:
                raise RuntimeError(f"{cid} was not assigned ({outcome})")
            # For the record: the pure reference matcher over every agent (what the index avoids).
            waiting = state.model_copy(update={"status": RouteStatus.WAITING})
            started = time.perf_counter()
            choose_agent(
                waiting, engine.directory.candidates("email"), engine.policy, state.decided_at
            )
            matcher.append(time.perf_counter() - started)
            await engine.on_resolved(cid, f"bench:{cid}")  # untimed: keeps agents free
            n += 1
    finally:
        await client.drop_database(db.name)
    latencies.sort()
    total = sum(latencies)
    return {
        "agents": size,
        "decisions": len(latencies),
        "decisions_per_second": round(len(latencies) / total, 1),
        "mean_ms": round(1000 * total / len(latencies), 3),
        "p50_ms": round(1000 * statistics.median(latencies), 3),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3),
        "reference_matcher_mean_ms": round(1000 * statistics.fmean(matcher), 3),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    url = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017")
    client: AsyncMongoClient[Document] = AsyncMongoClient(url, tz_aware=True)
    rng = random.Random(11)  # noqa: S311 - synthetic benchmark data, not security
    sizes = [int(s) for s in args.sizes.split(",")]
    per_size = max(1.0, args.duration / len(sizes))
    try:
        # Warm-up (language model, connection pool), not reported.
        await run_size(client, sizes[0], 0.5, rng)
        results = [await run_size(client, size, per_size, rng) for size in sizes]
    finally:
        await client.close()
    base, top = results[0], results[-1]
    return {
        "case": "routing_decisions",
        "unit": "ms per decision (mean)",
        "system": top["mean_ms"],
        "baseline": base["mean_ms"],
        "ratio": round(top["mean_ms"] / base["mean_ms"], 3),
        "description": (
            f"decision cost with {top['agents']} agents (system) vs {base['agents']} agents "
            "(baseline), reservation and claim on the real database included"
        ),
        "sizes": results,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds, all sizes")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--sizes", default="10,100,1000,10000")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
