"""``make demo``: a realistic scenario published through ingest's HTTP API into the system that
``make up`` runs, so that reminders and e-mails appear within a minute.

Customers live in time zones where it is daytime now (so the 09:00 reminders of today are due
and no quiet hours hold them back): some have their birthday today, some have contracts
ending in 30, 7 and 1 days; a channel has had no orders for 45 days; a few orders and closed
tickets from 10 to 14 days ago call for follow-ups today. Ids carry the run's time, so running
it again makes a new scenario.

The people side (with the short delays of ``deploy/local/rules.demo.yaml``, which ``make up``
merges over the rules' settings): a new customer in the ``demo`` territory has no owner and is
assigned to the team's active member (not the one who left); it was last visited days ago, so
its new owner gets a revisit task at once, due a minute later; nobody completes it, so it is
escalated to the owner's manager and then to theirs, a little over a minute apart.

Journeys: the three shipped in ``journeys/`` are switched on over the rules API first, so the
new distributor gets the onboarding journey's welcome e-mail at once (its day-7 call task and
day-30 message wait for their days); ``GET /v1/journeys`` and the dashboard's Journeys page
show each journey's funnel.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from deploy.local.kafka import ROOT
from deploy.local.stack import DEV_ADMIN_PASSWORD, DEV_API_KEY, SERVICE_PORTS
from shared.calendar import local_date
from shared.events.fields import zone

ZONES = [
    ("Asia/Shanghai", "zh-CN", "李娜", "王伟"),
    ("Asia/Tokyo", "en", "Sato Aiko", "Suzuki Ken"),
    ("Asia/Kolkata", "en", "Priya Sharma", "Arjun Mehta"),
    ("Europe/Berlin", "en", "Anna Schmidt", "Jonas Weber"),
    ("Europe/London", "en", "Olivia Brown", "Harry Wilson"),
    ("America/Sao_Paulo", "en", "Ana Souza", "Lucas Lima"),
    ("America/New_York", "en", "Emily Davis", "Michael Miller"),
    ("America/Los_Angeles", "en", "Sofia Garcia", "Daniel Lee"),
    ("Pacific/Auckland", "en", "Aroha Ngata", "Liam Walker"),
]


def daytime_zones(now: datetime) -> list[tuple[str, str, str, str]]:
    """Zones where it is between 10:15 (past the 09:00/10:00 reminders) and 20:30 now."""
    found = []
    for entry in ZONES:
        wall = now.astimezone(zone(entry[0])).time()
        if (10, 15) <= (wall.hour, wall.minute) < (20, 30):
            found.append(entry)
    return found


def scenario(now: datetime, run: str) -> list[dict[str, Any]]:
    zones = daytime_zones(now)
    if not zones:
        raise SystemExit("no demo time zone is in daytime right now; try again in an hour")
    events: list[dict[str, Any]] = []

    def add(event_type: str, **fields: Any) -> None:
        event_id = f"demo-{run}-{len(events)}"
        events.append({"type": event_type, "id": event_id, "source": "demo", **fields})

    owner_tz, owner_locale, _, owner_name = zones[0]
    add(
        "staff.upserted",
        staff_id=f"S-{run}-dir",
        name="Dana Director",
        timezone=owner_tz,
        email="director@example.com",
    )
    add(
        "staff.upserted",
        staff_id=f"S-{run}-mgr",
        name="Morgan Manager",
        timezone=owner_tz,
        email="manager@example.com",
        manager_id=f"S-{run}-dir",
    )
    for rep_id, name, active in (("rep", "Riley Rep", True), ("gone", "Gale Gone", False)):
        add(
            "staff.upserted",
            staff_id=f"S-{run}-{rep_id}",
            name=name,
            timezone=owner_tz,
            email=f"{rep_id}@example.com",
            manager_id=f"S-{run}-mgr",
            team="demo",
            active=active,
        )
    add(
        "staff.upserted",
        staff_id=f"S-{run}",
        name=owner_name,
        timezone=owner_tz,
        locale=owner_locale,
        email="owner@example.com",
        manager_id=f"S-{run}-mgr",
    )
    for n, (tz, locale, customer_name, _) in enumerate(zones):
        today = local_date(now, tz)
        cid = f"C-{run}-{n}"
        add(
            "customer.upserted",
            customer_id=cid,
            name=customer_name,
            timezone=tz,
            locale=locale,
            email=f"customer{n}@example.com",
            birthday=date(1985 + n, today.month, today.day).isoformat()
            if (today.month, today.day) != (2, 29)
            else "1988-02-29",
            customer_since=(today - timedelta(days=400)).isoformat(),
            owner_id=f"S-{run}",
        )
        days = (30, 7, 1)[n % 3]
        add(
            "contract.upserted",
            contract_id=f"K-{run}-{n}",
            customer_id=cid,
            start_date=(today - timedelta(days=365 - days)).isoformat(),
            end_date=(today + timedelta(days=days)).isoformat(),
            value="12000.00",
            currency="CNY" if tz == "Asia/Shanghai" else "EUR",
            owner_id=f"S-{run}",
        )
        ago = (14, 10)[n % 2]  # tier C follow-up after 14 days, tier B after 10
        add(
            "customer.interaction",
            interaction_id=f"O-{run}-{n}",
            customer_id=cid,
            kind="order",
            amount="880.00",
            currency="EUR",
            occurred_at=(now - timedelta(days=ago)).isoformat(),
        )
        if n == 0:
            add(
                "customer.interaction",
                interaction_id=f"T-{run}-{n}",
                customer_id=cid,
                kind="ticket",
                ticket_status="closed",
                occurred_at=(now - timedelta(days=14)).isoformat(),
            )
    add(
        "channel.upserted",
        channel_id=f"CH-{run}",
        name="East Coast Distribution",
        timezone=owner_tz,
        manager_id=f"S-{run}",
        region="east",
        email="orders@eastcoast.example",  # the onboarding journey welcomes it
    )
    add(
        "customer.upserted",
        customer_id=f"C-{run}-new",
        name="Nova Newcomer",
        timezone=owner_tz,
        email="newcomer@example.com",
        region="demo",
    )
    add(
        "customer.interaction",
        interaction_id=f"V-{run}",
        customer_id=f"C-{run}-new",
        kind="visit",
        occurred_at=(now - timedelta(days=3)).isoformat(),
    )
    add(
        "channel.order",
        order_id=f"CO-{run}",
        channel_id=f"CH-{run}",
        occurred_at=(now - timedelta(days=45)).isoformat(),
        amount="25000.00",
        currency="EUR",
    )
    # what maintaining the channel costs this month, against a budget it will overrun: the
    # owner and their manager get the alert; /costs shows it (two currencies, never added)
    month = local_date(now, owner_tz)
    for n, (category, money) in enumerate(
        (
            ("travel", {"amount": "1200.00", "currency": "EUR"}),
            ("staff_time", {"hours": "6", "hourly_rate": "60", "currency": "EUR"}),
            ("gift", {"amount": "800.00", "currency": "CNY"}),
        )
    ):
        add(
            "cost.recorded",
            about=f"channel:CH-{run}",
            cost_id=f"K-{run}-{n}",
            category=category,
            incurred_on=month.isoformat(),
            recorded_at=now.isoformat(),
            **money,
        )
    add(
        "budget.set",
        budget_id=f"B-{run}",
        name="East Coast maintenance",
        scope="channel",
        scope_id=f"CH-{run}",
        period="month",
        period_id=f"{month:%Y-%m}",
        amount="1000.00",
        currency="EUR",
        set_at=now.isoformat(),
    )
    return events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ingest", default=f"http://127.0.0.1:{SERVICE_PORTS['ingest']}")
    parser.add_argument("--rules", default=f"http://127.0.0.1:{SERVICE_PORTS['rules']}")
    parser.add_argument("--notifier", default=f"http://127.0.0.1:{SERVICE_PORTS['notifier']}")
    parser.add_argument(
        "--escalation-wait", type=float, default=360, help="seconds to wait for the escalation"
    )
    args = parser.parse_args(argv)
    now = datetime.now(UTC)
    run = now.strftime("%H%M%S")
    events = scenario(now, run)
    headers = {"X-API-Key": DEV_API_KEY}
    if not enable_journeys(args.rules, headers):
        return 1
    staff = [e for e in events if e["type"] == "staff.upserted"]
    # staff first: the rules must know the team before they assign its new customer
    if not publish(args.ingest, staff, headers):
        return 1
    for member in staff:
        url = f"{args.rules}/v1/subjects/staff:{member['staff_id']}"
        if not wait_for(partial(known, url, headers), 60):
            sys.stderr.write(f"the rules service has not seen {member['staff_id']}\n")
            return 1
    if not publish(args.ingest, [e for e in events if e not in staff], headers):
        return 1
    zones = ", ".join(z for z, *_ in daytime_zones(now))
    analytics = f"http://127.0.0.1:{SERVICE_PORTS['analytics']}"
    mail = ROOT / ".run" / "mail"
    sys.stdout.write(
        f"published {len(events)} events (customers in {zones}).\n"
        "Within a minute:\n"
        f"  e-mails       {mail}/*.eml  (open them in any mail client)\n"
        f"  tasks         curl -H 'X-API-Key: {DEV_API_KEY}' {args.notifier}/v1/tasks\n"
        "  actions       upkeep.actions.v1, outcomes on upkeep.deliveries.v1\n"
        f"  metrics       {args.notifier}/metrics  (upkeep_notifier_deliveries_total)\n"
        f"  journeys      curl -H 'X-API-Key: {DEV_API_KEY}' {args.rules}/v1/journeys\n"
        f"  funnels       curl -H 'X-API-Key: {DEV_API_KEY}' {analytics}/v1/journeys\n"
        f"  costs & ROI   {analytics}/costs  (sign in as admin / {DEV_ADMIN_PASSWORD})\n"
        f"  budgets       curl -H 'X-API-Key: {DEV_API_KEY}' {analytics}/v1/budgets\n"
        "                (East Coast's is forecast to overrun: its owner and their manager\n"
        "                 get the alert e-mail within a minute or two)\n"
    )
    before = set(mail.glob("*.eml")) if mail.exists() else set()
    if wait_for(lambda: len(new_mail(mail, before)) > 0, 60):
        time.sleep(5)  # let the rest arrive
        sys.stdout.write(f"{len(new_mail(mail, before))} new e-mails in {mail}\n")
    else:
        sys.stdout.write("no e-mail yet; see `make logs` for the rules and notifier logs\n")
    return people(args, run, mail, before)


def people(args: argparse.Namespace, run: str, mail: Path, before: set[Path]) -> int:
    """Show the assignment, then wait for the revisit task's escalation two levels up."""
    customer = f"{args.rules}/v1/subjects/customer:C-{run}-new"

    def owner() -> str | None:
        answer = httpx.get(customer, headers={"X-API-Key": DEV_API_KEY}, timeout=5)
        found = answer.json().get("customer", {}).get("owner_id") if answer.is_success else None
        return str(found) if found else None

    if not wait_for(lambda: owner() is not None, 60):
        sys.stdout.write(f"C-{run}-new has no owner yet; see `make logs` (rules)\n")
        return 0
    sys.stdout.write(
        f"\nC-{run}-new had no owner: assigned to {owner()} (S-{run}-gone has left, skipped).\n"
        "Its revisit task is overdue in a minute and is escalated to the manager, then the\n"
        f"director (waiting up to {args.escalation_wait:.0f} s) ...\n"
    )
    wanted = {"manager@example.com": "manager", "director@example.com": "director"}
    seen: set[str] = set()

    def escalated() -> bool:
        for path in new_mail(mail, before):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            key = "".join(str(message.get("X-Upkeep-Key", "")).split())
            to = str(message.get("To", ""))
            for address, who in wanted.items():
                if who not in seen and address in to and f"C-{run}-new" in key:
                    seen.add(who)
                    sys.stdout.write(f"  escalated to the {who}: {path}\n")
        return len(seen) == len(wanted)

    if not wait_for(escalated, args.escalation_wait, interval=2):
        sys.stdout.write("not escalated (yet): see `make logs` (rules, notifier)\n")
    return 0


