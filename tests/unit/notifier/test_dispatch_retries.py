"""The dispatcher's retries, backoff, permanent failures and the circuit breaker (the world
under test is in dispatch_world.py)."""

from __future__ import annotations

from datetime import timedelta

from services.notifier.breaker import Breakers
from services.notifier.errors import PermanentDeliveryError, RecipientRefused
from services.notifier.limits import Limits
from tests.unit.notifier.dispatch_world import (
    LIMITS,
    T0,
    TEMPLATES,
    WEBHOOK_URL,
    PooledMail,
    action,
    make_world,
    outcome_id,
    outcomes,
    record,
    summary,
    transient,
)

# retries --------------------------------------------------------------------------------------


async def test_a_transient_failure_is_deferred_with_its_reason_and_retried_later() -> None:
    w = make_world()
    await w.customer()
    await w.consume(record(action("birthday:C-1:2026")))
    w.mail.queue = [transient("smtp_451")]

    (deferred,) = outcomes(await w.tick())
    assert (deferred.outcome, deferred.reason, deferred.attempts) == ("deferred", "smtp_451", 1)
    assert deferred.next_at is not None
    assert T0 <= deferred.next_at <= T0 + timedelta(seconds=LIMITS.retry_base_s)
    assert deferred.id == outcome_id(
        "birthday:C-1:2026", f"deferred:{deferred.next_at.isoformat()}"
    )
    entry = w.entry("birthday:C-1:2026")
    assert (entry.state, entry.next_at, entry.unpublished) == ("pending", deferred.next_at, False)

    if deferred.next_at > T0:  # not yet due: nothing is tried before next_at
        w.clock.now = deferred.next_at - timedelta(microseconds=1)
        assert (await w.tick()).messages == []
        assert w.mail.calls == 1
    w.clock.now = deferred.next_at
    (sent,) = outcomes(await w.tick())
    assert (sent.outcome, sent.reason, sent.attempts) == ("sent", None, 2)
    assert w.mail.calls == 2
    assert len(w.mail.delivered) == 1


async def test_backoff_is_bounded_and_retries_end_in_a_dead_letter() -> None:
    limits = Limits(max_attempts=6, retry_base_s=10.0, retry_max_s=60.0)
    w = make_world(limits=limits, breakers=Breakers(failures=100))
    await w.customer()
    await w.consume(record(action("birthday:C-1:2026")))
    w.mail.always = lambda: transient("smtp_421")

    for attempt in range(1, limits.max_attempts):
        (o,) = outcomes(await w.tick())
        assert (o.outcome, o.reason, o.attempts) == ("deferred", "smtp_421", attempt)
        assert o.next_at is not None
        delay = (o.next_at - w.clock.now).total_seconds()
        assert 0 <= delay <= min(limits.retry_max_s, limits.retry_base_s * 2 ** (attempt - 1))
        w.clock.now = o.next_at

    last = await w.tick()
    (final,) = outcomes(last)
    assert (final.outcome, final.reason, final.attempts) == ("failed", "retries_exhausted", 6)
    (dead,) = last.dead_letters
    assert dead.reason == "delivery_failed"
    assert dead.detail.startswith("retries_exhausted")
    assert w.mail.calls == limits.max_attempts
    w.clock.advance(hours=2)
    assert (await w.tick()).messages == []
    assert w.mail.calls == limits.max_attempts


async def test_an_absurd_retry_after_is_capped_at_a_day() -> None:
    w = make_world()
    await w.consume(record(action("renewal:K-1:webhook", kind="webhook", priority="transactional")))
    w.webhook.queue = [transient("http_429", retry_after=1e15)]  # would overflow a datetime
    (deferred,) = outcomes(await w.tick())
    assert deferred.next_at == T0 + timedelta(days=1)


async def test_a_retry_after_from_the_provider_is_honoured() -> None:
    w = make_world()
    await w.consume(record(action("renewal:K-1:webhook", kind="webhook", priority="transactional")))
    w.webhook.queue = [transient("http_429", retry_after=600)]

    (deferred,) = outcomes(await w.tick())
    assert (deferred.outcome, deferred.reason) == ("deferred", "http_429")
    assert deferred.next_at is not None
    assert deferred.next_at >= T0 + timedelta(seconds=600)  # beyond the backoff's 10 s
    w.clock.now = T0 + timedelta(seconds=599)
    assert (await w.tick()).messages == []
    assert w.webhook.calls == 1
    w.clock.now = deferred.next_at
    assert summary(await w.tick()) == [("renewal:K-1:webhook", "sent", None)]
    (posted,) = w.webhook.posted
    assert posted[:2] == (WEBHOOK_URL, "renewal:K-1:webhook")


