-- Outbound delivery: events, one delivery per (event, endpoint), and every attempt.
CREATE TABLE events (
    id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    -- A caller-supplied id or Idempotency-Key: the same key never creates a second event.
    dedup_key TEXT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX events_dedup ON events (tenant_id, dedup_key);
CREATE INDEX events_by_tenant ON events (tenant_id, id);

-- status: pending (waiting for next_attempt_at), leased (in flight until lease_until),
-- succeeded, dead (dead-lettered: attempts exhausted, endpoint gone or disabled).
CREATE TABLE deliveries (
    id TEXT NOT NULL PRIMARY KEY,
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT,
    priority BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (status, priority, next_attempt_at);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, id);
CREATE INDEX deliveries_by_event ON deliveries (event_id);

CREATE TABLE attempts (
    id TEXT NOT NULL PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code BIGINT,
    request_headers TEXT NOT NULL,
    response_headers TEXT,
    response_body TEXT,
    error_class TEXT,
    error TEXT
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, attempt);
