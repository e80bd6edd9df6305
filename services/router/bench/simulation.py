"""Benchmark: what-if replays, in simulated conversations per second.

A deterministic sample day (``switchboard sample``: by default 20,000 conversations, 50
agents, 24 hours) is written to a file first, untimed. ``system`` reads and decodes that
file and replays it through the current policy (``Replay``: the router's engine on a
simulated clock, agents' work re-timed from the recording); ``baseline`` reads and
decodes the same file and iterates its records without routing. Both are conversations
per second of wall time in the same process; ``ratio`` is the share of the bare reading
speed the replay keeps. ``rows.simulate_seconds`` is the whole ``switchboard simulate``
of the day (two replays and the report).

    uv run python services/router/bench/simulation.py --conversations 20000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from switchboard_router.assignment.policy import load_policy
from switchboard_router.simulation import cli
from switchboard_router.simulation.handling import HandlingModel
from switchboard_router.simulation.replay import replay
from switchboard_router.simulation.sample import sample_trace
from switchboard_router.simulation.trace import read_trace

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "what-if"


def _read(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return read_trace(handle)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    current = EXAMPLES / "current.yaml"
    candidate = EXAMPLES / "candidate-relax-sooner.yaml"
    policy = load_policy(current)
    lines = await sample_trace(
        policy, conversations=args.conversations, agents=args.agents, hours=args.hours
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "day.jsonl"
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")

        started = time.monotonic()
        trace = _read(path)
        conversations = {str(getattr(r.event, "conversation_id", "")) for r in trace.records} - {""}
        read_seconds = time.monotonic() - started

        started = time.monotonic()
        trace = _read(path)
        outcome = await replay(trace, policy, HandlingModel.from_trace(trace), label="current")
        replay_seconds = time.monotonic() - started

        started = time.monotonic()
        parsed = cli.parser().parse_args(
            ["simulate", str(path), "--policy", str(current), "--candidate", str(candidate)]
        )
        await cli.simulate(parsed)
        simulate_seconds = time.monotonic() - started
    simulated = len(outcome.decisions)
    system = simulated / replay_seconds
    baseline = len(conversations) / read_seconds
    return {
        "case": "simulation",
        "unit": "simulated conversations/s",
        "system": round(system, 1),
        "baseline": round(baseline, 1),
        "ratio": round(system / baseline, 4),
        "description": (
            f"a day of {args.conversations} conversations and {args.agents} agents replayed "
            "(decoding included) vs the same file decoded without routing"
        ),
        "records": len(trace.records),
        "replay_seconds": round(replay_seconds, 2),
        "rows": {"simulate_seconds": {"unit": "s", "system": round(simulate_seconds, 2)}},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=20000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
