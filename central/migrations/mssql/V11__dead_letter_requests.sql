-- Mirrors migrations/sqlite/V11__dead_letter_requests.sql; same rules as V1 (one batch, no
-- batch separators, no statement returning rows, every constraint named).
--
-- HQ's request that a venue retry or discard one of its dead letters. The request reaches the
-- venue through the change feed (entity `dead_letter_request`); the venue's decision comes back
-- as a `dead_letter` event op into dead_letter_resolutions. One row per refused op: a later
-- request replaces an earlier one. Kept after the venue resolved it, so HQ sees who asked.
CREATE TABLE dead_letter_requests (
    site_id      UNIQUEIDENTIFIER NOT NULL,
    op_id        UNIQUEIDENTIFIER NOT NULL,  -- the refused op
    action       NVARCHAR(16)     NOT NULL,  -- retry | discard
    requested_by NVARCHAR(400)    NOT NULL,  -- who asked, at HQ
    requested_at DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_dead_letter_requests PRIMARY KEY (site_id, op_id)
);
