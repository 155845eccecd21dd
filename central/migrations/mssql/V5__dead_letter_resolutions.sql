-- Mirrors migrations/sqlite/V5__dead_letter_resolutions.sql; same rules as V1 (one batch, no
-- batch separators, no statement returning rows, every constraint named).
--
-- A venue's decision about one of its ops central refused for good (retried as a new op, or
-- discarded), pushed by the edge as a `dead_letter` event op and recorded here so HQ sees which
-- of a venue's dead letters are still open. One row per refused op; a later decision replaces
-- an earlier one. The resolver's name is checked to at most 200 characters before it gets here.
CREATE TABLE dead_letter_resolutions (
    site_id          UNIQUEIDENTIFIER NOT NULL,
    op_id            UNIQUEIDENTIFIER NOT NULL,  -- the refused op
    resolution       NVARCHAR(16)     NOT NULL,  -- retried | discarded
    retried_as       UNIQUEIDENTIFIER NULL,      -- the new op, when retried
    resolved_by      NVARCHAR(400)    NOT NULL,  -- who decided, at the venue
    resolved_at      DATETIME2(3)     NOT NULL,  -- when, by the edge's clock (shown only)
    resolution_op_id UNIQUEIDENTIFIER NOT NULL,  -- the op that carried the decision
    recorded_at      DATETIME2(3)     NOT NULL,  -- when central recorded it
    CONSTRAINT pk_dead_letter_resolutions PRIMARY KEY (site_id, op_id)
);
