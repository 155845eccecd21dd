-- Mirrors migrations/sqlite/V10__user_token_version.sql; same rules as V1 (one batch, no batch
-- separators, no statement returning rows, every constraint named).
--
-- A staff account's token version: bumped by every change to the account (disable, role, sites,
-- password). Each staff token carries the version it was issued at and is refused once they
-- differ, so a revocation does not wait for the token to expire.
ALTER TABLE users ADD token_version BIGINT NOT NULL
    CONSTRAINT df_users_token_version DEFAULT 0;
