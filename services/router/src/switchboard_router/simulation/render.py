"""The report as a terminal table and as one HTML page with inline SVG plots (no
script, no link outside the page: it opens anywhere, and the same report gives the same
bytes)."""

from __future__ import annotations

from collections.abc import Sequence

from switchboard_common.cloudevents import rfc3339
from switchboard_router.assignment.store import Decision
from switchboard_router.simulation.report import Example, Report, Row, reason_text

CURRENT_COLOUR = "#6b7b8c"
CANDIDATE_COLOUR = "#d9822b"


def duration(seconds: float | None) -> str:
    """12s, 4m05s, 3h02m, 2d04h: short, and exact enough for a wait."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _pair(a: str, b: str) -> str:
    return f"{a} → {b}" if a != b else a


def rows_of(report: Report) -> list[tuple[str, str, Row | None, Row | None]]:
    keys = sorted(set(report.current.rows) | set(report.candidate.rows))
    return [
        (q, c, report.current.rows.get((q, c)), report.candidate.rows.get((q, c))) for q, c in keys
    ]


def cells(a: Row | None, b: Row | None) -> list[str]:
    def get(row: Row | None, name: str) -> str:
        if row is None:
            return "-"
        if name in ("wait_p50", "wait_p90"):
            return duration(getattr(row, name))
        if name == "sla":
            return percent(row.sla_attainment)
        return str(getattr(row, name))

    return [
        _pair(get(a, name), get(b, name))
        for name in ("conversations", "wait_p50", "wait_p90", "sla", "overflowed", "still_waiting")
    ]


HEADERS = [
    "queue",
    "channel",
    "conversations",
    "wait p50",
    "wait p90",
    "first reply in SLA",
    "overflowed",
    "still waiting",
]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = [header, ["-" * w for w in widths], *rows]
    return [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in out
    ]


def _example_lines(example: Example) -> list[str]:
    def side(decision_label: str, example_side: str) -> str:
        return f"    {decision_label}: {example_side}"

    return [
        f"  {example.conversation_id}: waited {duration(example.wait_current)} → "
        f"{duration(example.wait_candidate)}",
        *(side("both     ", decision_text(d)) for d in example.before),
        side("current  ", decision_text(example.current)),
        side("candidate", decision_text(example.candidate)),
    ]


def decision_text(decision: Decision | None) -> str:
    if decision is None:
        return "(no such decision)"
    state = decision.state
    agent = f" to {state.agent_id}" if state.agent_id else ""
    return (
        f"{decision.kind}{agent} in {state.queue} ({state.priority}), "
        f"reason {reason_text(decision)}"
    )


def text(report: Report, current_name: str, candidate_name: str) -> str:
    """The terminal report: each figure as ``current → candidate`` (one value: the same)."""
    start, end = report.window
    lines = [
        f"What-if replay of {report.conversations} conversations, "
        f"{rfc3339(start)} to {rfc3339(end)}",
        f"current policy:   {current_name}",
        f"candidate policy: {candidate_name}",
        "Figures read current → candidate.",
        "",
        *_table(HEADERS, [[q, c, *cells(a, b)] for q, c, a, b in rows_of(report)]),
        "",
        "Agent occupancy by channel (agents serve every queue they qualify for), capacity",
        "held by offered or assigned conversations over the capacity of agents online:",
    ]
    for channel in sorted(set(report.current.occupancy) | set(report.candidate.occupancy)):
        a = percent(report.current.occupancy.get(channel))
        b = percent(report.candidate.occupancy.get(channel))
        lines.append(f"  {channel}: {_pair(a, b)}")
    lines += ["", f"Decisions changed: {report.changed} of {report.conversations} conversations"]
    lines += [f"  {kind}: {n}" for kind, n in report.changes.items()]
    if report.examples:
        lines += ["", "Examples (largest change in waiting time first):"]
        for example in report.examples:
            lines += _example_lines(example)
    lines += ["", *notes(report)]
    return "\n".join(lines) + "\n"


def notes(report: Report) -> list[str]:
    """How to read the figures, and what the replay could not use."""
    out = []
    if report.fidelity is not None:
        same, total = report.fidelity
        out.append(
            f"Fidelity: the current policy's replay made {same} of the {total} recorded "
            f"decisions the same way ({percent(same / total if total else None)})."
        )
    for figures in (report.current, report.candidate):
        scripts = ", ".join(f"{k} {v}" for k, v in figures.scripts.items()) or "none"
        out.append(f"Agents' work in the {figures.label} replay: {scripts} (assignments).")
        if figures.dropped:
            dropped = ", ".join(f"{k}: {v}" for k, v in figures.dropped.items())
            out.append(f"  not replayed: {dropped}")
    out.append(
        f"Handling times: the recorded episode when the same agent has the conversation, "
        f"else a recorded resolved episode of the same queue and channel ({report.donors} "
        "in the trace), picked by a hash of the conversation."
    )
    targets = ", ".join(f"{c} {duration(t)}" for c, t in sorted(report.targets.items()))
    out.append(f"First-response targets (24/7): {targets}.")
    if report.undecodable:
        out.append(f"Records that could not be decoded: {report.undecodable}")
        out += [f"  {p}" for p in report.problems]
    return out
