"""Bad input against the running ingest process, with valid traffic alongside: random bytes,
truncated JSON, deeply nested JSON, huge strings, wrong types and unknown event types on the raw
topics, and the same bodies posted to `POST /v1/events`. Every bad record is dead-lettered with
a reason (the `upkeep-dlq-reason` header); every bad request is refused with a 4xx and an error
body, never a 5xx; every valid event is published exactly once; the process never restarts and
stays ready. The seed is fixed, so a failure can be replayed."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import httpx
import orjson
import pytest

from deploy.local.stack import DEV_API_KEY, LocalStack
from shared.settings import KafkaSettings, TopicSettings
from tests.e2e.replicas import Replicas
from tests.kafka_helpers import ids_of, produce, read_topic

pytestmark = pytest.mark.e2e

SEED, PER_CLASS, VALID = 20261122, 60, 300


def valid(n: int) -> bytes:
    return orjson.dumps(
        {
            "type": "customer.interaction",
            "id": f"ok-{n}",
            "interaction_id": f"I-{n}",
            "customer_id": f"C-{n % 37}",
            "kind": "order",
            "amount": "12.00",
            "currency": "EUR",
            "occurred_at": "2026-11-22T09:00:00+01:00",
        }
    )


def bad_inputs(rng: random.Random) -> dict[str, list[bytes]]:
    """Bad records by class, PER_CLASS of each."""
    good = orjson.loads(valid(0))

    def nested(depth: int) -> bytes:
        return b'{"a":' * depth + b"1" + b"}" * depth

    wrong = {  # per field, values no reading of the contract accepts
        "customer_id": [[], {}, True, None, 12.5, ""],
        "interaction_id": [[], {"x": 1}, False, None, ""],
        "kind": [[], 7, None, "teleport"],
        "amount": [[], {}, True, "twelve", "1e999"],
        "occurred_at": [[], {}, True, "not-a-date", "2026-13-45T25:61:00Z"],
    }

    def wrong_type(n: int) -> bytes:
        field = rng.choice(sorted(wrong))
        return orjson.dumps({**good, "id": f"wt-{n}", field: rng.choice(wrong[field])})

    classes = {
        "random bytes": [rng.randbytes(rng.randint(1, 2000)) for _ in range(PER_CLASS)],
        "truncated json": [
            valid(10_000 + n)[: rng.randint(1, len(valid(0)) - 2)] for n in range(PER_CLASS)
        ],
        "deeply nested json": [nested(rng.randint(200, 5000)) for _ in range(PER_CLASS)],
        "huge strings": [
            orjson.dumps(
                {**good, "id": f"hs-{n}", "customer_id": "C" * rng.randint(10_000, 200_000)}
            )
            for n in range(PER_CLASS)
        ],
        "wrong types": [wrong_type(n) for n in range(PER_CLASS)],
        "unknown event types": [
            orjson.dumps(
                {
                    **good,
                    "id": f"ut-{n}",
                    "type": rng.choice(["x.y", "customer.deleted.v9", "", 42]),
                }
            )
            for n in range(PER_CLASS)
        ],
        "not an object": [
            orjson.dumps(rng.choice([[1, 2], "text", 3.5, None, [[good]]]))
            for _ in range(PER_CLASS)
        ],
    }
    return classes


@pytest.fixture
def ingest(stack: LocalStack, topics: TopicSettings) -> Iterator[Replicas]:
    procs = Replicas(stack, "ingest", topics)
    try:
        procs.start("a")
        yield procs
    finally:
        procs.stop_all()


async def test_bad_input_is_refused_or_dead_lettered_and_valid_traffic_flows(
    ingest: Replicas, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    rng = random.Random(SEED)
    classes = bad_inputs(rng)
    bad = [(name, value) for name, values in classes.items() for value in values]
    mixed: list[tuple[str, bytes]] = [("valid", valid(n)) for n in range(VALID)] + bad
    rng.shuffle(mixed)
    pid = ingest.started[-1].pid()

    for start in range(0, len(mixed), 100):
        await produce(
            kafka_settings, topics.raw_customer, [v for _, v in mixed[start : start + 100]]
        )

    # over HTTP: every bad body is refused with a 4xx and a reason; valid ones are accepted
    statuses: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=ingest.urls["a"], timeout=30) as http:
        headers = {"Authorization": f"Bearer {DEV_API_KEY}", "content-type": "application/json"}
        for name, value in bad:
            answer = await http.post("/v1/events", content=value, headers=headers)
            statuses[f"{answer.status_code}"] += 1
            assert 400 <= answer.status_code < 500, (
                f"{name}: {answer.status_code} {answer.text[:200]}"
            )
            assert answer.text, f"{name}: a refusal without an explanation"
        extra = [valid(50_000 + n) for n in range(20)]
        for value in extra:
            answer = await http.post("/v1/events", content=value, headers=headers)
            assert answer.status_code == 202, answer.text

    published = await read_topic(
        kafka_settings, topics.events, expect=VALID + len(extra), timeout=120, settle=3
    )
    dead = await read_topic(kafka_settings, topics.dlq, expect=len(bad), timeout=120, settle=3)

    ids = ids_of(published)
    assert sorted(ids) == sorted(
        [f"ok-{n}" for n in range(VALID)] + [f"ok-{50_000 + n}" for n in range(20)]
    ), "a valid event was lost or repeated, or a bad one got through"
    reasons = Counter(dict(r.headers).get("upkeep-dlq-reason", b"").decode() for r in dead)
    assert len(dead) == len(bad)
    assert "" not in reasons, "a dead letter without a reason"
    # the process never restarted and is ready
    assert ingest.started[-1].pid() == pid
    async with httpx.AsyncClient(base_url=ingest.urls["a"], timeout=10) as http:
        assert (await http.get("/readyz")).status_code == 200
    print(
        f"tried {len(bad)} bad records on the raw topic and {len(bad)} bad HTTP bodies "
        f"({', '.join(f'{PER_CLASS} {name}' for name in classes)}), with "
        f"{VALID + len(extra)} valid events alongside; dead-letter reasons: {dict(reasons)}; "
        f"HTTP answers: {dict(statuses)}"
    )
