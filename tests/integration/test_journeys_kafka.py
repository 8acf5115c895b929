"""Journeys through the real broker and MongoDB-wire server. The rules service runs as a process
of its own (``tests/integration/clocked_rules.py``) on a clock the test moves, so minutes pass
in a moment and the process can be killed -9 in the middle of a journey.

Three journeys are created over the authenticated API and switched on:

* ``welcome`` (East customers, sent as YAML): an e-mail; wait up to 10 minutes for a call. A
  call → the owner hears of it, then a branch on the ``vip`` tag (a task for the owner) and an
  exit. No call → the owner's manager hears of it, and 5 minutes later the owner gets a call
  task. An order is the goal. C-1 (vip) and C-2 call, C-3 orders (converted), forty more never
  call. While their timeouts fire, rules is killed -9 from outside and started again; then it
  kills itself -9 at the worst moment — a tick that sent a call task and ended its run has
  stored its state and timers, but its transaction is not committed — and is started again.
* ``nurture-finish`` and ``nurture-migrate`` are changed while customers wait in them: with
  ``on_update: finish`` D-1 goes on on v1; with ``migrate`` E-1 moves to v2's step of the same
  id and E-2, waiting for a step v2 removed, leaves ``ended_by_update``. Then
  ``nurture-finish`` is disabled: D-2 does not enter, D-1 leaves ``disabled``.

At the end every expected action key is on ``upkeep.actions.v1`` exactly once and no key twice;
each ``journey.*`` event of each run and step exactly once (after de-duplicating by event id);
and ``welcome``'s dry run over the same history answers the very sends the live run made.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy.local.kafka import ROOT, free_port
from deploy.local.stack import LocalStack
from services.rules.journeys.runner import run_id
from shared.apikeys import digest
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.settings import KafkaSettings, TopicSettings
from tests.integration.clocked_rules import set_clock
from tests.kafka_helpers import publish_events, read_topic, wait_consumed
from tests.waiting import eventually

pytestmark = pytest.mark.integration

# not on a whole millisecond, as a real clock never is (MongoDB keeps milliseconds)
T0 = datetime(2026, 3, 2, 9, 0, 0, 250_375, tzinfo=UTC)
T1 = T0 + timedelta(minutes=30)  # the nurture journeys
MINUTE = timedelta(minutes=1)
ADMIN_KEY = "upk_journeys_integration_admin_key"
READ_KEY = "upk_journeys_integration_read_key"
SOURCE = "crm"
COHORT_X = [f"C-{n}" for n in range(10, 30)]  # enter at T0, time out at T0 + 10m
COHORT_Y = [f"C-{n}" for n in range(30, 50)]  # enter at T0 + 5m, time out at T0 + 15m
SILENT = COHORT_X + COHORT_Y

WELCOME = """
name: welcome
title: {en: Welcome new East customers}
subject: customer
trigger:
  event: customer.upserted
  when: subject.region == "East"
goal:
  event: customer.interaction
  when: event.kind == "order"
steps:
  - id: hello
    send:
      to: customer
      marketing: false
      message:
        en: {subject: "Welcome, {{ subject.name }}", body: "Call us when it suits you."}
  - id: wait-reply
    wait_for:
      event: customer.interaction
      when: event.kind == "call"
      timeout: 10m
      on_timeout: no-reply
  - id: replied
    send:
      to: owner
      message:
        en: {subject: "{{ subject.name }} called", body: "They called after the welcome."}
  - id: vip
    branch: {when: '"vip" in subject.tags', then: vip-call, else: done}
  - id: vip-call
    send:
      kind: task
      to: owner
      due_in: 1d
      message:
        en: {subject: "Call {{ subject.name }} (VIP)", body: "A VIP answered the welcome."}
  - id: done
    exit: {}
  - id: no-reply
    send:
      to: manager
      message:
        en: {subject: "{{ subject.name }} did not call", body: "No call after the welcome."}
  - id: later
    wait: {for: 5m}
  - id: last-call
    send:
      kind: task
      to: owner
      message:
        en: {subject: "Call {{ subject.name }}", body: "They never called back."}
