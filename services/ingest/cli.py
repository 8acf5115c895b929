"""``python -m services.ingest mapping …``: develop a mapping without running anything.

    python -m services.ingest mapping check FILE              the mapping's errors, if any
    python -m services.ingest mapping test FILE SAMPLE.json   the events a sample would produce

A sample is one record's value as JSON (a Debezium change event for a ``debezium`` mapping, the
platform's body for a ``json`` one), or a JSON list of them. Each event is printed as the
canonical CloudEvent ingest would publish, one per line; a record it cannot map, or an event
that does not validate, prints its reason and detail instead. Exit status 0 when every record
mapped, 1 otherwise, 2 for a mapping that does not validate.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import orjson

from services.ingest.mapping import MappingInvalid, load
from services.ingest.normalise import NormaliseContext, normalise
from services.ingest.reasons import Rejection
from services.ingest.sources import map_record


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.ingest mapping")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a mapping file")
    check.add_argument("file", type=Path)
    test = sub.add_parser("test", help="print the events a sample would produce")
    test.add_argument("file", type=Path)
    test.add_argument("sample", type=Path)
    args = parser.parse_args(argv)
    try:
        mapping = load(args.file)
    except MappingInvalid as exc:
        for error in exc.errors:
            sys.stderr.write(f"{args.file}: {error}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"{args.file}: {exc.strerror}\n")
        return 2
    if args.command == "check":
        sys.stdout.write(f"{mapping.name}: valid ({len(mapping.spec.produce)} rules)\n")
        return 0
    try:
        loaded = orjson.loads(args.sample.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        sys.stderr.write(f"{args.sample}: not a JSON sample: {exc}\n")
        return 2
    samples = loaded if isinstance(loaded, list) else [loaded]
    context = NormaliseContext()
    if mapping.spec.timezone:
        context = replace(context, default_timezone=mapping.spec.timezone)
    where = (mapping.spec.source.topics or [mapping.spec.source.http or "sample"])[0]
    failed = 0
    for n, sample in enumerate(samples):
        mapped = map_record(mapping, orjson.dumps(sample), None, where)
        if isinstance(mapped, Rejection):
            failed += 1
            sys.stdout.write(f"record {n}: {mapped.reason.value}: {mapped.detail}\n")
            continue
        if not mapped.events:
            sys.stdout.write(f"record {n}: becomes nothing (a skip rule, tombstone or truncate)\n")
        for raw in mapped.events:
            event = normalise(raw, context, origin=f"sample/{n}")
            if isinstance(event, Rejection):
                failed += 1
                sys.stdout.write(f"record {n}: {event.reason.value}: {event.detail}\n")
            else:
                sys.stdout.write(event.to_json().decode() + "\n")
    return 1 if failed else 0
