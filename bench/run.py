"""``make bench``: every benchmark case, each beside its bare baseline, repeated.

Runs each case ``--repeat`` times (default 3) as its own process on the same real
servers, takes the median (with min and max) of the system's figure, the baseline's
figure measured in the same run, and their ratio, and writes ``docs/benchmarks.json``,
``docs/benchmarks.md`` and ``docs/benchmarks.png``. Absolute numbers on a shared 2-core
machine are noise; the ratios are the point. Targets are those of ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


#: ("ratio", ">=", 0.5): how a target reads against the median of that field.
Target = tuple[str, str, float]


@dataclass(frozen=True)
class Row:
    """A further figure a case measures in the same run (its JSON's ``rows[key]``),
    reported on its own line under the case's, with its own target."""

    key: str
    title: str
    target: Target | None = None


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    command: list[str]
    target: Target | None
    extra_target: Target | None = None
    rows: tuple[Row, ...] = ()


#: The pipeline cases read against the essential pipeline; the passthrough stays beside.
PASSTHROUGH = Row("passthrough", "↳ the same beside the bare passthrough (reference)")


def cases(quick: bool) -> list[Case]:
    seconds = "8" if quick else "15"
    pipeline = str(ROOT / "bench" / "pipeline.py")
    latency = [
        Case(
            f"pipeline_latency_{rate}",
            f"latency ack → decision at {rate} msg/s (p99), vs the essential pipeline",
            [PY, pipeline, "latency", "--rate", str(rate), "--duration", seconds],
            ("ratio", "<=", 5.0),
            ("system", "<", 100.0) if rate == 500 else None,
            rows=(PASSTHROUGH,),
        )
        for rate in (100, 250, 500)
    ]
    return [
        Case(
            "pipeline_throughput",
            "pipeline inbound → assignments, vs the essential pipeline",
            [PY, pipeline, "throughput", "--messages", "1500" if quick else "3000"],
            ("ratio", ">=", 0.5),
            rows=(
                PASSTHROUGH,
                Row(
                    "cpu",
                    "router CPU per message (/proc), beside the essential pipeline's",
                    ("system", "<=", 0.3),
                ),
            ),
        ),
        *latency,
        Case(
            "database_operations",
            "database operations per message opening a conversation",
            [PY, pipeline, "operations", "--customers", "150" if quick else "300"],
            ("system", "<=", 5.0),
            rows=(
                Row(
                    "opening_batches",
                    "↳ database commands per batch (identity and timeline batches), opening",
                ),
                Row(
                    "follow_up", "database operations per follow-up message", ("system", "<=", 3.0)
                ),
                Row(
                    "follow_up_batches",
                    "↳ database commands per batch (identity and timeline batches), follow-up",
                ),
            ),
        ),
        Case(
            "pipeline_floor",
            "the essential pipeline with 3 bulk writes per batch, vs its own 1 "
            "(what the database leaves any router)",
            [PY, "-m", "bench.floor", "--messages", "1500" if quick else "3000"],
            None,
            rows=(
                *(
                    Row(f"writes_{n}", f"↳ the same with {n} bulk writes per batch")
                    for n in (2, 5, 8)
                ),
                *(
                    Row(f"cpu_{n}", f"↳ its CPU per message with {n} bulk writes per batch")
                    for n in (3, 8)
                ),
            ),
        ),
        Case(
            "timeline_writes",
            "timeline writes, vs a bare insert_many of the same records",
            [PY, str(ROOT / "services/router/bench/timeline_writes.py"), "--duration", seconds],
            ("ratio", ">=", 0.5),
        ),
        Case(
            "smtp_accept",
            "SMTP messages accepted (10 senders)",
            [PY, str(ROOT / "services/ingest-email/bench/smtp_accept.py"), "--duration", seconds],
            ("ratio", ">=", 0.5),
        ),
        Case(
            "replies_delivered",
            "agent replies delivered by email, vs a bare SMTP client to the same relay",
            [
                PY,
                str(ROOT / "services/ingest-email/bench/replies.py"),
                "--replies",
                "300" if quick else "1000",
            ],
            None,
        ),
        Case(
            "webhook_rps",
            "webhook requests",
            [PY, str(ROOT / "services/ingest-social/bench/webhook_rps.py"), "--duration", seconds],
            ("ratio", ">=", 0.5),
        ),
        Case(
            "webchat",
            "web chat messages accepted (20 visitors' sockets, each waiting for its ack), "
            "vs a bare WebSocket echo on the same framework",
            [
                *(PY, "-m", "bench.webchat", "--clients", "20"),
                *("--messages", "100" if quick else "200"),
                # All visitors come from 127.0.0.1 and type faster than people: the abuse
                # limits would measure themselves, not the path to Kafka.
                *(f"--env={name}" for name in WEBCHAT_UNLIMITED),
            ],
            None,
        ),
        Case(
            "workspace",
            "agent workspace notes accepted (20 agents' tokens, each waiting for its 202), "
            "vs a bare endpoint publishing the same with acks=all",
            [
                *(PY, "-m", "bench.workspace", "--agents", "20", "--conversations", "5"),
                *("--notes", "50" if quick else "100", "--reads", "50" if quick else "100"),
            ],
            # The issue asking for it sets none.
            None,
            rows=(
                Row("note_cpu", "↳ router CPU per note (/proc), beside the bare endpoint's"),
                Row(
                    "inbox_reads",
                    "agent inbox reads (the same 20 agents, each its own), "
                    "vs the same bytes served static",
                ),
                Row("inbox_cpu", "↳ router CPU per inbox read (/proc), beside the static one's"),
            ),
        ),
        Case(
            "routing_decisions",
            "routing decision cost, 10 → 10,000 agents",
            [
                PY,
                str(ROOT / "services/router/bench/routing_decisions.py"),
                "--duration",
                "12" if quick else "20",
            ],
            ("ratio", "<=", 3.0),
        ),
        Case(
            "simulation",
            "what-if replay of a sample day (50 agents), vs decoding the same file",
            [
                PY,
                str(ROOT / "services/router/bench/simulation.py"),
                "--conversations",
                "5000" if quick else "20000",
            ],
            # A day of 20,000 conversations replayed in well under a minute.
            ("system", ">=", 500.0),
            rows=(
                Row(
                    "simulate_seconds",
                    "↳ switchboard simulate of that day: two replays and the report, seconds",
                    ("system", "<", 60.0),
                ),
            ),
        ),
    ]


def run_once(case: Case, out: Path) -> dict[str, Any]:
    started = time.monotonic()
    result = subprocess.run(
        [*case.command, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if result.returncode != 0 or not out.exists():
        tail = (result.stdout + result.stderr)[-3000:]
        raise RuntimeError(f"{case.name} failed (exit {result.returncode}):\n{tail}")
    figures: dict[str, Any] = json.loads(out.read_text())
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    return figures


def summarise(values: list[float | None]) -> dict[str, float] | None:
    """Median, min and max over the repetitions; None for a figure a case does not have
    (the database operations have no baseline)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"median": statistics.median(present), "min": min(present), "max": max(present)}


def figures_of(runs: list[dict[str, Any]], unit: str) -> dict[str, Any]:
    """One report line's figures from each repetition's ``system``/``baseline``/``ratio``."""
    return {
        "unit": unit,
        "system": summarise([r["system"] for r in runs]),
        "baseline": summarise([r.get("baseline") for r in runs]),
        "ratio": summarise([r.get("ratio") for r in runs]),
    }


def fmt(s: dict[str, float] | None) -> str:
    """A summary as the report shows it: median [min – max]."""
    return f"{s['median']:.3g} [{s['min']:.3g} – {s['max']:.3g}]" if s else "–"


def met(target: Target | None, summary: dict[str, Any]) -> bool | None:
    if target is None or summary[target[0]] is None:
        return None
    field, op, bound = target
    value = float(summary[field]["median"])
    verdicts = {">=": value >= bound, "<=": value <= bound, "<": value < bound}
    return verdicts[op]


def peak_rss(figures: dict[str, Any]) -> dict[str, float]:
    """Every peak-RSS figure a case reported, by process name."""
    found: dict[str, float] = {}

    def walk(node: Any, name: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if "rss" in key and isinstance(value, int | float):
                    found[f"{name}:{key}"] = float(value)
                elif "rss" in key and isinstance(value, dict):
                    for proc, mb in value.items():
                        if isinstance(mb, int | float):
                            found[proc] = max(found.get(proc, 0.0), float(mb))
                else:
                    walk(value, name)

    walk(figures, figures.get("case", "?"))
    return found


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` on the machine described below. Each case runs the",
        "system and its bare baseline in the same run on the same real servers (Apache",
        "Kafka and the MongoDB-wire server the tests use); figures are the median of",
        f"{report['repeat']} repetitions with [min – max]. On a shared 2-core machine",
        "absolute numbers are noise: read the ratios.",
        "",
        f"- date: {report['date']}  commit: `{report['commit']}`",
        f"- machine: {report['machine']}",
        f"- load average before / after: {report['load_before']} / {report['load_after']}",
        "",
        "| case | unit | system | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]

    def line(title: str, entry: dict[str, Any], *targets: Target | None) -> str:
        target_text = "; ".join(f"{t[0]} {t[1]} {t[2]}" for t in targets if t) or "–"
        verdict = entry["met"]
        return (
            f"| {title} | {entry['unit']} | {fmt(entry['system'])} | "
            f"{fmt(entry['baseline'])} | {fmt(entry['ratio'])} | {target_text} | "
            f"{'yes' if verdict else 'no' if verdict is not None else '–'} |"
        )

    for entry in report["cases"].values():
        if "error" in entry:
            lines.append(f"| {entry['title']} | – | failed: {entry['error'][:80]} | | | | no |")
            continue
        title = entry["title"]
        if "measured" in entry:
            title += f" (measured {entry['measured']})"
        lines.append(line(title, entry, entry["target"], entry.get("extra_target")))
        lines.extend(line(r["title"], r, r["target"]) for r in entry.get("rows", {}).values())
    lines += ["", "## Peak memory (RSS, MB, max over repetitions)", ""]
    lines += ["| process | MB |", "|---|---|"]
    for proc, mb in sorted(report["peak_rss_mb"].items()):
        lines.append(f"| {proc} | {mb:.0f} |")
    lines += ["", "## Notes", "", report.get("notes", "").strip() or "–", ""]
    return "\n".join(lines)


def render_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    rates: list[int] = []
    series: dict[str, list[float]] = {
        "router p50": [],
        "router p99": [],
        "essential p50": [],
        "essential p99": [],
        "passthrough p50": [],
        "passthrough p99": [],
    }
    for name, entry in sorted(report["cases"].items()):
        if not name.startswith("pipeline_latency_") or "error" in entry:
            continue
        runs = entry["runs"]
        rates.append(int(name.rsplit("_", 1)[1]))
        for side in ("router", "essential", "passthrough"):
            # Reports written before the essential pipeline have no such side.
            if all(side in r["detail"] for r in runs):
                for q in ("p50", "p99"):
                    series[f"{side} {q}"].append(
                        statistics.median(r["detail"][side][f"{q}_ms"] for r in runs)
                    )
    for label, values in series.items():
        if values:
            style = "-" if label.startswith("router") else ":" if "pass" in label else "--"
            left.plot(rates, values, marker="o", linestyle=style, label=label)
    left.set_xlabel("offered load (messages/s)")
    left.set_ylabel("ack → decision latency (ms)")
    left.set_yscale("log")
    left.set_title("Latency vs offered load")
    left.grid(True, alpha=0.3)
    left.legend()
    names, ratios, lows, highs = [], [], [], []
    for name, entry in report["cases"].items():
        if "error" in entry or name.startswith("pipeline_latency_") or not entry["ratio"]:
            continue
        names.append(name.replace("_", "\n"))
        ratio = entry["ratio"]
        ratios.append(ratio["median"])
        lows.append(ratio["median"] - ratio["min"])
        highs.append(ratio["max"] - ratio["median"])
    right.bar(names, ratios, yerr=[lows, highs], capsize=4, color="#4c78a8")
    right.axhline(0.5, color="#e45756", linestyle=":", label="throughput target 0.5×")
    right.set_ylabel("system / baseline (median, min–max)")
    right.set_title("Ratios by case (decisions: cost growth, lower is better)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


#: The web chat's abuse limits lifted for the benchmark's machine-speed visitors.
WEBCHAT_UNLIMITED = (
    "WEBCHAT_VISITOR_BURST=10000",
    "WEBCHAT_VISITOR_PER_SECOND=1000",
    "WEBCHAT_IP_BURST=100000",
    "WEBCHAT_IP_PER_SECOND=10000",
    "WEBCHAT_MAX_CONNECTIONS_PER_IP=1000",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="run only these cases")
    parser.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--notes",
        type=Path,
        default=ROOT / "bench" / "NOTES.md",
        help="a Markdown file appended as notes (default: bench/NOTES.md)",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: rewrite the report and plot from OUT/benchmarks.json "
        "(with the current notes)",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="with --only: put the cases measured into the existing OUT/benchmarks.json, "
        "each marked with its own date and commit, and keep the others",
    )
    args = parser.parse_args()
    if args.update and not args.only:
        parser.error("--update needs --only")
    if args.render:
        written: dict[str, Any] = json.loads((args.out / "benchmarks.json").read_text())
        write_report(written, args.out, args.notes)
        return 0

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "repeat": args.repeat,
        "cases": {},
        "peak_rss_mb": {},
    }
    selected = [c for c in cases(args.quick) if not args.only or c.name in args.only]
    with tempfile.TemporaryDirectory() as tmp:
        for case in selected:
            runs: list[dict[str, Any]] = []
            error = None
            for rep in range(args.repeat):
                print(f"[bench] {case.name} {rep + 1}/{args.repeat}", flush=True)
                try:
                    runs.append(run_once(case, Path(tmp) / f"{case.name}-{rep}.json"))
                except (RuntimeError, subprocess.TimeoutExpired) as failure:
                    error = str(failure)
                    print(f"[bench] {case.name} failed: {error[-500:]}", flush=True)
                    break
            if error is not None and not runs:
                report["cases"][case.name] = {"title": case.title, "error": error}
                continue
            entry: dict[str, Any] = {
                "title": case.title,
                **figures_of(runs, runs[0].get("unit", "")),
                "target": case.target,
                "extra_target": case.extra_target,
                "runs": runs,
            }
            verdicts = [met(case.target, entry), met(case.extra_target, entry)]
            known = [v for v in verdicts if v is not None]
            # A case with no target (a reference measurement) is neither met nor missed.
            entry["met"] = all(known) if known else None
            entry["rows"] = {}
            for row in case.rows:
                found = [r["rows"][row.key] for r in runs]
                figures = figures_of(found, found[0]["unit"])
                figures.update(title=row.title, target=row.target, met=met(row.target, figures))
                entry["rows"][row.key] = figures
            report["cases"][case.name] = entry
            for run in runs:
                for proc, mb in peak_rss(run).items():
                    report["peak_rss_mb"][proc] = max(report["peak_rss_mb"].get(proc, 0.0), mb)
            print(
                f"[bench] {case.name}: system {fmt(entry['system'])}, baseline "
                f"{fmt(entry['baseline'])}, ratio {fmt(entry['ratio'])}",
                flush=True,
            )
    report["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.update:
        report = updated(json.loads((args.out / "benchmarks.json").read_text()), report)
    write_report(report, args.out, args.notes)
    return 0


def updated(previous: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """The previous report with this run's cases put in (in case order), each naming
    the date and commit it was measured on, since the report's own are the previous
    run's."""
    order = [c.name for c in cases(quick=False)]
    merged = dict(previous["cases"])
    for name, entry in report["cases"].items():
        merged[name] = {**entry, "measured": f"{report['date']} on `{report['commit']}`"}
    previous["cases"] = {n: merged[n] for n in sorted(merged, key=order.index)}
    for proc, mb in report["peak_rss_mb"].items():
        previous["peak_rss_mb"][proc] = max(previous["peak_rss_mb"].get(proc, 0.0), mb)
    return previous


def write_report(report: dict[str, Any], out: Path, notes: Path | None) -> None:
    if notes is not None and notes.exists():
        report["notes"] = notes.read_text()
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "benchmarks.md").write_text(render_markdown(report))
    render_plot(report, out / "benchmarks.png")
    print(f"[bench] wrote {out / 'benchmarks.md'}, .json and .png", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
