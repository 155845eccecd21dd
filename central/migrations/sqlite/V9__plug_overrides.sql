-- Manual "on"/"off" overrides of plugs until a given time: set at HQ, or by a venue manager and
-- pushed by the edge. Written once and never edited; replicated to the plug's site.
CREATE TABLE plug_overrides (
    id      BLOB PRIMARY KEY,
    plug_id BLOB NOT NULL,
    site_id BLOB NOT NULL,
    set_at  TEXT NOT NULL,  -- when the server that accepted it took it
    ends_at TEXT NOT NULL,  -- from then on the schedules govern again
    data    TEXT NOT NULL   -- the record (JSON)
);
CREATE INDEX plug_overrides_plug ON plug_overrides(plug_id, set_at);
