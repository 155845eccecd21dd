-- Recovery from restores and clones (see docs/sync-protocol.md).

-- The database's identity, made once when it is created. A backup restored over it keeps it;
-- another chain's database has another one, and edges refuse to sync with a database that is
-- not the one they enrolled with.
CREATE TABLE store_meta (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    store_id   BLOB NOT NULL,
    created_at TEXT NOT NULL
);
INSERT INTO store_meta (id, store_id, created_at)
VALUES (1, randomblob(16), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

-- An op is identified by its op_id. After a fork an edge renumbers its pending ops, and one
-- central already holds then arrives at a second seq: it is recorded there as an alias (never
-- applied again), so op_id is no longer unique. SQLite cannot drop a UNIQUE constraint, so the
-- table is rebuilt.
CREATE TABLE applied_ops_v2 (
    site_id     BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    op_id       BLOB NOT NULL,
    rejected    TEXT,                        -- reason, when refused for good
    applied_at  TEXT NOT NULL,
    PRIMARY KEY (site_id, seq)
);
INSERT INTO applied_ops_v2 (site_id, seq, op_id, rejected, applied_at)
SELECT site_id, seq, op_id, rejected, applied_at FROM applied_ops;
DROP TABLE applied_ops;
ALTER TABLE applied_ops_v2 RENAME TO applied_ops;
CREATE INDEX applied_ops_op_id ON applied_ops(op_id);
