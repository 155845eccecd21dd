-- A venue's decision about one of its ops central refused for good (retried as a new op, or
-- discarded), pushed by the edge as a `dead_letter` event op and recorded here so HQ sees which
-- of a venue's dead letters are still open. One row per refused op (its op_id, the op's
-- identity, at the lowest seq it was recorded under); a later decision replaces an earlier one.
CREATE TABLE dead_letter_resolutions (
    site_id          BLOB NOT NULL,
    op_id            BLOB NOT NULL,            -- the refused op
    resolution       TEXT NOT NULL,            -- retried | discarded
    retried_as       BLOB,                     -- the new op, when retried
    resolved_by      TEXT NOT NULL,            -- who decided, at the venue
    resolved_at      TEXT NOT NULL,            -- when, by the edge's clock (shown only)
    resolution_op_id BLOB NOT NULL,            -- the op that carried the decision
    recorded_at      TEXT NOT NULL,            -- when central recorded it
    PRIMARY KEY (site_id, op_id)
);