"""


def message(subject: str) -> dict[str, Any]:
    return {"en": {"subject": subject, "body": "{{ subject.name }}, " + subject}}


def nurture(
    name: str, region: str, *, on_update: str = "finish", v2: bool = False
) -> dict[str, Any]:
    """intro → 20 min → follow → 20 min → final; v2 changes ``follow``, and for ``migrate``
    replaces ``final`` by ``wrap-up``."""
    last = (
        {"id": "wrap-up", "send": {"to": "owner", "message": message("Wrap up")}}
        if v2 and on_update == "migrate"
        else {"id": "final", "send": {"to": "owner", "message": message("Final")}}
    )
    return {
        "name": name,
        "subject": "customer",
        "trigger": {"event": "customer.upserted", "when": f'subject.region == "{region}"'},
        "on_update": on_update,
        "steps": [
            {"id": "intro", "send": {"to": "customer", "message": message("Intro")}},
            {"id": "wait1", "wait": {"for": "20m"}},
            {
                "id": "follow",
                "send": {"to": "customer", "message": message("Follow v2" if v2 else "Follow")},
            },
            {"id": "wait2", "wait": {"for": "20m"}},
            last,
        ],
    }


# -- what must happen --------------------------------------------------------------------------

# (journey, customer) → the steps completed, in order: (step, outcome, version)
Steps = list[tuple[str, str, int]]
CALLED: Steps = [("hello", "sent", 1), ("wait-reply", "event", 1), ("replied", "sent", 1)]
TIMED_OUT: Steps = [
    ("hello", "sent", 1),
    ("wait-reply", "timeout", 1),
    ("no-reply", "sent", 1),
    ("later", "waited", 1),
    ("last-call", "sent", 1),
]
NURTURE_V1: Steps = [("intro", "sent", 1), ("wait1", "waited", 1), ("follow", "sent", 1)]
EXPECTED_STEPS: dict[tuple[str, str], Steps] = {
    ("welcome", "C-1"): [
        *CALLED,
        ("vip", "then", 1),
        ("vip-call", "sent", 1),
        ("done", "exited", 1),
    ],
    ("welcome", "C-2"): [*CALLED, ("vip", "else", 1), ("done", "exited", 1)],
    ("welcome", "C-3"): [("hello", "sent", 1)],
    **{("welcome", c): TIMED_OUT for c in SILENT},
    ("nurture-migrate", "E-2"): NURTURE_V1,
    ("nurture-migrate", "E-1"): [
        ("intro", "sent", 1),
        ("wait1", "waited", 1),  # the wait ends in v1's terms ...
        ("follow", "sent", 2),  # ... and the run goes on on v2
        ("wait2", "waited", 2),
        ("wrap-up", "sent", 2),
    ],
    ("nurture-finish", "D-1"): NURTURE_V1,
}
# (journey, customer) → how the run ended, and on which version
EXPECTED_LEFT: dict[tuple[str, str], tuple[str, int]] = {
    ("welcome", "C-1"): ("exited", 1),
    ("welcome", "C-2"): ("exited", 1),
    ("welcome", "C-3"): ("converted", 1),
    **{("welcome", c): ("completed", 1) for c in SILENT},
    ("nurture-migrate", "E-2"): ("ended_by_update", 1),
    ("nurture-migrate", "E-1"): ("completed", 2),
    ("nurture-finish", "D-1"): ("disabled", 1),
}


def expected_keys() -> set[str]:
    """Each send's action key: journey, version, subject, run (from the entering event) and
    step."""
    keys = set()
    for (journey, customer), steps in EXPECTED_STEPS.items():
        run = run_id(journey, f"{SOURCE}\x1fup-{customer}")
        keys |= {
            f"journey:{journey}:v{version}:customer:{customer}:{run}:{step}"
            for step, outcome, version in steps
            if outcome == "sent"
        }
    return keys


# -- events ------------------------------------------------------------------------------------


def canonical(event_id: str, type_name: str, at: datetime, **data: Any) -> CanonicalEvent:
    payload = resolve_type(type_name).model_validate(data)  # type: ignore[union-attr]
    return CanonicalEvent.build(
        event_id=event_id, source=SOURCE, payload=payload, time=at, source_offset="Z"
    )


def staff(staff_id: str, at: datetime, **extra: Any) -> CanonicalEvent:
    return canonical(
        f"staff-{staff_id}",
        "staff.upserted",
        at,
        staff_id=staff_id,
        name=f"Staff {staff_id}",
        timezone="UTC",
        email=f"{staff_id.lower()}@example.com",
        **extra,
    )


def customer(customer_id: str, at: datetime, region: str, **extra: Any) -> CanonicalEvent:
    return canonical(
        f"up-{customer_id}",
        "customer.upserted",
        at,
        customer_id=customer_id,
        name=f"Customer {customer_id}",
        timezone="UTC",
        email=f"{customer_id.lower()}@example.com",
        owner_id="S-1",
        region=region,
        **extra,
    )


def interaction(customer_id: str, kind: str, at: datetime) -> CanonicalEvent:
    return canonical(
        f"{kind}-{customer_id}",
        "customer.interaction",
        at,
        interaction_id=f"{kind.upper()}-{customer_id}",
        customer_id=customer_id,
        kind=kind,
        occurred_at=at.isoformat(),
    )


# -- the rules process and what it publishes ---------------------------------------------------


class RulesProcess:
    """The rules service (only its ``journeys`` rule) as a process of its own, on a file clock;
    restarted with the same port and instance id (its new producer fences the killed one)."""

    def __init__(self, stack: LocalStack, topics: TopicSettings, state: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.stack, self.clock_file, self.kill_file = stack, state / "clock", state / "kill"
        self.proc = stack.managed(f"rules-journeys-{tag}")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.group = f"rules-journeys-{tag}"
        (state / "journeys").mkdir()  # no journey files: only what the API stores
        keys = [
            {"name": "ops-admin", "sha256": digest(ADMIN_KEY), "scopes": ["rules:admin"]},
            {"name": "ops-viewer", "sha256": digest(READ_KEY), "scopes": ["rules:read"]},
        ]
        self.env = {
            **stack.service_env("rules"),
            **{f"UPKEEP_TOPIC_{k.upper()}": v for k, v in topics.model_dump().items()},
            "UPKEEP_MONGO_DATABASE": f"journeys_{tag}",
            "UPKEEP_RULES_CONSUMER_GROUP": self.group,
            "UPKEEP_RULES_INSTANCE_ID": f"journeys-{tag}",
            "UPKEEP_RULES_HTTP_PORT": self.url.rsplit(":", 1)[1],
            "UPKEEP_RULES_ENABLED": "journeys",
            "UPKEEP_RULES_JOURNEYS_DIR": str(state / "journeys"),
            "UPKEEP_RULES_API_KEYS": json.dumps(keys),
            "UPKEEP_RULES_BATCH_TIMEOUT_MS": "50",
            "UPKEEP_RULES_TICK_INTERVAL_S": "0.1",
            # one timer per tick: firing forty runs' steps takes long enough to kill it midway
            "UPKEEP_RULES_TIMERS_PER_TICK": "1",
        }
        self.now = T0

    def set_clock(self, moment: datetime) -> None:
        self.now = moment
        set_clock(self.clock_file, moment)

    def start(self) -> None:
        argv = [sys.executable, "-m", "tests.integration.clocked_rules"]
        argv += [str(self.clock_file), str(self.kill_file)]
        self.proc.start(argv, env=self.env, cwd=ROOT)
        self.stack.wait_ready(self.url, timeout=90, proc=self.proc)

    def kill(self) -> None:
        self.proc.kill()

    def arm_kill(self) -> None:
        """The process kills itself -9 at its next tick that sends something, between storing
        the tick's state and timers and committing its transaction (``clocked_rules``)."""
        self.kill_file.touch()

    async def killed_itself(self) -> None:
        await eventually(lambda: self.proc.pid() is None, 60, what="rules did not kill itself")
        assert not self.kill_file.exists()

    def stop(self) -> None:
        self.proc.stop(timeout=20)


