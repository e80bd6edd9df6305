"""JSON Schema export of every contract payload (``make schemas``).

Writes one file per ``ce_type`` plus ``index.json`` (topic → key → event types).
``--check`` compares instead of writing and exits 1 when the files are out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from switchboard_common.contract.events import model_json_schema
from switchboard_common.contract.topics import TOPICS


def render() -> dict[str, str]:
    """File name → content for every schema and the index."""
    files: dict[str, str] = {}
    index: dict[str, object] = {}
    for topic in TOPICS:
        index[topic.name] = {
            "key": topic.key,
            "description": topic.description,
            "partitions": topic.partitions,
            "ce_types": {ce_type: f"{ce_type}.json" for ce_type in sorted(topic.types)},
        }
        for ce_type, model in topic.types.items():
            schema = model_json_schema(model)
            schema["$id"] = f"https://switchboard.dev/schemas/{ce_type}.json"
            schema["x-ce-type"] = ce_type
            schema["x-topic"] = topic.name
            files[f"{ce_type}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    files["index.json"] = json.dumps(index, indent=2, sort_keys=True) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/schemas"))
    parser.add_argument("--check", action="store_true", help="fail if files are out of date")
    args = parser.parse_args(argv)
    return sync_generated(
        render(), args.out, check=args.check, what="JSON Schemas", regenerate="make schemas"
    )


def sync_generated(
    files: dict[str, str], out: Path, *, check: bool, what: str, regenerate: str
) -> int:
    """Write generated ``files`` (name under ``out`` → content) where they differ, or with
    ``check`` only report the stale ones: exit status 1 if any, else 0."""
    stale = []
    for name, content in sorted(files.items()):
        path = out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        stale.append(str(path))
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    if check and stale:
        sys.stderr.write(
            f"{what} are out of date with the code; run `{regenerate}`:\n  "
            + "\n  ".join(stale)
            + "\n"
        )
        return 1
    if not check:
        sys.stderr.write(f"{len(stale)} file(s) of {what} written under {out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
