"""``switchboard``: what-if replays of recorded traffic (``simulate``), the recording
they read (``export``), and a sample recording to try them on (``sample``).

    switchboard export --since 2026-03-02T00:00Z --until 2026-03-03T00:00Z -o day.jsonl
    switchboard simulate day.jsonl --candidate candidate.yaml --html report.html
    switchboard sample -o sample.jsonl

Exit status: 0 done, 2 bad arguments or a policy that does not validate (the router's
own error, file, line and field), 1 nothing to replay or Kafka unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from aiokafka.errors import KafkaError

from switchboard_common.settings import ServiceSettings, SettingsError
from switchboard_router.assignment.policy import PolicyError, RoutingPolicy, load_policy
from switchboard_router.simulation.handling import HandlingModel
from switchboard_router.simulation.page import page
from switchboard_router.simulation.render import text
from switchboard_router.simulation.replay import Outcome, RememberedLanguages, replay
from switchboard_router.simulation.report import FIRST_RESPONSE_TARGETS, Report, compare
from switchboard_router.simulation.sample import sample_trace
from switchboard_router.simulation.trace import Trace, read_trace


class _Settings(ServiceSettings):
    """Kafka connection and topic prefix, from the services' own variables."""

    service_name = "switchboard"


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _target(value: str) -> tuple[str, float]:
    channel, _, seconds = value.partition("=")
    try:
        return channel, float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CHANNEL=SECONDS, got {value!r}") from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="switchboard", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser(
        "simulate", help="replay recorded traffic through the current and a candidate policy"
    )
    simulate.add_argument("trace", nargs="?", type=Path, help="trace file (switchboard export)")
    simulate.add_argument(
        "--kafka", action="store_true", help="read the topics from Kafka instead of a file"
    )
    simulate.add_argument("--since", type=_moment, help="first moment replayed (ISO 8601)")
    simulate.add_argument("--until", type=_moment, help="moment the replay stops (excluded)")
    simulate.add_argument(
        "--policy", type=Path, help="current routing policy (default: the packaged one)"
    )
    simulate.add_argument("--candidate", type=Path, required=True, help="candidate policy")
    simulate.add_argument("--html", type=Path, help="also write the report as an HTML page")
    simulate.add_argument(
        "--jobs", type=int, default=2, help="processes for the two replays (1: one after the other)"
    )
    simulate.add_argument(
        "--first-response-target",
        type=_target,
        action="append",
        default=[],
        metavar="CHANNEL=SECONDS",
        help="first-response SLA target of a channel (repeatable)",
    )

    export = commands.add_parser("export", help="write the topics of a time range to a file")
    export.add_argument("--since", type=_moment)
    export.add_argument("--until", type=_moment)
    export.add_argument("-o", "--output", type=Path, required=True)

    sample = commands.add_parser("sample", help="write a deterministic sample trace")
    sample.add_argument("-o", "--output", type=Path, required=True)
    sample.add_argument("--policy", type=Path, help="policy it is recorded with")
    sample.add_argument("--conversations", type=int, default=2000)
    sample.add_argument("--agents", type=int, default=20)
    sample.add_argument("--hours", type=float, default=12.0)
    sample.add_argument("--seed", type=int, default=7)
    return top


def _policy(path: Path | None, option: str) -> RoutingPolicy:
    """The policy as the router loads it, refused with the router's own error."""
    try:
        return load_policy(path)
    except PolicyError as error:
        raise SettingsError(f"switchboard: {option}: {error}") from None


def _kafka_settings() -> _Settings:
    return _Settings.load()


async def _trace(args: argparse.Namespace) -> Trace:
    if args.kafka:
        from switchboard_router.simulation.export import export_lines

        lines = await export_lines(_kafka_settings(), args.since, args.until)
        return read_trace(lines)
    if args.trace is None:
        raise SettingsError("switchboard simulate: give a trace file or --kafka")
    try:
        with args.trace.open(encoding="utf-8") as handle:
            trace = read_trace(handle)
    except OSError as error:
        raise SettingsError(f"switchboard: {args.trace}: {error.strerror}") from None
    return trace.between(args.since, args.until)


#: The candidate's replay, for a forked worker to find: fork copies it, so the trace is
#: not pickled on the way in (only the outcome comes back).
_FORKED: tuple[Trace, RoutingPolicy, HandlingModel] | None = None


def _candidate_in_child() -> Outcome:
    if _FORKED is None:
        raise RuntimeError("the candidate's replay was not set before forking")
    trace, policy, model = _FORKED
    return asyncio.run(replay(trace, policy, model, label="candidate"))


async def _both(
    trace: Trace, current: RoutingPolicy, candidate: RoutingPolicy, model: HandlingModel, jobs: int
) -> tuple[Outcome, Outcome]:
    """The two replays: side by side in two processes when allowed (each is deterministic
    on its own, so the report is the same either way), else one after the other."""
    global _FORKED  # noqa: PLW0603 - handed to the forked worker, see above
    if jobs < 2 or "fork" not in multiprocessing.get_all_start_methods():
        detector = RememberedLanguages()  # each text detected once for both replays
        first = await replay(trace, current, model, label="current", detector=detector)
        second = await replay(trace, candidate, model, label="candidate", detector=detector)
        return first, second
    _FORKED = (trace, candidate, model)
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            pending = asyncio.get_running_loop().run_in_executor(pool, _candidate_in_child)
            first = await replay(trace, current, model, label="current")
            return first, await pending
    finally:
        _FORKED = None


async def simulate(args: argparse.Namespace) -> tuple[Report, str, str]:
    current = _policy(args.policy, "--policy")
    candidate = _policy(args.candidate, "--candidate")
    trace = await _trace(args)
    if not trace.records:
        raise LookupError("nothing to replay: no record decoded in that range")
    model = HandlingModel.from_trace(trace)
    ran = await _both(trace, current, candidate, model, args.jobs)
    targets = dict(FIRST_RESPONSE_TARGETS)
    targets.update(dict(args.first_response_target))
    report = compare(ran[0], ran[1], trace, targets=targets, donors=model.donors)
    current_name = str(args.policy) if args.policy else "(packaged default policy)"
    return report, current_name, str(args.candidate)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    started = time.monotonic()
    try:
        if args.command == "simulate":
            report, current_name, candidate_name = asyncio.run(simulate(args))
            sys.stdout.write(text(report, current_name, candidate_name))
            if args.html:
                args.html.write_text(page(report, current_name, candidate_name), encoding="utf-8")
            sys.stderr.write(
                f"switchboard: replayed {report.conversations} conversations twice in "
                f"{time.monotonic() - started:.1f} s\n"
            )
        elif args.command == "export":
            from switchboard_router.simulation.export import export_lines

            lines = asyncio.run(export_lines(_kafka_settings(), args.since, args.until))
            args.output.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
            sys.stderr.write(f"switchboard: exported {len(lines)} records to {args.output}\n")
        else:
            policy = _policy(args.policy, "--policy")
            lines = asyncio.run(
                sample_trace(
                    policy,
                    conversations=args.conversations,
                    agents=args.agents,
                    hours=args.hours,
                    seed=args.seed,
                )
            )
            args.output.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
            sys.stderr.write(f"switchboard: wrote {len(lines)} records to {args.output}\n")
    except SettingsError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    except LookupError as error:
        sys.stderr.write(f"switchboard: {error}\n")
        return 1
    except KafkaError as error:  # unreachable, refused: said in one line, not a traceback
        sys.stderr.write(f"switchboard: Kafka: {error!r}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
