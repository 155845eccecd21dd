-- Recovery from restores, clones and stuck queues (see docs/sync-protocol.md).

-- What the edge knows of central: the database it is bound to (a different one is refused),
-- the highest outbox seq central ever acknowledged (a lower answer means central was restored
-- from a backup), and the change it last applied (a different one at that seq means central's
-- change log was restored, and the replica is resynchronised).
ALTER TABLE sync_state ADD COLUMN central_store_id BLOB;
ALTER TABLE sync_state ADD COLUMN highest_acked_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_state ADD COLUMN cursor_anchor TEXT;            -- JSON ChangeAnchor
-- Pushes and pulls fail and recover independently; each says why here.
ALTER TABLE sync_state ADD COLUMN push_error TEXT;
ALTER TABLE sync_state ADD COLUMN pull_error TEXT;
-- Set when central refused the credential (the site was enrolled again elsewhere): no more
-- sync and no more local writes until the box is enrolled again.
ALTER TABLE sync_state ADD COLUMN fenced TEXT;
-- 1 while the replica is being pulled again from cursor 0 after central's change log was
-- restored; rows of HQ data not seen again by the end are removed.
ALTER TABLE sync_state ADD COLUMN resyncing INTEGER NOT NULL DEFAULT 0;

-- The retention window: ops central acknowledged, kept for a while (by age and count), so they
-- can be sent again if central is restored from a backup that predates them.
CREATE TABLE acked_ops (
    op_id      BLOB PRIMARY KEY,
    seq        INTEGER NOT NULL,
    entity     TEXT NOT NULL,
    entity_id  BLOB NOT NULL,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    acked_at   TEXT NOT NULL
);
CREATE INDEX acked_ops_seq ON acked_ops(seq);
CREATE INDEX acked_ops_acked_at ON acked_ops(acked_at);

-- Dead letters are identified by op id: after a fork the outbox is renumbered, so a seq may
-- be used again by a later op.
CREATE TABLE dead_letters_v3 (
    op_id       BLOB PRIMARY KEY,
    seq         INTEGER NOT NULL,
    entity      TEXT NOT NULL,
    entity_id   BLOB NOT NULL,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    rejected_at TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
INSERT INTO dead_letters_v3 (op_id, seq, entity, entity_id, kind, data, reason, rejected_at, created_at)
SELECT op_id, seq, entity, entity_id, 'upsert', data, reason, rejected_at, rejected_at FROM dead_letters;
DROP TABLE dead_letters;
ALTER TABLE dead_letters_v3 RENAME TO dead_letters;

-- A pulled change for a row that still has pending local ops waits here, and is applied once
-- those ops are acknowledged or dead-lettered (the latest change per row).
CREATE TABLE held_changes (
    entity    TEXT NOT NULL,
    entity_id BLOB NOT NULL,
    seq       INTEGER NOT NULL,
    change    TEXT NOT NULL,
    PRIMARY KEY (entity, entity_id)
);

-- Pulled changes this version could not decode, kept with the reason.
CREATE TABLE skipped_changes (
    seq        INTEGER PRIMARY KEY,
    entity     TEXT NOT NULL,
    entity_id  TEXT NOT NULL,
    reason     TEXT NOT NULL,
    change     TEXT NOT NULL,
    skipped_at TEXT NOT NULL
);

-- Rows of HQ data seen during a resync (see `resyncing`).
CREATE TABLE resync_seen (
    entity    TEXT NOT NULL,
    entity_id BLOB NOT NULL,
    PRIMARY KEY (entity, entity_id)
);

-- Sensitive actions taken at this edge (dead letters retried or discarded).
CREATE TABLE audit_log (
    id         BLOB PRIMARY KEY,
    at         TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id   BLOB,
    actor_name TEXT NOT NULL,
    ip         TEXT,
    action     TEXT NOT NULL,
    target     TEXT
);

-- Set in the same transaction as an idempotent request's writes: such a request is never run
-- again, even if its answer was lost before it could be recorded.
ALTER TABLE idempotency_keys ADD COLUMN committed_at TEXT;
