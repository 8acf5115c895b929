"""``python -m services.rules journeys …``: journeys from the command line.

    journeys validate FILE…                  every error of each file, with its path
    journeys apply DIR [--by NAME]           store each file's journey (idempotent)
    journeys list                            the stored journeys and their state
    journeys dry-run FILE [--from T] [--until T]
                                             what the journey would have done over history

``apply`` and ``list`` use the service's MongoDB settings (``UPKEEP_MONGO_URI`` …), ``dry-run``
its Kafka settings; ``validate`` needs neither. The exit status is 0 when everything is valid
and applied, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.rules.journeys.definition import Invalid, Journey, parse_document, validate
from services.rules.journeys.dryrun import dry_run
from services.rules.journeys.files import apply_directory
from services.rules.journeys.store import MongoJourneyStore
from services.rules.replay import parse_start, read_history
from services.rules.settings import RulesSettings
from shared.mongo import database, make_client


def _print(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")


def _load(path: Path, settings: RulesSettings) -> Journey:
    return validate(
        parse_document(path.read_text(encoding="utf-8"), path.name), settings.template_dir
    )


def _validate(files: list[Path], settings: RulesSettings) -> int:
    failed = 0
    for path in files:
        try:
            journey = _load(path, settings)
        except Invalid as exc:
            failed += 1
            for error in exc.errors:
                sys.stdout.write(f"{path}: {error['path']}: {error['message']}\n")
            continue
        sys.stdout.write(f"{path}: {journey.name} is valid ({len(journey.steps)} steps)\n")
    return 1 if failed else 0


async def _with_store(settings: RulesSettings, work: Any) -> Any:
    client = make_client(settings.mongo, "rules-journeys-cli")
    try:
        db = database(client, settings.mongo)
        store = MongoJourneyStore(db["journeys"], db["journey_versions"])
        await store.ensure_indexes()
        return await work(store)
    finally:
        await client.close()


async def _apply(directory: Path, by: str, settings: RulesSettings) -> int:
    async def work(store: MongoJourneyStore) -> int:
        results = await apply_directory(store, directory, by, settings.template_dir)
        _print([r.as_json() for r in results])
        return 1 if any(r.outcome == "invalid" for r in results) else 0

    code: int = await _with_store(settings, work)
    return code


async def _list(settings: RulesSettings) -> int:
    async def work(store: MongoJourneyStore) -> int:
        _print(
            [
                {
                    "name": p.name,
                    "version": p.version,
                    "enabled": p.enabled,
                    "deleted": p.deleted,
                    "updated_by": p.updated_by,
                    "updated_at": p.updated_at,
                }
                for p in sorted(await store.all(), key=lambda p: p.name)
            ]
        )
        return 0

    code: int = await _with_store(settings, work)
    return code


async def _dry_run(
    path: Path, since: datetime | None, until: datetime, settings: RulesSettings
) -> int:
    journey = _load(path, settings)
    report = await dry_run(
        journey,
        0,
        await read_history(settings, 0),
        since=since,
        until=until,
        events_topic=settings.topics.events,
        actions_topic=settings.topics.actions,
        template_root=settings.template_dir,
    )
    _print(report)
    return 0


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    found = parse_start(text)
    if not isinstance(found, datetime):
        raise argparse.ArgumentTypeError(f"not a time: {text}")
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.rules journeys",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="check journey files")
    check.add_argument("files", nargs="+", type=Path)
    apply = sub.add_parser("apply", help="store every journey file of a directory")
    apply.add_argument("directory", type=Path)
    apply.add_argument("--by", default=None, help="the author recorded (default: cli:$USER)")
    sub.add_parser("list", help="the stored journeys")
    rehearse = sub.add_parser("dry-run", help="what a journey file would have done")
    rehearse.add_argument("file", type=Path)
    rehearse.add_argument("--from", dest="since", default=None, help="RFC 3339 time")
    rehearse.add_argument("--until", default=None, help="RFC 3339 time (default: now)")
    args = parser.parse_args(argv)
    settings = RulesSettings()
    if args.command == "validate":
        return _validate(args.files, settings)
    if args.command == "apply":
        if not args.directory.is_dir():
            parser.error(f"{args.directory} is not a directory")
        by = args.by or f"cli:{getpass.getuser()}"
        return asyncio.run(_apply(args.directory, by, settings))
    if args.command == "list":
        return asyncio.run(_list(settings))
    try:
        since, until = _time(args.since), _time(args.until) or datetime.now(UTC)
        return asyncio.run(_dry_run(args.file, since, until, settings))
    except Invalid as exc:
        for error in exc.errors:
            sys.stdout.write(f"{args.file}: {error['path']}: {error['message']}\n")
        return 1