class Tape:
    """Everything committed to the events and actions topics, read from their start in the
    background while the test runs."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings) -> None:
        self.kafka, self.topics = kafka, topics
        self.events: list[dict[str, Any]] = []
        self.actions: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap_servers,
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        await self._consumer.start()
        partitions: list[TopicPartition] = []
        for topic in (self.topics.events, self.topics.actions):
            found = self._consumer.partitions_for_topic(topic)
            while not found:
                await asyncio.sleep(0.1)
                await self._consumer._client.force_metadata_update()
                found = self._consumer.partitions_for_topic(topic)
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            for tp, records in (await self._consumer.getmany(timeout_ms=100)).items():
                into = self.actions if tp.topic == self.topics.actions else self.events
                into += [orjson.loads(r.value) for r in records]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    def journey_events(self, kind: str, journey: str | None = None) -> list[dict[str, Any]]:
        """``upkeep.journey.<kind>.v1`` events (of ``journey``), each id once."""
        seen: dict[str, dict[str, Any]] = {}
        for event in self.events:
            if event["type"] == f"upkeep.journey.{kind}.v1" and (
                journey is None or event["data"]["journey"] == journey
            ):
                seen.setdefault(event["id"], event)
        return list(seen.values())

    def sent(self, journey: str, step: str, customers: Iterable[str] | None = None) -> int:
        """How many distinct actions of ``journey``'s ``step`` (to these customers)."""
        wanted = None if customers is None else {f"customer:{c}" for c in customers}
        return len(
            {
                a["key"]
                for a in self.actions
                if a["data"].get("journey") == journey
                and a["data"].get("journey_step") == step
                and (wanted is None or a["subject"] in wanted)
            }
        )

    def left(self, journey: str) -> dict[str, str]:
        """customer id → the reason its run of ``journey`` left."""
        return {
            e["data"]["about"].removeprefix("customer:"): e["data"]["reason"]
            for e in self.journey_events("left", journey)
        }

    async def until(self, check: Callable[[], object], what: str, timeout: float = 60) -> None:
        await eventually(check, timeout, interval=0.05, what=lambda: f"{what}: {self.summary()}")

    def summary(self) -> str:
        steps = Counter(
            (e["data"]["journey"], e["data"]["step"], e["data"]["outcome"])
            for e in self.journey_events("step_completed")
        )
        return f"{len(self.events)} events, {len(self.actions)} actions, steps {dict(steps)}"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def world(
    stack: LocalStack, kafka_settings: KafkaSettings, topics: TopicSettings, tmp_path: Path
) -> Any:
    rules = RulesProcess(stack, topics, tmp_path)
    rules.set_clock(T0)
    tape = Tape(kafka_settings, topics)
    await tape.start()
    try:
        await asyncio.to_thread(rules.start)
        async with httpx.AsyncClient(
            base_url=rules.url, headers=auth(ADMIN_KEY), timeout=60
        ) as api:
            yield rules, tape, api
    finally:
        await asyncio.to_thread(rules.stop)
        await tape.stop()


