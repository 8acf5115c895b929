"""Versions: the store makes a new version only for a changed definition and says what changed;
runs in progress finish on their version or migrate to the new one (``on_update``); a journey
switched off or deleted lets no one in and its runs leave at their next step."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from services.rules.journeys.catalog import Catalog, Published
from services.rules.journeys.definition import Journey, validate
from services.rules.journeys.store import InMemoryJourneyStore, refresh, summarise
from services.rules.testing import RuleHarness
from tests.unit.rules.journeys.builders import (
    ENTERED,
    LEFT,
    STEP,
    T0,
    customer,
    document,
    emitted,
    harness,
    reasons,
    rule_of,
    send,
)

V1_STEPS = [
    {"id": "hello", **send()},
    {"id": "pause", "wait": {"for": "1d"}},
    {"id": "middle", **send()},
    {"id": "last", **send()},
]


def v1() -> Journey:
    return validate(document(*V1_STEPS, reentry={"mode": "every_time"}))


def changed(steps: list[dict[str, Any]], **parts: Any) -> Journey:
    return validate(document(*steps, **{"reentry": {"mode": "every_time"}, **parts}))


# -- the store -------------------------------------------------------------------------------


async def test_an_unchanged_definition_makes_no_new_version() -> None:
    store = InMemoryJourneyStore()
    created, change = await store.put(v1(), "ops")
    assert (created.version, created.enabled, created.updated_by) == (1, False, "ops")
    assert change is not None
    assert (change.what, change.version, change.summary) == ("created", 1, ["created with 4 steps"])
    same, nothing = await store.put(v1(), "someone-else")
    assert nothing is None
    assert same == created
    assert len(await store.versions()) == 1
    assert [c.what for c in await store.history("test-journey")] == ["created"]


async def test_a_changed_definition_is_the_next_version_with_what_changed() -> None:
    store = InMemoryJourneyStore()
    await store.put(v1(), "ops")
    steps = [
        {"id": "hello", **send("manager")},  # changed
        {"id": "pause", "wait": {"for": "1d"}},
        {"id": "new-one", **send()},  # added; middle removed
        {"id": "last", **send()},
    ]
    second, change = await store.put(changed(steps, on_update="migrate"), "li.na")
    assert second.version == 2
    assert change is not None
    assert (change.what, change.by, change.version) == ("updated", "li.na", 2)
    assert change.summary == [
        "on_update changed",
        "step new-one added",
        "step middle removed",
        "step hello changed",
    ]
    assert [v for v, _ in await store.versions()] == [1, 2]
    history = await store.history("test-journey")
    assert [(c.version, c.what) for c in history] == [(2, "updated"), (1, "created")]
    assert history[0].as_json()["summary"] == change.summary


def test_a_reorder_alone_is_summarised_as_such() -> None:
    reordered = [V1_STEPS[0], V1_STEPS[1], V1_STEPS[3], V1_STEPS[2]]
    assert summarise(v1(), changed(reordered)) == ["steps reordered"]
    assert summarise(None, v1()) == ["created with 4 steps"]
    titled = validate({**v1().definition(), "title": {"en": "Welcome"}})
    assert summarise(v1(), titled) == ["title changed"]


async def test_a_new_version_keeps_the_journey_switched_on_or_off() -> None:
    store = InMemoryJourneyStore()
    await store.put(v1(), "ops")
    await store.set_enabled("test-journey", True, "ops")
    second, _ = await store.put(changed(V1_STEPS[:3]), "ops")
    assert (second.version, second.enabled) == (2, True)
    third, _ = await store.put(changed(V1_STEPS[:2]), "ops", enabled=False)
    assert (third.version, third.enabled) == (3, False)
    fourth, _ = await store.put(changed(V1_STEPS[:1]), "ops")
    assert (fourth.version, fourth.enabled) == (4, False)


async def test_switching_on_and_off_and_deleting_are_changes_of_the_current_version() -> None:
    store = InMemoryJourneyStore()
    await store.put(v1(), "ops")
    on, change = await store.set_enabled("test-journey", True, "ops")
    assert (on.version, on.enabled, change.what) == (1, True, "enabled")
    # an unchanged definition with `enabled` switches only that
    off, change2 = await store.put(v1(), "file:journeys", enabled=False)
    assert change2 is not None
    assert (off.version, off.enabled, change2.what) == (1, False, "disabled")
    gone, change3 = await store.delete("test-journey", "ops")
    assert (gone.deleted, gone.enabled, change3.what) == (True, False, "deleted")
    with pytest.raises(KeyError):
        await store.set_enabled("test-journey", True, "ops")
    with pytest.raises(KeyError):
        await store.delete("test-journey", "ops")
    back, change4 = await store.put(v1(), "ops")
    assert change4 is not None
    assert (back.version, back.deleted, back.enabled, change4.what) == (2, False, False, "restored")
    assert [c.what for c in await store.history("test-journey")] == [
        "restored",
        "deleted",
        "disabled",
        "enabled",
        "created",
    ]


async def test_the_catalogue_is_refreshed_from_the_store_with_every_version() -> None:
    store, catalog = InMemoryJourneyStore(), Catalog()
    await store.put(v1(), "ops", enabled=True)
    await store.put(changed(V1_STEPS[:2]), "ops")
    await refresh(store, catalog)
    revision = catalog.revision
    assert catalog.current["test-journey"].version == 2
    assert catalog.version("test-journey", 1) == v1()
    assert [p.name for p in catalog.running("customer")] == ["test-journey"]
    assert catalog.running("channel") == []
    await refresh(store, catalog)
    assert catalog.revision == revision  # nothing changed: the same snapshot
    await store.set_enabled("test-journey", False, "ops")
    await refresh(store, catalog)
    assert (catalog.revision, catalog.running("customer")) == (revision + 1, [])


# -- runs across versions --------------------------------------------------------------------


def midway(on_update: str, steps: list[dict[str, Any]]) -> RuleHarness:
    """A run entered on v1, waiting at ``pause`` when v2 (``steps``) is published; then run to
    the end."""
    h = harness(v1())
    customer(h)
    h.advance(to=T0 + timedelta(hours=1))
    second = changed(steps, on_update=on_update)
    rule_of(h).catalog.replace([Published("test-journey", 2, second, enabled=True)], [(1, v1())])
    h.advance(to=T0 + timedelta(days=10))
    return h


def sent(h: RuleHarness) -> list[str]:
    """The version and step of each action's key."""
    return [f"{a.key.split(':')[2]}:{a.key.split(':')[-1]}" for a in h.actions]


