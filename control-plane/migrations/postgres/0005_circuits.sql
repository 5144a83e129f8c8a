-- Open circuit breakers, shared by every replica: one that sees an endpoint fail opens its
-- circuit here, and the others hold their deliveries to it until then too.
CREATE TABLE endpoint_circuits (
    endpoint_id TEXT NOT NULL PRIMARY KEY,
    open_until BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
