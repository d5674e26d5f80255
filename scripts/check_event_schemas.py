#!/usr/bin/env python3
"""The events' JSON Schemas (docs/schemas) against the code and against what the connector really emits.

Checks that docs/schemas/index.json names a schema for exactly the detail-types `shared/events` publishes, that each
schema is a valid draft 2020-12 schema, that each example in docs/events.md validates against its type's schema, and
then that every event in the given files (JSON lines of EventBridge events, as the end-to-end tests took them off the
stack's bus) validates against the schema of its detail-type. `make test` runs it after the end-to-end tests.

    python scripts/check_event_schemas.py [events.jsonl ...]
"""
import json
import re
import sys
from collections import Counter
from pathlib import Path

from jsonschema import Draft202012Validator, FormatChecker

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "docs" / "schemas"
SOURCE = "atlassian-connector"


def detail_types_in_code() -> set:
    """The detail-types `shared/events/src/lib.rs` lists in DETAIL_TYPES."""
    code = (ROOT / "shared" / "events" / "src" / "lib.rs").read_text()
    match = re.search(r"DETAIL_TYPES[^=]*=\s*&?\[(.*?)\];", code, re.S)
    if not match:
        raise SystemExit("DETAIL_TYPES not found in shared/events/src/lib.rs")
    names = set()
    for item in re.findall(r"[A-Za-z_:]+|\"[^\"]*\"", match.group(1)):
        if item.startswith('"'):
            names.add(item.strip('"'))
        else:
            # A constant: find its string.
            const = item.split("::")[-1]
            found = re.search(rf"const {const}\s*:\s*&str\s*=\s*\"([^\"]+)\"", code)
            if found:
                names.add(found.group(1))
    return names


def validators() -> dict:
    index = json.loads((SCHEMAS / "index.json").read_text())
    result = {}
    for detail_type, file in index.items():
        schema = json.loads((SCHEMAS / file).read_text())
        Draft202012Validator.check_schema(schema)
        if schema.get("title") != detail_type:
            raise SystemExit(f"{file}: title {schema.get('title')!r} is not {detail_type!r}")
        result[detail_type] = Draft202012Validator(schema, format_checker=FormatChecker())
    return result


def doc_examples() -> dict:
    """Each `### <detail-type>` heading of docs/events.md and the first ```json block under it."""
    text = (ROOT / "docs" / "events.md").read_text()
    examples = {}
    for heading, body in re.findall(r"^### (.+?)\n(.*?)(?=^### |^## |\Z)", text, re.S | re.M):
        block = re.search(r"```json\n(.*?)```", body, re.S)
        if block:
            examples[heading.strip().strip("`")] = json.loads(block.group(1))
    return examples


def errors_of(validator, detail) -> list:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(detail)'}: {e.message}" for e in validator.iter_errors(detail)]


def main(paths) -> int:
    failures = []
    checks = validators()
    code = detail_types_in_code()
    if set(checks) != code:
        failures.append(f"schemas for {sorted(set(checks))}, but the code publishes {sorted(code)}")
    examples = doc_examples()
    for detail_type, validator in checks.items():
        if detail_type not in examples:
            failures.append(f"docs/events.md has no example for {detail_type}")
            continue
        failures += [f"docs/events.md, {detail_type}: {e}" for e in errors_of(validator, examples[detail_type])]
    seen = Counter()
    for path in paths:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        if not lines:
            failures.append(f"{path}: no events")
        for n, line in enumerate(lines, 1):
            event = json.loads(line)
            detail_type = event.get("detail-type")
            if event.get("source") != SOURCE:
                failures.append(f"{path}:{n}: source {event.get('source')!r}")
            if detail_type not in checks:
                failures.append(f"{path}:{n}: no schema for {detail_type!r}")
                continue
            seen[detail_type] += 1
            failures += [f"{path}:{n} ({detail_type}): {e}" for e in errors_of(checks[detail_type], event["detail"])]
    for failure in failures[:50]:
        print(f"check_event_schemas: {failure}", file=sys.stderr)
    if failures:
        return 1
    emitted = ", ".join(f"{t} {c}" for t, c in sorted(seen.items())) or "none given"
    print(f"check_event_schemas: {len(checks)} schemas, {len(examples)} examples valid; emitted events valid: {emitted}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