def enable_journeys(rules: str, headers: dict[str, str]) -> bool:
    """Switch on the journeys shipped in ``journeys/`` (applied, switched off, at start-up)."""
    found = httpx.get(f"{rules}/v1/journeys", headers=headers, timeout=10)
    if not found.is_success:
        sys.stderr.write(f"the rules API refused: {found.status_code} {found.text}\n")
        return False
    for journey in found.json():
        answer = httpx.post(
            f"{rules}/v1/journeys/{journey['name']}:enable", headers=headers, timeout=10
        )
        if not answer.is_success:
            sys.stderr.write(f"could not enable {journey['name']}: {answer.text}\n")
            return False
    names = ", ".join(j["name"] for j in found.json())
    sys.stdout.write(f"journeys switched on: {names or '(none found in journeys/)'}\n")
    return True


def publish(ingest: str, events: list[dict[str, Any]], headers: dict[str, str]) -> bool:
    answer = httpx.post(f"{ingest}/v1/events", json=events, headers=headers, timeout=30)
    if answer.status_code != 202 or answer.json().get("errors"):
        sys.stderr.write(f"ingest refused the scenario: {answer.status_code} {answer.text}\n")
        return False
    return True


def known(url: str, headers: dict[str, str]) -> bool:
    return httpx.get(url, headers=headers, timeout=5).status_code == 200


def new_mail(mail: Path, before: set[Path]) -> list[Path]:
    return sorted(set(mail.glob("*.eml")) - before) if mail.exists() else []


def wait_for(check: Callable[[], bool], seconds: float, interval: float = 1) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except httpx.HTTPError:
            pass  # not up yet: try again
        time.sleep(interval)
    return False


if __name__ == "__main__":
    sys.exit(main())
