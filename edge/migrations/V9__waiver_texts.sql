-- Waiver texts published at HQ, every version: the newest is what a venue's terminals show
-- before a waiver is signed, and its version is recorded on the waiver. `data` holds the record
-- as it travels (shared::wire::WaiverTextRecord).
CREATE TABLE waiver_texts (
    id      BLOB PRIMARY KEY,
    version INTEGER NOT NULL UNIQUE,
    data    TEXT NOT NULL
);

-- Edges before this version kept them as rows of an entity they did not know; they move to
-- their own table.
INSERT OR REPLACE INTO waiver_texts (id, version, data)
    SELECT entity_id, json_extract(data, '$.version'), data FROM other_rows
     WHERE entity = 'waiver_text' AND json_type(data, '$.version') = 'integer';
DELETE FROM other_rows WHERE entity = 'waiver_text';
