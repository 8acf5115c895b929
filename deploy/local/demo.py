"""``make demo``: a realistic scenario published through ingest's HTTP API into the system that
``make up`` runs, so that reminders and e-mails appear within a minute.

Customers live in time zones where it is daytime now (so the 09:00 reminders of today are due
and no quiet hours hold them back): some have their birthday today, some have contracts
ending in 30, 7 and 1 days; a channel has had no orders for 45 days; a few orders and closed
tickets from 10 to 14 days ago call for follow-ups today. Ids carry the run's time, so running
it again makes a new scenario.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from deploy.local.kafka import ROOT
from deploy.local.stack import DEV_API_KEY, SERVICE_PORTS
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
        staff_id=f"S-{run}-mgr",
        name="Morgan Manager",
        timezone=owner_tz,
        email="manager@example.com",
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
    )
    add(
        "channel.order",
        order_id=f"CO-{run}",
        channel_id=f"CH-{run}",
        occurred_at=(now - timedelta(days=45)).isoformat(),
        amount="25000.00",
        currency="EUR",
    )
    return events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ingest", default=f"http://127.0.0.1:{SERVICE_PORTS['ingest']}")
    parser.add_argument("--notifier", default=f"http://127.0.0.1:{SERVICE_PORTS['notifier']}")
    args = parser.parse_args(argv)
    now = datetime.now(UTC)
    events = scenario(now, now.strftime("%H%M%S"))
    headers = {"X-API-Key": DEV_API_KEY}
    answer = httpx.post(f"{args.ingest}/v1/events", json=events, headers=headers, timeout=30)
    if answer.status_code != 202 or answer.json().get("errors"):
        sys.stderr.write(f"ingest refused the scenario: {answer.status_code} {answer.text}\n")
        return 1
    zones = ", ".join(z for z, *_ in daytime_zones(now))
    sys.stdout.write(
        f"published {len(events)} events (customers in {zones}).\n"
        "Within a minute:\n"
        f"  e-mails       {ROOT / '.run' / 'mail'}/*.eml  (open them in any mail client)\n"
        f"  tasks         curl -H 'X-API-Key: {DEV_API_KEY}' {args.notifier}/v1/tasks\n"
        "  actions       upkeep.actions.v1, outcomes on upkeep.deliveries.v1\n"
        f"  metrics       {args.notifier}/metrics  (upkeep_notifier_deliveries_total)\n"
    )
    deadline = time.monotonic() + 60
    mail = ROOT / ".run" / "mail"
    before = len(list(mail.glob("*.eml"))) if mail.exists() else 0
    while time.monotonic() < deadline:
        count = len(list(mail.glob("*.eml"))) if mail.exists() else 0
        if count > before:
            time.sleep(5)  # let the rest arrive
            count = len(list(mail.glob("*.eml")))
            sys.stdout.write(f"{count - before} new e-mails in {mail}\n")
            return 0
        time.sleep(1)
    sys.stdout.write("no e-mail yet; see `make logs` for the rules and notifier logs\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
