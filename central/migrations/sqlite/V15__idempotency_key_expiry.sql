-- Expired idempotency keys are found through this index. Without it, the purge that runs once a
-- minute read the whole table (every venue's and HQ's keys of the last day, answers included)
-- while holding the writer.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