async def test_a_permanent_failure_fails_at_once_and_is_dead_lettered() -> None:
    w = make_world()
    await w.customer()
    await w.consume(record(action("birthday:C-1:2026")))
    w.mail.queue = [PermanentDeliveryError("smtp_554", "rejected for policy reasons")]

    result = await w.tick()
    (failed,) = outcomes(result)
    assert (failed.outcome, failed.reason, failed.attempts) == ("failed", "smtp_554", 1)
    (dead,) = result.dead_letters
    assert "smtp_554" in dead.detail
    assert "policy reasons" in dead.detail
    assert w.policy.suppressions == {}  # only a refused recipient is suppressed
    w.clock.advance(hours=1)
    assert (await w.tick()).messages == []
    assert w.mail.calls == 1


async def test_a_refused_address_is_suppressed_for_later_actions() -> None:
    w = make_world()
    await w.customer(email="Li.Lei@Example.com")
    await w.consume(record(action("birthday:C-1:2026")))
    w.mail.queue = [RecipientRefused("smtp_550", "mailbox unavailable")]

    result = await w.tick()
    assert summary(result) == [("birthday:C-1:2026", "failed", "smtp_550")]
    assert len(result.dead_letters) == 1
    assert w.policy.suppressions == {"li.lei@example.com": "smtp_550"}

    renewal = action(
        "renewal:K-1:mail",
        template="renewal_customer_notice",
        priority="transactional",
        data=TEMPLATES.sample("renewal_customer_notice"),
    )
    await w.consume(record(renewal))
    w.clock.advance(minutes=1)
    later = await w.tick()
    assert summary(later) == [("renewal:K-1:mail", "suppressed", "suppressed_address")]
    assert later.dead_letters == []
    assert w.mail.calls == 1


# the circuit breaker --------------------------------------------------------------------------


async def test_an_open_circuit_defers_without_sending_and_closes_after_the_cooldown() -> None:
    cooldown = timedelta(minutes=5)
    w = make_world(breakers=Breakers(failures=3, cooldown=cooldown))
    for n in range(5):
        await w.customer(f"C-{n}")
    await w.consume(*(record(action(f"birthday:C-{n}:2026", f"C-{n}")) for n in range(3)))
    w.mail.always = lambda: transient("smtp_451")

    first = await w.tick()
    assert {(o.outcome, o.reason) for o in outcomes(first)} == {("deferred", "smtp_451")}
    assert w.mail.calls == 3  # three failures in a row: the circuit is open now

    w.mail.always = None  # the provider is back, but the circuit does not know yet
    await w.consume(*(record(action(f"birthday:C-{n}:2026", f"C-{n}")) for n in range(3, 5)))
    w.clock.advance(seconds=LIMITS.retry_max_s)  # every retry is due
    paused = outcomes(await w.tick())
    assert len(paused) == 5
    assert {(o.outcome, o.reason, o.next_at) for o in paused} == {
        ("deferred", "circuit_open", T0 + cooldown)
    }
    assert {o.key: o.attempts for o in paused} == {
        **{f"birthday:C-{n}:2026": 1 for n in range(3)},  # a pause costs no attempt
        **{f"birthday:C-{n}:2026": 0 for n in range(3, 5)},
    }
    assert w.mail.calls == 3

    w.clock.now = T0 + cooldown - timedelta(seconds=1)
    assert (await w.tick()).messages == []
    w.clock.now = T0 + cooldown
    resumed = await w.tick()
    assert {(o.outcome, o.reason) for o in outcomes(resumed)} == {("sent", None)}
    assert {o.key: o.attempts for o in outcomes(resumed)} == {
        **{f"birthday:C-{n}:2026": 2 for n in range(3)},  # the failure and the send
        **{f"birthday:C-{n}:2026": 1 for n in range(3, 5)},
    }
    assert w.mail.calls == 8
    assert len(w.mail.delivered) == 5


async def test_a_circuit_that_opens_during_a_tick_stops_the_rest_of_that_tick() -> None:
    w = make_world(breakers=Breakers(failures=3, cooldown=timedelta(minutes=5)), mail=PooledMail())
    for n in range(6):
        await w.customer(f"C-{n}")
    await w.consume(*(record(action(f"birthday:C-{n}:2026", f"C-{n}")) for n in range(6)))
    w.mail.always = lambda: transient("smtp_451")

    reasons = sorted(o.reason or "" for o in outcomes(await w.tick()))
    assert w.mail.calls == 3
    assert reasons == ["circuit_open"] * 3 + ["smtp_451"] * 3
