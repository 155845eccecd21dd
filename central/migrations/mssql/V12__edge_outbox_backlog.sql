-- Mirrors migrations/sqlite/V12__edge_outbox_backlog.sql; same rules as V1 (one batch, no batch
-- separators, no statement returning rows, every constraint named).
--
-- What each venue's edge last said of its outbox when it pulled: how many ops wait to be pushed
-- and when the oldest of them was written. NULL until the edge first reports.
ALTER TABLE site_sync ADD pending_ops BIGINT NULL;
ALTER TABLE site_sync ADD oldest_pending_at DATETIME2(3) NULL;
