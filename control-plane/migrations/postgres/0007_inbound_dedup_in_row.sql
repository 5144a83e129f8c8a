-- Duplicate detection moves into the inbound event's own row: a unique (source, key) index
-- replaces the separate key table, so accepting a webhook writes one row instead of two (and
-- two fewer index entries). A key stays taken until its window ends (dedup_until); the next
-- copy after that clears it from the old row and starts a new window. Nothing to purge.
DROP TABLE inbound_dedup;
DROP INDEX inbound_by_source;
ALTER TABLE inbound_events ADD COLUMN dedup_until BIGINT;
CREATE UNIQUE INDEX inbound_dedup ON inbound_events (source_id, dedup_key);
