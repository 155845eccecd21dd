-- What each venue last saw of its plugs (state, reachability, last answer, draw), pushed by the
-- venue as a `plug_status` event op when it changes. One row per plug; a later status replaces
-- an earlier one. Shown to HQ with the site's plugs; never replicated.
CREATE TABLE plug_status (
    plug_id     BLOB PRIMARY KEY,
    site_id     BLOB NOT NULL,
    observed_at TEXT NOT NULL,  -- when the venue saw it
    recorded_at TEXT NOT NULL,  -- when central recorded it
    data        TEXT NOT NULL   -- the status as pushed (JSON)
);
CREATE INDEX plug_status_site ON plug_status(site_id);
