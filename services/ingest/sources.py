"""The mapped sources: every mapping file of a folder (``UPKEEP_INGEST_MAPPINGS_DIR``), by the
Kafka topics and the HTTP sources they read, turning a source's record into decoded Upkeep
events for the rest of ingest (normalise, de-duplicate, publish).

**Loaded at start and on change.** :meth:`MappedSources.refresh` reads the folder again (ingest
does every few seconds); a file that changed and validates replaces its mapping at once; one
that does not validate is refused with every error in the log, and the version before it stays
in force. A mapping's topics are subscribed at start: a new topic takes a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from services.ingest.debezium import NotAChange, read_change
from services.ingest.decode import RawEvent, decode_object
from services.ingest.mapping import Mapping, MappingFailed, MappingInvalid, load
from services.ingest.reasons import Reason, Rejection

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mapped:
    """What one record became: the mapping, and its events (none: meant to become nothing)."""

    mapping: Mapping
    events: list[RawEvent]


def map_record(
    mapping: Mapping,
    value: bytes | None,
    key: bytes | None,
    where: str,
    identity: str | None = None,
) -> Mapped | Rejection:
    """The decoded events a source's record becomes; a :class:`Rejection` names the mapping
    and the failing field. The default event ids derive from ``identity`` (a push's delivery
    id), else the change's identity or ``where`` (topic or source) and the record's bytes."""
    if mapping.spec.source.format == "debezium":
        try:
            change = read_change(value, key)
        except NotAChange as exc:
            return Rejection(Reason.NOT_A_CHANGE, f"mapping {mapping.name}: {exc}")
        if change is None:  # a tombstone or a truncate
            return Mapped(mapping, [])
        document, found = change.document(), change.identity()
    else:
        try:
            document = orjson.loads(value or b"")
        except orjson.JSONDecodeError as exc:
            return Rejection(Reason.INVALID_JSON, f"mapping {mapping.name}: not JSON: {exc.msg}")
        found = hashlib.sha256(where.encode() + b"|" + (value or b"")).hexdigest()[:32]
    if identity:
        found = hashlib.sha256(f"{where}|{identity}".encode()).hexdigest()[:32]
    try:
        plain = mapping.apply(document, f"{mapping.name}:{found}")
    except MappingFailed as exc:
        return Rejection(Reason.MAPPING_FAILED, str(exc))
    events = []
    for body in plain:
        decoded = decode_object(body)
        if isinstance(decoded, Rejection):
            return Rejection(decoded.reason, f"mapping {mapping.name}: {decoded.detail}")
        events.append(decoded)
    return Mapped(mapping, events)


@dataclass
class MappedSources:
    """The mappings in force, by topic and by HTTP source."""

    folder: Path | None
    reserved: Sequence[str] = ()  # topics no mapping may read (Upkeep's own)
    _by_file: dict[Path, tuple[float, Mapping]] = field(default_factory=dict)

    def refresh(self) -> list[str]:
        """Read the folder again; returns the errors of the files refused (logged too)."""
        if self.folder is None or not self.folder.is_dir():
            return []
        errors = []
        seen = set()
        for path in sorted(self.folder.glob("*.yaml")) + sorted(self.folder.glob("*.yml")):
            seen.add(path)
            stamp = path.stat().st_mtime
            known = self._by_file.get(path)
            if known is not None and known[0] == stamp:
                continue
            try:
                mapping = load(path)
                others = [m for p, (_, m) in self._by_file.items() if p != path]
                clashes = check_topics([*others, mapping], self.reserved)
                if clashes:
                    raise MappingInvalid(mapping.name, clashes)
            except (MappingInvalid, OSError, UnicodeDecodeError) as exc:
                detail = "; ".join(exc.errors) if isinstance(exc, MappingInvalid) else str(exc)
                errors.append(f"{path.name}: {detail}")
                log.error(
                    "mapping refused, the version before stays in force",
                    extra={"file": path.name, "errors": detail[:2000]},
                )
                continue
            self._by_file[path] = (stamp, mapping)
            log.info("mapping in force", extra={"mapping": mapping.name, "file": path.name})
        for gone in set(self._by_file) - seen:
            log.info("mapping removed", extra={"file": gone.name})
            del self._by_file[gone]
        return errors

    @property
    def mappings(self) -> list[Mapping]:
        return [m for _, m in self._by_file.values()]

    def for_topic(self, topic: str) -> Mapping | None:
        for mapping in self.mappings:
            if topic in mapping.spec.source.topics:
                return mapping
        return None

    def for_http(self, source: str) -> Mapping | None:
        for mapping in self.mappings:
            if mapping.spec.source.http == source:
                return mapping
        return None

    def topics(self) -> list[str]:
        return sorted({t for m in self.mappings for t in m.spec.source.topics})


def check_topics(mappings: Iterable[Mapping], reserved: Sequence[str]) -> list[str]:
    """A mapping must not read Upkeep's own topics, and two must not read the same one."""
    errors: list[str] = []
    owner: dict[str, str] = {}
    for m in mappings:
        for topic in m.spec.source.topics:
            if topic in reserved:
                errors.append(f"{m.name}: {topic} is one of Upkeep's own topics")
            elif topic in owner:
                errors.append(f"{m.name}: {topic} is read by {owner[topic]} already")
            owner.setdefault(topic, m.name)
    return errors


async def refresh_forever(sources: MappedSources, every_s: float) -> None:
    """Read the mappings' folder again every ``every_s`` seconds (a failure is logged and the
    mappings in force stay)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(sources.refresh)
        except Exception:
            log.exception("reading the mappings failed; those in force stay")