async def publish(kafka: KafkaSettings, topics: TopicSettings, *events: CanonicalEvent) -> None:
    await publish_events(kafka, topics.events, list(events))


# -- the test ----------------------------------------------------------------------------------


async def create_journeys(api: httpx.AsyncClient) -> None:
    """Over the API: refused without the admin scope, validated with every error's path,
    created (switched off), then switched on."""
    yaml = {"Content-Type": "application/yaml"}
    refused = await api.put("/v1/journeys/welcome", content=WELCOME, headers=auth(READ_KEY) | yaml)
    assert refused.status_code == 403, refused.text
    async with httpx.AsyncClient(base_url=str(api.base_url)) as anonymous:
        assert (await anonymous.get("/v1/journeys/welcome")).status_code == 401
    broken = WELCOME.replace("timeout: 10m", "timeout: 10 minutes").replace(
        "when: subject.region", "when: region"
    )
    answer = await api.post("/v1/journeys/welcome:validate", content=broken, headers=yaml)
    assert answer.status_code == 422, answer.text
    assert {e["path"] for e in answer.json()["errors"]} == {
        "trigger.when",
        "steps.1.wait_for.timeout",
    }

    created = await api.put("/v1/journeys/welcome", content=WELCOME, headers=yaml)
    assert created.status_code == 201, created.text
    assert (created.json()["version"], created.json()["enabled"]) == (1, False)
    for name, region in (("nurture-finish", "North"), ("nurture-migrate", "South")):
        on_update = name.removeprefix("nurture-")
        answer = await api.put(
            f"/v1/journeys/{name}", json=nurture(name, region, on_update=on_update)
        )
        assert answer.status_code == 201, answer.text
    for name in ("welcome", "nurture-finish", "nurture-migrate"):
        answer = await api.post(f"/v1/journeys/{name}:enable")
        assert answer.status_code == 200, answer.text
        assert answer.json()["enabled"]
    shown = await api.get("/v1/journeys/welcome", headers=auth(READ_KEY))
    assert shown.status_code == 200
    assert (shown.json()["version"], shown.json()["enabled"]) == (1, True)


