"""A journey tried against history before it is switched on: ``POST
/v1/journeys/{name}:dry-run`` and ``python -m services.rules journeys dry-run``.

``upkeep.events.v1`` is read for a time range (without a consumer group) and replayed through
an engine that runs only this journey, as written and switched on, with in-memory state and
timers and a clock that follows the events (:func:`services.rules.replay.rehearse`). Nothing is
published and no metric moves. The answer says how many subjects would have entered, what
each step would have done and sent, and renders a few of the messages with the notifier's
templates.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord

from services.rules.engine import RulesEngine
from services.rules.journeys.catalog import Catalog, Published
from services.rules.journeys.definition import Journey
from services.rules.journeys.runner import Journeys
from services.rules.replay import in_time_order, rehearse
from services.rules.store import InMemorySubjectStore, InMemoryTimerStore
from shared.events.actions import ActionMessage
from shared.events.envelope import CanonicalEvent
from shared.events.types import JourneyEntered, JourneyLeft, JourneyStepCompleted
from shared.kafka.messages import HandlerResult

SAMPLES_PER_STEP = 3
MAX_SENDS_LISTED = 1000


@dataclass
class DryRun:
    journey: str
    version: int
    since: datetime | None
    until: datetime
    events: int = 0
    entered: int = 0
    subjects: set[str] = field(default_factory=set)
    completed: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    left: Counter[str] = field(default_factory=Counter)
    sends: list[dict[str, Any]] = field(default_factory=list)
    actions: list[ActionMessage] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self, steps: Sequence[str]) -> dict[str, Any]:
        sends_by_step = Counter(s["step"] for s in self.sends)
        return {
            "journey": self.journey,
            "version": self.version,
            "from": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat(),
            "events_read": self.events,
            "entered": self.entered,
            "subjects": len(self.subjects),
            "steps": [
                {
                    "id": step,
                    "completed": self.completed[step],
                    "sent": sends_by_step[step],
                    "outcomes": dict(sorted(self.outcomes[step].items())),
                }
                for step in steps
            ],
            "left": dict(sorted(self.left.items())),
            "sends": self.sends[:MAX_SENDS_LISTED],
            "sends_truncated": len(self.sends) > MAX_SENDS_LISTED,
            "samples": self.samples,
            "published": False,
        }


async def dry_run(
    journey: Journey,
    version: int,
    records: Sequence[ConsumerRecord[bytes, bytes]],
    *,
    since: datetime | None,
    until: datetime,
    events_topic: str,
    actions_topic: str,
    template_root: Path | None = None,
) -> dict[str, Any]:
    """What ``journey`` (as ``version``, switched on) would have done over ``records`` up to
    ``until``."""
    catalog = Catalog()
    catalog.replace([Published(journey.name, version, journey, enabled=True)], [])
    clock = [datetime.min.replace(tzinfo=until.tzinfo)]
    engine = RulesEngine(
        [Journeys(catalog, observed=False)],
        InMemorySubjectStore(),
        InMemoryTimerStore(),
        events_topic=events_topic,
        actions_topic=actions_topic,
        clock=lambda: clock[0],
        observed=False,
    )
    report = DryRun(journey.name, version, since, until)
    wanted = {JourneyEntered.type_name, JourneyStepCompleted.type_name, JourneyLeft.type_name}

    def take(result: HandlerResult) -> None:
        for message in result.messages:
            if message.topic == actions_topic:
                action = ActionMessage.model_validate_json(message.value)
                report.actions.append(action)
                report.sends.append(
                    {
                        "step": action.data.get("journey_step"),
                        "subject": action.subject,
                        "key": action.key,
                        "kind": action.kind,
                        "recipient": f"{action.recipient.kind}:{action.recipient.id}",
                        "template": action.template,
                        "locale": action.locale,
                        "due_at": action.due_at.isoformat(),
                    }
                )
                continue
            event = CanonicalEvent.from_json(message.value)
            if event.type not in wanted:
                continue
            data = event.data
            if event.type == JourneyEntered.type_name:
                report.entered += 1
                report.subjects.add(str(data["about"]))
            elif event.type == JourneyStepCompleted.type_name:
                report.completed[str(data["step"])] += 1
                report.outcomes[str(data["step"])][str(data["outcome"])] += 1
            else:
                report.left[str(data["reason"])] += 1

    timed = in_time_order(records)  # numbered across both parts: the state sees one history
    before = [t for t in timed if since is not None and t[0] < since]
    in_range = [t for t in timed if since is None or t[0] >= since]
    report.events = sum(1 for at, _ in in_range if at <= until)  # what was replayed
    # the state at ``since`` is built from the history before it, with the journey off
    catalog.current[journey.name] = Published(journey.name, version, journey, enabled=False)
    await rehearse(engine, clock, before, since or until, lambda _: None)
    catalog.current[journey.name] = Published(journey.name, version, journey, enabled=True)
    await rehearse(engine, clock, in_range, until, take)
    report.samples = samples(report.actions, template_root)
    return report.as_json([s.id for s in journey.steps])


def samples(actions: Sequence[ActionMessage], root: Path | None) -> list[dict[str, Any]]:
    """The first few messages of each step, rendered as the notifier would (subject line and
    text), or the error that rendering them raises — which is what a dry run is for."""
    from services.notifier.templates import TemplateError, Templates

    store = Templates(root) if root is not None else Templates()
    taken: Counter[str] = Counter()
    out = []
    for action in actions:
        step = str(action.data.get("journey_step"))
        if taken[step] >= SAMPLES_PER_STEP:
            continue
        taken[step] += 1
        sample: dict[str, Any] = {
            "step": step,
            "subject": action.subject,
            "locale": action.locale,
            "kind": action.kind,
        }
        try:
            rendered = store.render_action(action, action.locale, recipient_name=None)
            sample |= {"subject_line": rendered.subject, "text": rendered.text}
        except TemplateError as exc:
            sample["error"] = str(exc)
        out.append(sample)
    return out
