-- Inbound hub: every webhook a hub source accepted, stored before the provider got its 2xx.
-- status: routed (outbound events created, possibly none when no route matched), quarantined
-- (failed the source's schema; waits for release or deletion), failed (the transformation
-- failed; kept for inspection and replay).
CREATE TABLE inbound_events (
    id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    source_name TEXT NOT NULL,
    status TEXT NOT NULL,
    dedup_key TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    -- JSON object of the request headers, secrets masked.
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    client_ip TEXT,
    received_at INTEGER NOT NULL,
    event_type TEXT,
    -- The transformation's output (the outbound payload), JSON.
    result TEXT,
    -- JSON array: every route considered, what it decided, the outbound events it made.
    routing TEXT NOT NULL,
    error TEXT,
    -- Later copies of this webhook, acknowledged and dropped.
    duplicates INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);
CREATE INDEX inbound_by_tenant ON inbound_events (tenant_id, id);
CREATE INDEX inbound_by_source ON inbound_events (source_id, id);
CREATE INDEX inbound_quarantined ON inbound_events (id) WHERE status = 'quarantined';

-- Duplicate detection: one row per (source, key) while its window lasts; a key seen again
-- after its window starts a new one.
CREATE TABLE inbound_dedup (
    source_id TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    inbound_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (source_id, dedup_key)
);
CREATE INDEX inbound_dedup_expiry ON inbound_dedup (expires_at);

-- Ordering by key (an inbound route's order_key): an ordered delivery with a key waits only for
-- earlier open deliveries to its endpoint with the same key (or with none).
ALTER TABLE deliveries ADD COLUMN order_key TEXT;
