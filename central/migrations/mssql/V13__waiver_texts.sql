-- Mirrors migrations/sqlite/V13__waiver_texts.sql; same rules as V1 (one batch, no batch
-- separators, no statement returning rows, every constraint named).
--
-- Waiver texts: the wording a venue shows before a waiver is signed, published at HQ and
-- replicated to every venue. Versions count 1, 2, 3, ... chain-wide and are never reused; a
-- published text is never edited, so the version a waiver records says for good what its signer
-- was shown. The unique version backs up the lock publishing takes (see the store's
-- waiver_texts.rs): two publications can never share one.
CREATE TABLE waiver_texts (
    id           UNIQUEIDENTIFIER NOT NULL,
    version      BIGINT           NOT NULL,
    title        NVARCHAR(400)    NOT NULL,
    body         NVARCHAR(MAX)    NOT NULL,
    published_at DATETIME2(3)     NOT NULL,
    published_by NVARCHAR(400)    NOT NULL,  -- the publisher's username
    CONSTRAINT pk_waiver_texts PRIMARY KEY (id),
    CONSTRAINT uq_waiver_texts_version UNIQUE (version)
);

-- The version of the text each waiver's signer was shown. NULL when the venue held none, and on
-- waivers signed before texts were versioned.
ALTER TABLE waivers ADD text_version BIGINT NULL;