async def test_journeys_run_change_stop_survive_a_kill_and_match_their_dry_run(
    world: tuple[RulesProcess, Tape, httpx.AsyncClient],
    kafka_settings: KafkaSettings,
    topics: TopicSettings,
) -> None:
    rules, tape, api = world
    kafka = kafka_settings
    await create_journeys(api)

    # -- welcome: in at T0 (and cohort Y at T0 + 5m), a welcome e-mail each ---------------------
    await publish(
        kafka, topics, staff("M-1", T0 - MINUTE), staff("S-1", T0 - MINUTE, manager_id="M-1")
    )
    await publish(
        kafka,
        topics,
        customer("C-1", T0, "East", tags=["vip"]),
        customer("C-2", T0, "East"),
        customer("C-3", T0, "East"),
        *(customer(c, T0, "East") for c in COHORT_X),
    )
    await tape.until(lambda: tape.sent("welcome", "hello") == 23, "welcome e-mails")

    # C-1 and C-2 call (the wait answered), C-3 orders (the goal)
    rules.set_clock(T0 + 2 * MINUTE)
    await publish(
        kafka,
        topics,
        interaction("C-1", "call", rules.now),
        interaction("C-2", "call", rules.now),
        interaction("C-3", "order", rules.now),
    )
    await tape.until(
        lambda: tape.left("welcome") == {"C-1": "exited", "C-2": "exited", "C-3": "converted"},
        "C-1 and C-2 answered, C-3 converted",
    )
    assert tape.sent("welcome", "vip-call") == 1
    assert tape.sent("welcome", "replied") == 2

    rules.set_clock(T0 + 5 * MINUTE)
    await publish(kafka, topics, *(customer(c, rules.now, "East") for c in COHORT_Y))
    await tape.until(lambda: tape.sent("welcome", "hello") == 43, "cohort Y welcomed")

    # -- the forty never call: their timeouts and X's call tasks fire, and rules is killed -9
    # three times: by its own hand at the worst moment of a tick that moves a run on (the tick
    # stored the run's state and timers, its transaction is not committed), from outside at
    # some moment while the rest fire, and by its own hand in a tick that ends a run
    due = 20 + 20 + 20  # X's manager e-mails and call tasks, Y's manager e-mails

    def fired() -> int:
        return tape.sent("welcome", "no-reply") + tape.sent("welcome", "last-call")

    rules.arm_kill()
    rules.set_clock(T0 + 16 * MINUTE)  # X timed out at +10m (call task at +15m), Y at +15m
    await rules.killed_itself()
    assert await committed_sends(kafka, topics, "no-reply", "last-call") == 0
    await asyncio.to_thread(rules.start)

    await tape.until(lambda: fired() >= 25, "the timeouts firing")
    rules.kill()
    at_kill = await committed_sends(kafka, topics, "no-reply", "last-call")
    assert at_kill < due, f"the kill came after the firing ({at_kill} of {due} fired)"
    await asyncio.to_thread(rules.start)
    await tape.until(lambda: fired() == due, "every timeout after the restarts", timeout=90)

    rules.arm_kill()
    rules.set_clock(T0 + 21 * MINUTE)  # Y's call tasks, each the run's last step
    await rules.killed_itself()
    assert await committed_sends(kafka, topics, "last-call") == 20  # X's only
    await asyncio.to_thread(rules.start)
    await tape.until(
        lambda: list(tape.left("welcome").values()).count("completed") == 40,
        "the forty completed",
    )

    # -- nurture: changed while customers wait in it -------------------------------------------
    rules.set_clock(T1)
    await publish(kafka, topics, customer("E-2", T1, "South"))
    await tape.until(lambda: tape.sent("nurture-migrate", "intro") == 1, "E-2 in")
    rules.set_clock(T1 + 20 * MINUTE)
    await tape.until(lambda: tape.sent("nurture-migrate", "follow") == 1, "E-2 followed up")
    rules.set_clock(T1 + 25 * MINUTE)
    await publish(
        kafka, topics, customer("E-1", rules.now, "South"), customer("D-1", rules.now, "North")
    )
    await tape.until(
        lambda: (
            tape.sent("nurture-migrate", "intro") == 2 and tape.sent("nurture-finish", "intro") == 1
        ),
        "E-1 and D-1 in",
    )
    for name, on_update in (("nurture-finish", "finish"), ("nurture-migrate", "migrate")):
        region = "North" if on_update == "finish" else "South"
        answer = await api.put(
            f"/v1/journeys/{name}", json=nurture(name, region, on_update=on_update, v2=True)
        )
        assert answer.status_code == 200, answer.text
        assert (answer.json()["version"], answer.json()["change"]["what"]) == (2, "updated")

    rules.set_clock(
        T1 + 45 * MINUTE
    )  # E-2's final (gone in v2) at +40m, the others' follow at +45m
    await tape.until(
        lambda: (
            tape.sent("nurture-migrate", "follow") == 2
            and tape.sent("nurture-finish", "follow") == 1
            and tape.left("nurture-migrate") == {"E-2": "ended_by_update"}
        ),
        "the follow-ups after the change",
    )

    # -- nurture-finish disabled: nobody enters, D-1 leaves at its next step -------------------
    answer = await api.post("/v1/journeys/nurture-finish:disable")
    assert answer.status_code == 200, answer.text
    assert not answer.json()["enabled"]
    await publish(kafka, topics, customer("D-2", rules.now, "North"))
    await wait_consumed(kafka, rules.group, [topics.events])
    d2 = (await api.get("/v1/subjects/customer:D-2")).json()
    assert d2["journeys"].get("nurture-finish", {}).get("entries", 0) == 0, d2["journeys"]
    rules.set_clock(T1 + 65 * MINUTE)
    await tape.until(
        lambda: (
            tape.left("nurture-finish") == {"D-1": "disabled"}
            and tape.left("nurture-migrate").get("E-1") == "completed"
        ),
        "D-1 disabled, E-1 completed on v2",
    )
    history = (await api.get("/v1/journeys/nurture-finish/versions", headers=auth(READ_KEY))).json()
    assert [(c["what"], c["version"], c["by"]) for c in history] == [
        ("disabled", 2, "ops-admin"),
        ("updated", 2, "ops-admin"),
        ("enabled", 1, "ops-admin"),
        ("created", 1, "ops-admin"),
    ]

    # -- the dry run of welcome over the same history: the sends the live run made ------------
    answer = await api.post("/v1/journeys/welcome:dry-run", json={"until": rules.now.isoformat()})
    assert answer.status_code == 200, answer.text
    dry = answer.json()
    await wait_consumed(kafka, rules.group, [topics.events])
    actions = orjson_records(
        await read_topic(kafka, topics.actions, expect=0, timeout=30, settle=1)
    )
    live = sorted(
        (a["subject"], a["data"]["journey_step"], a["key"])
        for a in actions
        if a["data"].get("journey") == "welcome"
    )
    outline = {k: dry[k] for k in ("events_read", "entered", "subjects", "left", "steps")}
    assert sorted((s["subject"], s["step"], s["key"]) for s in dry["sends"]) == live, outline
    assert (dry["entered"], dry["left"], dry["published"]) == (
        43,
        {"completed": 40, "converted": 1, "exited": 2},
        False,
    )

    # -- exactly once: every action key, every journey.* event per run and step ----------------
    keys = [a["key"] for a in actions]
    assert len(keys) == len(set(keys)), [k for k, n in Counter(keys).items() if n > 1]
    assert set(keys) == expected_keys()
    events = orjson_records(await read_topic(kafka, topics.events, expect=0, timeout=30, settle=0))
    tape.events = events  # the whole topic, read again to its end
    assert_each_step_once(tape)


