"""``make bench-mongo``: the embedded MongoDB-wire servers on the operations Upkeep's hot paths
send, in one run on this machine: the compiled ``secantusd-rs`` advertising a single-node
replica set (its default), the same ``--standalone`` (as Compose's ``mongod`` runs), and the
pure-Python ``secantusdb``.

Operations (pymongo, one client, sequential): ``insert_many`` of 500 documents of ~20 fields
(ingest's claims, analytics' facts); ``bulk_write`` of 500 upserts with ``$inc``/``$max``
(aggregates, ledger); ``find({_id: {$in: 500 ids}})`` on the collection once it holds
``--docs`` documents (rules' state load); an indexed equality + range query with sort and limit
(due timers, due deliveries).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, MongoClient, UpdateOne

from bench.summary import write_summary
from deploy.local.kafka import ROOT, free_port, wait_for_port
from deploy.local.mongo_choice import ServerChoice, build, python_server
from deploy.local.processes import Managed

BATCH = 500


def doc(n: int) -> dict[str, Any]:
    return {
        "_id": f"d-{n}",
        "partition": n % 6,
        "due_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
        **{f"f{i}": f"value {n} {i}" for i in range(17)},
    }


def rate(ops: int, seconds: float) -> float:
    return round(ops / seconds, 1)


def timed(fn: Callable[[], object], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return time.perf_counter() - started


def measure(uri: str, docs: int) -> dict[str, float]:
    client: MongoClient[dict[str, Any]] = MongoClient(uri, tz_aware=True)
    coll = client["bench"]["ops"]
    coll.drop()
    coll.create_index([("partition", ASCENDING), ("due_at", ASCENDING)])
    counter = iter(range(10**9))

    def insert() -> None:
        coll.insert_many([doc(next(counter)) for _ in range(BATCH)], ordered=False)

    batches = docs // BATCH
    insert_s = timed(insert, batches)
    keys = [f"k-{n % 2000}" for n in range(BATCH)]

    def upserts() -> None:
        client["bench"]["agg"].bulk_write(
            [
                UpdateOne({"_id": k}, {"$inc": {"n": 1}, "$max": {"at": n}}, upsert=True)
                for n, k in enumerate(keys)
            ],
            ordered=False,
        )

    upsert_s = timed(upserts, 20)
    ids = [f"d-{n}" for n in range(0, docs, max(1, docs // BATCH))][:BATCH]
    find_s = timed(lambda: list(coll.find({"_id": {"$in": ids}})), 20)
    cutoff = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=docs // 2)
    range_s = timed(
        lambda: list(
            coll.find({"partition": 3, "due_at": {"$lte": cutoff}})
            .sort("due_at", ASCENDING)
            .limit(100)
        ),
        50,
    )
    client.close()
    return {
        "insert_many_docs_per_s": rate(batches * BATCH, insert_s),
        "bulk_upserts_ops_per_s": rate(20 * BATCH, upsert_s),
        "find_in_500_ids_queries_per_s": rate(20, find_s),
        "indexed_range_sort_limit_queries_per_s": rate(50, range_s),
    }


def run_server(name: str, choice: ServerChoice, extra: list[str], docs: int) -> dict[str, float]:
    state = ROOT / ".run" / f"bench-mongo-{name}"
    shutil.rmtree(state, ignore_errors=True)
    port = free_port()
    managed = Managed(f"mongo-{name}", state)
    managed.start([*choice.command("127.0.0.1", port, state / "data", auth=False), *extra])
    try:
        wait_for_port("127.0.0.1", port, 60)
        return measure(f"mongodb://127.0.0.1:{port}", docs)
    finally:
        managed.stop()
        shutil.rmtree(state, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--skip-python", action="store_true")
    args = parser.parse_args(argv)
    rust = ServerChoice("rust", [str(build())], "compiled")
    servers: list[tuple[str, ServerChoice, list[str]]] = [
        ("rust_replica_set", rust, []),
        ("rust_standalone", rust, ["--standalone"]),
    ]
    if not args.skip_python:
        servers.append(("python", python_server("bench"), []))
    results = {}
    for name, choice, extra in servers:
        results[name] = run_server(name, choice, extra, args.docs)
        sys.stdout.write(f"{name:18} {results[name]}\n")
        sys.stdout.flush()
    write_summary("mongo", {"documents": args.docs, "servers": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
