-- Only events created with a key (an API caller's id or Idempotency-Key) need the uniqueness
-- check. Events the hub routes carry none, and every one of them still added an entry to this
-- index: one B-tree page more to rewrite per routed webhook. Lookups by key (`dedup_key = ?`)
-- imply the key is not null, so they still use it.
DROP INDEX events_dedup;
CREATE UNIQUE INDEX events_dedup ON events (tenant_id, dedup_key) WHERE dedup_key IS NOT NULL;
