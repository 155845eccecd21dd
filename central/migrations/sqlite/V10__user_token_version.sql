-- A staff account's token version: bumped by every change to the account (disable, role, sites,
-- password). Each staff token carries the version it was issued at and is refused once they
-- differ, so a revocation does not wait for the token to expire.
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;
