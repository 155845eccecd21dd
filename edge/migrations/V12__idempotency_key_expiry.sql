-- Expired idempotency keys are found through this index. Without it, the purge that runs once a
-- minute on the writer read the whole table, answers included: with 50,000 keys of a busy day,
-- 35-42 ms during which no terminal's write went through.
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
