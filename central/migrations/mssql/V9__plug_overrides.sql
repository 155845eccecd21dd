-- Mirrors migrations/sqlite/V9__plug_overrides.sql; same rules as V1 (one batch, no batch
-- separators, no statement returning rows, every constraint named).
--
-- Manual "on"/"off" overrides of plugs until a given time: set at HQ, or by a venue manager and
-- pushed by the edge. Written once and never edited; replicated to the plug's site.
CREATE TABLE plug_overrides (
    id      UNIQUEIDENTIFIER NOT NULL,
    plug_id UNIQUEIDENTIFIER NOT NULL,
    site_id UNIQUEIDENTIFIER NOT NULL,
    set_at  DATETIME2(3)     NOT NULL,  -- when the server that accepted it took it
    ends_at DATETIME2(3)     NOT NULL,  -- from then on the schedules govern again
    data    NVARCHAR(MAX)    NOT NULL,  -- the record (JSON)
    CONSTRAINT pk_plug_overrides PRIMARY KEY (id)
);
CREATE INDEX plug_overrides_plug ON plug_overrides (plug_id, set_at);
