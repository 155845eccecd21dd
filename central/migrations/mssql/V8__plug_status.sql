-- Mirrors migrations/sqlite/V8__plug_status.sql; same rules as V1 (one batch, no batch
-- separators, no statement returning rows, every constraint named).
--
-- What each venue last saw of its plugs (state, reachability, last answer, draw), pushed by the
-- venue as a `plug_status` event op when it changes. One row per plug; a later status replaces
-- an earlier one. Shown to HQ with the site's plugs; never replicated.
CREATE TABLE plug_status (
    plug_id     UNIQUEIDENTIFIER NOT NULL,
    site_id     UNIQUEIDENTIFIER NOT NULL,
    observed_at DATETIME2(3)     NOT NULL,  -- when the venue saw it
    recorded_at DATETIME2(3)     NOT NULL,  -- when central recorded it
    data        NVARCHAR(MAX)    NOT NULL,  -- the status as pushed (JSON)
    CONSTRAINT pk_plug_status PRIMARY KEY (plug_id)
);
CREATE INDEX plug_status_site ON plug_status (site_id);
