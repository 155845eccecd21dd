-- Recovery from restores and clones (see docs/sync-protocol.md). Mirrors
-- migrations/sqlite/V2__store_identity_and_op_aliases.sql; same rules as V1 (one batch, no
-- batch separators, no statement returning rows, every constraint named).

-- The database's identity, made once when it is created. A backup restored over it keeps it;
-- another chain's database has another one, and edges refuse to sync with it.
CREATE TABLE store_meta (
    id         INT              NOT NULL,
    store_id   UNIQUEIDENTIFIER NOT NULL,
    created_at DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_store_meta PRIMARY KEY (id),
    CONSTRAINT ck_store_meta_single_row CHECK (id = 1)
);
INSERT INTO store_meta (id, store_id, created_at) VALUES (1, NEWID(), SYSUTCDATETIME());

-- An op is identified by its op_id. After a fork an edge renumbers its pending ops, and one
-- central already holds then arrives at a second seq: it is recorded there as an alias (never
-- applied again), so op_id is no longer unique.
ALTER TABLE applied_ops DROP CONSTRAINT uq_applied_ops_op_id;
CREATE INDEX applied_ops_op_id ON applied_ops (op_id);
