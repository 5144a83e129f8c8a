-- Configuration resources (tenants, sources, endpoints, event types, API keys) share one table:
-- they are few, read whole, and compiled in memory. `body` is JSON without secrets; secrets are
-- AEAD-encrypted in `secrets`.
CREATE TABLE resources (
    kind TEXT NOT NULL,
    id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    unique_key TEXT NOT NULL,
    body TEXT NOT NULL,
    secrets BYTEA,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
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
    at BIGINT NOT NULL
);
CREATE INDEX audit_by_resource ON audit_log (resource_type, resource_id, id);
CREATE INDEX audit_by_tenant ON audit_log (tenant_id, id);

-- Idempotency-Key records: status 0 while the first request is in flight.
CREATE TABLE idempotency (
    key TEXT NOT NULL PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status BIGINT NOT NULL,
    content_type TEXT,
    body BYTEA,
    created_at BIGINT NOT NULL
);
CREATE INDEX idempotency_by_age ON idempotency (created_at);
