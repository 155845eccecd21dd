-- Mirrors migrations/sqlite/V3__idempotency_commit_marker.sql. Set in the same transaction as
-- an idempotent request's writes: such a request is never run again, even if its answer (or
-- the acknowledgement of its COMMIT) was lost.
ALTER TABLE idempotency_keys ADD committed_at DATETIME2(3) NULL;
