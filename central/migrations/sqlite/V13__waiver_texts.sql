-- Waiver texts: the wording a venue shows before a waiver is signed, published at HQ and
-- replicated to every venue. Versions count 1, 2, 3, ... chain-wide and are never reused; a
-- published text is never edited, so the version a waiver records says for good what its signer
-- was shown.
CREATE TABLE waiver_texts (
    id           BLOB PRIMARY KEY,
    version      INTEGER NOT NULL UNIQUE,
    title        TEXT NOT NULL,
    body         TEXT NOT NULL,
    published_at TEXT NOT NULL,
    published_by TEXT NOT NULL  -- the publisher's username
);

-- The version of the text each waiver's signer was shown. NULL when the venue held none, and on
-- waivers signed before texts were versioned.
ALTER TABLE waivers ADD COLUMN text_version INTEGER;
