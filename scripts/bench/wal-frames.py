#!/usr/bin/env python3
"""WAL frames per routed hub webhook, for schema decisions: a number that does not depend on
how fast the machine is this hour.

Creates a SQLite database from control-plane/migrations/sqlite, then writes what the hub's group
commit writes for a routed webhook (an inbound row, its event, its leased delivery, and in the
next commit the attempt and the delivery's update), PER_COMMIT webhooks per transaction, with
rows of the sizes `make bench-ingest` stores. Auto-checkpoint is off, so the WAL's frame count
after the run is every page the commits wrote. Each 4 KiB frame is written, flushed by fdatasync
and later checkpointed: about a fifth of the control plane's CPU on the routed path.

usage: scripts/bench/wal-frames.py [VARIANT[:PER_COMMIT] ...]
  base            the schema as migrated
  drop:INDEX      without one index (e.g. drop:events_by_tenant)
  without-rowid:T table T (events, deliveries, attempts, inbound_events) as WITHOUT ROWID
  no-result       inbound rows without the transformation result
"""
import glob
import os
import sqlite3
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MIGRATIONS = sorted(glob.glob(os.path.join(ROOT, "control-plane/migrations/sqlite/*.sql")))
TENANT, SOURCE, ENDPOINT = "ten_" + "0" * 26, "src_" + "0" * 26, "ep_" + "0" * 26
HEADERS = (
    '{"content-length":"295","content-type":"application/json","host":"127.0.0.1:27834",'
    '"webhook-id":"hub0_19964","webhook-signature":"v1,jzavBVFYMuGumiVQVCdkSGZGuA99qFJqKFurNOVb9Nc=",'
    '"webhook-timestamp":"1796326209","x-envoy-expected-rq-timeout-ms":"15000",'
    '"x-envoy-external-address":"127.0.0.1","x-forwarded-for":"192.0.2.2","x-forwarded-proto":"http",'
    '"x-hookmesh-mode":"hub","x-hookmesh-source":"hub","x-hookmesh-verified":"standard_webhooks",'
    '"x-request-id":"e8fa969f-9488-408d-aa3e-10c4ad0101c6"}'
)
BODY = '{"data":{"amount":1200,"customer":"cus_0123456789","id":19964,"note":"' + "x" * 200 + '"},"type":"invoice.paid"}'
ROUTING = (
    '[{"destinations":[{"delivery_id":"dlv_01M8YP5JZA25JAJVJ5R5SXX3Q9","endpoint_id":"ep_01M8YP5AS79YWTXXVZ1XEME6TF"}],'
    '"event_id":"evt_01M8YP5JZA8WKE6M6TYENCGXHA","matched":true,"route":"all"}]'
)
REQUEST_HEADERS = (
    '{"webhook-id":"evt_01M8YP5JZ82EDAS9WEEJDXK1XX","webhook-timestamp":"1796326214",'
    '"webhook-signature":"v1,NytzEaJ8HzN331+LmFd/n5P/KKZJN20eNdo4UxLqvf4=","content-type":"application/json"}'
)
RESPONSE_HEADERS = '{"content-length":"0","date":"Thu, 03 Dec 2026 19:30:14 GMT"}'
T0 = 1796326209000


def time_ordered(prefix, n):
    # Like the product's ids: later ids sort after earlier ones.
    return f"{prefix}_{n:026d}"


def schema_change(db, variant):
    kind, _, arg = variant.partition(":")
    if kind == "drop":
        db.execute(f"DROP INDEX {arg}")
    elif kind == "without-rowid":
        create = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (arg,)).fetchone()[0]
        indexes = [r[0] for r in db.execute(
            "SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name=? AND sql IS NOT NULL", (arg,))]
        db.executescript(f"DROP TABLE {arg};\n{create} WITHOUT ROWID;\n" + "".join(i + ";\n" for i in indexes))
    elif kind not in ("base", "no-result"):
        sys.exit(f"unknown variant {variant}")


def run(variant, per_commit, commits=400):
    with tempfile.TemporaryDirectory() as dir:
        db = sqlite3.connect(os.path.join(dir, "h.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        for m in MIGRATIONS:
            db.executescript(open(m, encoding="utf-8").read())
        schema_change(db, variant)
        db.execute("PRAGMA wal_autocheckpoint=0")
        result = None if variant == "no-result" else BODY
        n, previous, counted = 0, [], 0
        for c in range(commits):
            db.execute("BEGIN IMMEDIATE")
            leased = []
            for _ in range(per_commit):
                n += 1
                t = T0 + n
                inbound, event, delivery = time_ordered("inb", n), time_ordered("evt", n), time_ordered("dlv", n)
                db.execute(
                    "INSERT INTO inbound_events (id, tenant_id, source_id, source_name, status, dedup_key, method, path, query, headers, body, client_ip, received_at, event_type, result, routing, error, duplicates, updated_at, dedup_until) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (inbound, TENANT, SOURCE, "hub", "routed", f"hub0_{n:06d}", "POST", "/hub/in", "", HEADERS,
                     BODY.encode(), "192.0.2.2", t, "invoice.paid", result, ROUTING, None, 0, t, t + 86_400_000))
                db.execute(
                    "INSERT INTO events (id, tenant_id, event_type, payload, dedup_key, created_at) VALUES (?,?,?,?,?,?)",
                    (event, TENANT, "invoice.paid", BODY, None, t))
                db.execute(
                    "INSERT INTO deliveries (id, event_id, endpoint_id, tenant_id, status, attempts, next_attempt_at, lease_until, priority, last_error, created_at, updated_at, ordered, order_key) "
                    "VALUES (?,?,?,?,'leased',0,?,?,0,NULL,?,?,0,NULL)",
                    (delivery, event, ENDPOINT, TENANT, t, t + 120_000, t, t))
                leased.append(delivery)
            for j, delivery in enumerate(previous):
                db.execute(
                    "INSERT INTO attempts (id, delivery_id, attempt, started_at, duration_ms, status_code, request_headers, response_headers, response_body, error_class, error) "
                    "VALUES (?,?,1,?,1,200,?,?,'',NULL,NULL)",
                    (time_ordered("att", n * 1000 + j), delivery, T0 + n, REQUEST_HEADERS, RESPONSE_HEADERS))
                db.execute(
                    "UPDATE deliveries SET status = 'succeeded', attempts = attempts + 1, lease_until = NULL, last_error = NULL, updated_at = ? WHERE id = ?",
                    (T0 + n, delivery))
            previous = leased
            db.execute("COMMIT")
            if c == commits // 4:
                # The first quarter fills the tables' first pages: count from here.
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                counted = commits - c - 1
        frames = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        db.close()
    print(f"{variant:32s} {per_commit:3d} webhooks/commit  {frames / counted:5.1f} frames/commit  "
          f"{frames / counted / per_commit:4.2f} frames/webhook")


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["base"]:
        variant, _, per_commit = arg.rpartition(":") if arg.rsplit(":", 1)[-1].isdigit() else (arg, "", "12")
        run(variant, int(per_commit))
