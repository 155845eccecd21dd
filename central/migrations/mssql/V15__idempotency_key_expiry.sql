-- Mirrors migrations/sqlite/V15__idempotency_key_expiry.sql; same rules as V1 (one batch, no batch
-- separators, no statement returning rows, every constraint named).
--
-- Expired idempotency keys are found through this index. Without it, the purge that runs once a
-- minute scanned the whole table (every venue's and HQ's keys of the last day, answers included).
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
