-- Set in the same transaction as an idempotent request's writes: such a request is never run
-- again, even if its answer was lost before it could be recorded.
ALTER TABLE idempotency_keys ADD COLUMN committed_at TEXT;
