"""The report as one HTML page: the tables, and plots drawn as inline SVG."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from switchboard_common.cloudevents import rfc3339
from switchboard_router.simulation.render import (
    CANDIDATE_COLOUR,
    CURRENT_COLOUR,
    HEADERS,
    cells,
    decision_text,
    duration,
    notes,
    percent,
    rows_of,
)
from switchboard_router.simulation.report import Report

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;
text-align:left;font-variant-numeric:tabular-nums}th{background:#f4f4f4}
.key span{display:inline-block;width:1em;height:1em;margin:0 .3em 0 1em;vertical-align:middle}
code{font-size:.85em;color:#555}svg text{font-size:11px;fill:#333}
"""


def _f(value: float) -> str:
    """SVG coordinates with one decimal: the same text on every machine."""
    return f"{value:.1f}"


def bars(
    title: str,
    labels: Sequence[str],
    pairs: Sequence[tuple[float | None, float | None]],
    shown: Sequence[tuple[str, str]],
    *,
    scale_max: float | None = None,
) -> str:
    """Horizontal bars, current above candidate, for each label."""
    row_h, bar_h, left, width = 30, 11, 190, 620
    top = (
        max([scale_max or 0.0, *(v for pair in pairs for v in pair if v is not None)], default=1.0)
        or 1.0
    )
    height = row_h * len(labels) + 30
    parts = [f'<svg width="{left + width + 110}" height="{height}" role="img">']
    parts.append(f"<title>{html.escape(title)}</title>")
    for i, (label, (a, b), (ta, tb)) in enumerate(zip(labels, pairs, shown, strict=True)):
        y = 10 + i * row_h
        parts.append(f'<text x="0" y="{y + bar_h + 4}">{html.escape(label)}</text>')
        for j, (value, colour, shown_text) in enumerate(
            ((a, CURRENT_COLOUR, ta), (b, CANDIDATE_COLOUR, tb))
        ):
            yy = y + j * (bar_h + 1)
            w = 0.0 if value is None else width * value / top
            parts.append(
                f'<rect x="{left}" y="{yy}" width="{_f(w)}" height="{bar_h}" fill="{colour}"/>'
            )
            label_x = _f(left + w + 4)
            parts.append(
                f'<text x="{label_x}" y="{yy + bar_h - 1}">{html.escape(shown_text)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def distribution(report: Report) -> str:
    """Share of conversations that waited at most x (log scale from 1 s)."""
    width, height, left, bottom = 700, 260, 50, 30
    longest = max([1.0, *report.current.waits, *report.candidate.waits])
    span = math.log10(longest + 1)

    def x(seconds: float) -> float:
        return left + width * math.log10(seconds + 1) / span

    def y(share: float) -> float:
        return 10 + (height - bottom - 10) * (1 - share)

    parts = [f'<svg width="{left + width + 20}" height="{height}" role="img">']
    parts.append("<title>waiting time distribution</title>")
    parts.extend(
        f'<line x1="{left}" x2="{left + width}" y1="{_f(y(share))}" y2="{_f(y(share))}" '
        f'stroke="#eee"/><text x="0" y="{_f(y(share) + 4)}">{int(share * 100)}%</text>'
        for share in (0, 0.5, 0.9, 1)
    )
    parts.extend(
        f'<text x="{_f(x(tick) - 8)}" y="{height - 8}">{duration(tick)}</text>'
        f'<line x1="{_f(x(tick))}" x2="{_f(x(tick))}" y1="10" y2="{height - bottom}" '
        'stroke="#eee"/>'
        for tick in (1, 10, 60, 600, 3600, 86400)
        if tick <= longest
    )
    for waits, colour in (
        (report.current.waits, CURRENT_COLOUR),
        (report.candidate.waits, CANDIDATE_COLOUR),
    ):
        if not waits:
            continue
        n = len(waits)
        # At most 400 points: the curve looks the same, the page stays small.
        picks = sorted({min(n - 1, int(i * n / 400)) for i in range(400)} | {n - 1})
        points = " ".join(f"{_f(x(waits[i]))},{_f(y((i + 1) / n))}" for i in picks)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def page(report: Report, current_name: str, candidate_name: str) -> str:
    """The whole HTML page."""
    start, end = report.window
    esc = html.escape
    rows = rows_of(report)
    labels = [f"{q} · {c}" for q, c, _, _ in rows]
    key = (
        f'<p class="key"><span style="background:{CURRENT_COLOUR}"></span>current '
        f"<code>{esc(current_name)}</code>"
        f'<span style="background:{CANDIDATE_COLOUR}"></span>candidate '
        f"<code>{esc(candidate_name)}</code></p>"
    )
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>Switchboard what-if replay</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>What-if replay</h1>",
        f"<p>{report.conversations} conversations, {esc(rfc3339(start))} to "
        f"{esc(rfc3339(end))}. Figures read <em>current → candidate</em>.</p>",
        key,
        "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in HEADERS) + "</tr>",
    ]
    for q, c, a, b in rows:
        row = [q, c, *cells(a, b)]
        out.append("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>")
    out.append("</table>")

    def pair(name: str) -> list[tuple[float | None, float | None]]:
        return [
            (getattr(a, name) if a else None, getattr(b, name) if b else None)
            for _, _, a, b in rows
        ]

    for name, title in (("wait_p50", "Waiting time, p50"), ("wait_p90", "Waiting time, p90")):
        values = pair(name)
        out.append(f"<h2>{title}</h2>")
        out.append(bars(title, labels, values, [(duration(a), duration(b)) for a, b in values]))
    sla = pair("sla_attainment")
    out.append("<h2>First reply within the SLA target</h2>")
    out.append(bars("SLA", labels, sla, [(percent(a), percent(b)) for a, b in sla], scale_max=1))
    channels = sorted(set(report.current.occupancy) | set(report.candidate.occupancy))
    occupancy = [
        (report.current.occupancy.get(c), report.candidate.occupancy.get(c)) for c in channels
    ]
    out.append("<h2>Agent occupancy by channel</h2>")
    out.append(
        "<p>Agents serve every queue they qualify for: capacity held by offered or assigned "
        "conversations over the capacity of the agents online.</p>"
    )
    out.append(
        bars(
            "occupancy",
            channels,
            occupancy,
            [(percent(a), percent(b)) for a, b in occupancy],
            scale_max=1,
        )
    )
    out.append("<h2>Waiting time distribution</h2>")
    out.append(distribution(report))
    out.append(f"<h2>Decisions changed: {report.changed} of {report.conversations}</h2><ul>")
    out += [f"<li>{esc(kind)}: {n}</li>" for kind, n in report.changes.items()]
    out.append("</ul>")
    if report.examples:
        out.append("<h3>Examples (largest change in waiting time first)</h3><ul>")
        for example in report.examples:
            out.append(
                f"<li><b>{esc(example.conversation_id)}</b>: waited "
                f"{esc(duration(example.wait_current))} → {esc(duration(example.wait_candidate))}"
                + "".join(f"<br>both: <code>{esc(decision_text(d))}</code>" for d in example.before)
                + f"<br>current: <code>{esc(decision_text(example.current))}</code>"
                f"<br>candidate: <code>{esc(decision_text(example.candidate))}</code></li>"
            )
        out.append("</ul>")
    out.append("<h2>Notes</h2><ul>")
    out += [f"<li>{esc(line.strip())}</li>" for line in notes(report)]
    out.append("</ul></body></html>")
    return "\n".join(out) + "\n"