async def committed_sends(kafka: KafkaSettings, topics: TopicSettings, *steps: str) -> int:
    """How many actions of these steps of ``welcome`` are committed now."""
    records = await read_topic(kafka, topics.actions, expect=0, timeout=30, settle=0)
    return sum(orjson.loads(r.value)["data"]["journey_step"] in steps for r in records)


def orjson_records(records: Iterable[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


def assert_each_step_once(tape: Tape) -> None:
    """Per run: entered once, each step completed once and in order, left once — no event of
    a run twice under two ids (a repeat under the same id is one event)."""
    runs: dict[str, tuple[str, str]] = {}  # run → (journey, customer)
    for event in tape.journey_events("entered"):
        data = event["data"]
        key = (data["journey"], data["about"].removeprefix("customer:"))
        assert data["run"] not in runs, f"entered twice: {key}"
        runs[data["run"]] = key
    assert sorted(runs.values()) == sorted(EXPECTED_STEPS)
    steps: dict[tuple[str, str], Steps] = {key: [] for key in runs.values()}
    for event in tape.journey_events("step_completed"):  # a subject's in the order published
        data = event["data"]
        steps[runs[data["run"]]].append((data["step"], data["outcome"], data["version"]))
    assert steps == EXPECTED_STEPS
    left: Counter[tuple[str, str]] = Counter()
    reasons = {}
    for event in tape.journey_events("left"):
        data = event["data"]
        left[runs[data["run"]]] += 1
        reasons[runs[data["run"]]] = (data["reason"], data["version"])
    assert set(left.values()) == {1}
    assert reasons == EXPECTED_LEFT
