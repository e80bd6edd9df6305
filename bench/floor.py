"""What the database allows any router here: the essential pipeline with 1, 2, 3, 5 and 8
bulk writes per consumed batch, in the same run.

The router's throughput target is a ratio to the essential pipeline, which makes one
database write per batch. A router that keeps its guarantees makes more: on its two
hops it reads what it knows about the senders, claims identities, stores the message and
its conversation, and claims the routing step and the agent's slot — each a round trip
whose answer the next one needs. This case prices those round trips alone, with no
routing work: each side is ``essential.py --writes N`` (the batch inserted N times, one
bulk command after another, in N collections), and the report gives each N's throughput
beside N = 1's, with the CPU the process spent per message. If three writes per batch
already cost half the throughput, no design that needs three dependent round trips
reaches 0.5× on this database, however little CPU it spends.

    # from the repository root (``bench.pipeline`` is imported as a module)
    uv run python -m bench.floor --messages 3000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from bench.pipeline import BaselineSide, measure

from switchboard_devkit.servers.infra import ensure_infra
from switchboard_devkit.testing.kafka_probe import unique

#: Bulk writes per batch, the first the essential pipeline itself; 8 is about what the
#: router's two hops issue per batch of opening messages (``database_operations``).
WRITES = (1, 2, 3, 5, 8)
#: The report's own line: the fewest dependent round trips a router could get away with.
HEADLINE = 3


async def floor_case(messages: int) -> dict[str, Any]:
    infra = ensure_infra()
    run = unique("f")
    results: dict[int, dict[str, Any]] = {}
    try:
        for writes in WRITES:
            side = BaselineSide(
                "essential", infra.kafka_bootstrap, infra.mongodb_url, ["--writes", str(writes)]
            )
            await side.start()
            try:
                await measure(side, 50, None, f"{run}-warm-{writes}")
                results[writes] = await measure(side, messages, None, f"{run}-{writes}")
            finally:
                await side.stop()
    finally:
        infra.close()
    unit = "messages/s"
    one = results[1]["throughput"]

    def row(writes: int) -> dict[str, Any]:
        figure = results[writes]["throughput"]
        return {"unit": unit, "system": figure, "baseline": one, "ratio": figure / one}

    def cpu(writes: int) -> dict[str, Any]:
        figure = results[writes]["cpu_ms_per_message"]["essential"]
        alone = results[1]["cpu_ms_per_message"]["essential"]
        return {
            "unit": "ms CPU per message",
            "system": figure,
            "baseline": alone,
            "ratio": figure / alone,
        }

    return {
        "case": "pipeline_floor",
        **row(HEADLINE),
        "rows": {
            **{f"writes_{n}": row(n) for n in WRITES if n not in (1, HEADLINE)},
            **{f"cpu_{n}": cpu(n) for n in (HEADLINE, 8)},
        },
        "detail": {str(n): r for n, r in results.items()},
        "pid": os.getpid(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = asyncio.run(floor_case(args.messages))
    text = json.dumps(figures, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
