-- HQ's request that a venue retry or discard one of its dead letters. The request reaches the
-- venue through the change feed (entity `dead_letter_request`); the venue's decision comes back
-- as a `dead_letter` event op into dead_letter_resolutions. One row per refused op: a later
-- request replaces an earlier one. Kept after the venue resolved it, so HQ sees who asked.
CREATE TABLE dead_letter_requests (
    site_id      BLOB NOT NULL,
    op_id        BLOB NOT NULL,            -- the refused op
    action       TEXT NOT NULL,            -- retry | discard
    requested_by TEXT NOT NULL,            -- who asked, at HQ
    requested_at TEXT NOT NULL,
    PRIMARY KEY (site_id, op_id)
);
