-- The edge's replica of HQ data for its site, its own venue data, and its sync machinery.
-- Timestamps are RFC 3339 UTC with milliseconds, so text order is time order.
-- Every replicated table keeps the full record JSON in `data`; columns exist for lookups.

CREATE TABLE sites (
    id               BLOB PRIMARY KEY,
    allowed_networks TEXT NOT NULL,
    data             TEXT NOT NULL
);

CREATE TABLE devices (
    id               BLOB PRIMARY KEY,
    site_id          BLOB NOT NULL,
    key_hash         TEXT NOT NULL,
    revoked_at       TEXT,
    data             TEXT NOT NULL
);
CREATE INDEX devices_key_hash ON devices(key_hash);

CREATE TABLE users (
    id          BLOB PRIMARY KEY,
    username    TEXT NOT NULL,
    disabled_at TEXT,
    data        TEXT NOT NULL
);
CREATE INDEX users_username ON users(username);

CREATE TABLE products (
    id     BLOB PRIMARY KEY,
    sku    TEXT NOT NULL,
    active INTEGER NOT NULL,
    data   TEXT NOT NULL
);

CREATE TABLE customers (
    id           BLOB PRIMARY KEY,
    phone        TEXT,
    email        TEXT,
    home_site_id BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    data         TEXT NOT NULL
);
CREATE INDEX customers_phone ON customers(phone);
CREATE INDEX customers_email ON customers(email);

CREATE TABLE waivers (
    id          BLOB PRIMARY KEY,
    customer_id BLOB NOT NULL,
    expires_at  TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX waivers_customer ON waivers(customer_id, expires_at);

-- Replicated rows of entities this slice does not use yet (games, plugs, schedules): kept so
-- later features find them without re-bootstrapping the replica.
CREATE TABLE other_rows (
    entity    TEXT NOT NULL,
    entity_id BLOB NOT NULL,
    data      TEXT NOT NULL,
    PRIMARY KEY (entity, entity_id)
);

-- Exactly one row (id = 1).
CREATE TABLE sync_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    site_id      BLOB NOT NULL,
    next_seq     INTEGER NOT NULL,
    cursor       INTEGER NOT NULL DEFAULT 0,
    last_push_at TEXT,
    last_pull_at TEXT,
    last_error   TEXT,
    online       INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY,
    op_id      BLOB NOT NULL UNIQUE,
    entity     TEXT NOT NULL,
    entity_id  BLOB NOT NULL,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX outbox_entity ON outbox(entity, entity_id);

CREATE TABLE dead_letters (
    seq         INTEGER PRIMARY KEY,
    op_id       BLOB NOT NULL,
    entity      TEXT NOT NULL,
    entity_id   BLOB NOT NULL,
    data        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    rejected_at TEXT NOT NULL
);

CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    status       INTEGER,
    content_type TEXT,
    body         BLOB,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