V2_STEPS = [
    {"id": "hello", **send()},
    {"id": "pause", "wait": {"for": "1d"}},
    {"id": "extra", **send("manager")},
    {"id": "middle", **send("manager")},
    {"id": "last", **send()},
]


def test_with_on_update_finish_a_run_finishes_on_its_own_version() -> None:
    h = midway("finish", V2_STEPS)
    assert sent(h) == ["v1:hello", "v1:middle", "v1:last"]
    assert {a.recipient.id for a in h.actions} == {"S-1"}  # v1's recipients, not v2's
    assert {e["version"] for e in emitted(h, STEP)} == {1}
    assert reasons(h) == ["completed"]


def test_with_on_update_migrate_a_run_moves_to_the_step_of_the_same_id() -> None:
    h = midway("migrate", V2_STEPS)
    assert sent(h) == ["v1:hello", "v2:middle", "v2:last"]  # v2's extra comes before middle
    assert h.actions[1].recipient.id == "M-1"  # v2's middle
    steps = [(e["version"], e["step"]) for e in emitted(h, STEP)]
    assert steps == [(1, "hello"), (1, "pause"), (2, "middle"), (2, "last")]
    (left,) = emitted(h, LEFT)
    assert (left["version"], left["reason"]) == (2, "completed")


def test_a_migrating_run_whose_step_is_gone_leaves_as_ended_by_update() -> None:
    without_middle = [s for s in V2_STEPS if s["id"] != "middle"]
    h = midway("migrate", without_middle)
    assert sent(h) == ["v1:hello"]
    (left,) = emitted(h, LEFT)
    assert (left["reason"], left["version"]) == ("ended_by_update", 1)
    assert h.pending() == []


def test_new_entries_follow_the_new_version() -> None:
    h = midway("finish", V2_STEPS)
    customer(h, at=T0 + timedelta(days=11), name="Acme again")
    h.advance(to=T0 + timedelta(days=20))
    assert sent(h)[3:] == ["v2:hello", "v2:extra", "v2:middle", "v2:last"]
    assert [e["version"] for e in emitted(h, ENTERED)] == [1, 2]


@pytest.mark.parametrize("how", ["disabled", "deleted"])
def test_switched_off_or_deleted_runs_leave_at_their_next_step_and_no_one_enters(
    how: str,
) -> None:
    h = harness(v1())
    customer(h)
    h.advance(to=T0 + timedelta(hours=1))
    catalog = rule_of(h).catalog
    (published,) = catalog.current.values()
    catalog.replace([replace(published, enabled=False, deleted=how == "deleted")], [])
    customer(h, at=T0 + timedelta(hours=2), name="Acme again")
    h.advance(to=T0 + timedelta(days=10))
    assert sent(h) == ["v1:hello"]
    (left,) = emitted(h, LEFT)
    assert (left["reason"], left["last_step"], left["left_at"]) == (
        "disabled",
        "pause",
        "2026-03-03T01:00:00Z",
    )
    assert len(emitted(h, ENTERED)) == 1
    assert h.pending() == []
