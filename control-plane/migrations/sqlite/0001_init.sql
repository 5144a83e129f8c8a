-- Configuration resources (tenants, sources, endpoints, event types, API keys) share one table:
-- they are few, read whole, and compiled in memory. `body` is JSON without secrets; secrets are
-- AEAD-encrypted in `secrets`.
CREATE TABLE resources (
    kind TEXT NOT NULL,
    id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    unique_key TEXT NOT NULL,
    body TEXT NOT NULL,
    secrets BLOB,
    version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX resources_unique_key ON resources (kind, unique_key);
CREATE INDEX resources_by_tenant ON resources (kind, tenant_id, id);

CREATE TABLE audit_log (
    id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    diff TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX audit_by_resource ON audit_log (resource_type, resource_id, id);
CREATE INDEX audit_by_tenant ON audit_log (tenant_id, id);

-- Idempotency-Key records: status 0 while the first request is in flight.
CREATE TABLE idempotency (
    key TEXT NOT NULL PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    content_type TEXT,
    body BLOB,
    created_at INTEGER NOT NULL
);
CREATE INDEX idempotency_by_age ON idempotency (created_at);
