-- What each venue's edge last said of its outbox when it pulled: how many ops wait to be pushed
-- and when the oldest of them was written. NULL until the edge first reports.
ALTER TABLE site_sync ADD COLUMN pending_ops INTEGER;
ALTER TABLE site_sync ADD COLUMN oldest_pending_at TEXT;
