-- Central schema, SQLite. Times are RFC 3339 UTC text with milliseconds; ids are UUIDs as 16-byte blobs.

CREATE TABLE sites (
    id               BLOB PRIMARY KEY,
    name             TEXT NOT NULL,
    timezone         TEXT NOT NULL,
    allowed_networks TEXT NOT NULL,          -- JSON array of CIDRs
    created_at       TEXT NOT NULL
);

CREATE TABLE enrollment_tokens (
    id          BLOB PRIMARY KEY,
    site_id     BLOB NOT NULL REFERENCES sites(id),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT,
    device_id   BLOB
);

CREATE TABLE devices (
    id               BLOB PRIMARY KEY,
    site_id          BLOB NOT NULL REFERENCES sites(id),
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    allowed_networks TEXT NOT NULL,
    key_hash         TEXT NOT NULL UNIQUE,
    created_at       TEXT NOT NULL,
    revoked_at       TEXT
);
CREATE INDEX devices_site ON devices(site_id);

CREATE TABLE users (
    id            BLOB PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    disabled_at   TEXT
);

CREATE TABLE user_sites (
    user_id BLOB NOT NULL REFERENCES users(id),
    site_id BLOB NOT NULL REFERENCES sites(id),
    PRIMARY KEY (user_id, site_id)
);

CREATE TABLE products (
    id               BLOB PRIMARY KEY,
    sku              TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    price_cents      INTEGER NOT NULL,
    duration_minutes INTEGER,
    active           INTEGER NOT NULL,
    created_at       TEXT NOT NULL
);

CREATE TABLE games (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE COLLATE NOCASE,
    score_order TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE plugs (
    id         BLOB PRIMARY KEY,
    site_id    BLOB NOT NULL REFERENCES sites(id),
    name       TEXT NOT NULL COLLATE NOCASE,
    host       TEXT NOT NULL,
    port       INTEGER NOT NULL,
    child_id   TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (site_id, name)
);

CREATE TABLE plug_schedules (
    id         BLOB PRIMARY KEY,
    plug_id    BLOB NOT NULL REFERENCES plugs(id),
    site_id    BLOB NOT NULL REFERENCES sites(id),
    cron       TEXT NOT NULL,
    state      TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX plug_schedules_plug ON plug_schedules(plug_id);

CREATE TABLE customers (
    id           BLOB PRIMARY KEY,
    first_name   TEXT NOT NULL,
    last_name    TEXT NOT NULL,
    birth_date   TEXT NOT NULL,
    phone        TEXT,
    email        TEXT,
    guardian_id  BLOB,
    home_site_id BLOB NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX customers_phone ON customers(phone);
CREATE INDEX customers_site_created ON customers(home_site_id, created_at);

CREATE TABLE waivers (
    id          BLOB PRIMARY KEY,
    customer_id BLOB NOT NULL,
    site_id     BLOB NOT NULL,
    signer_name TEXT NOT NULL,
    signed_at   TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX waivers_customer ON waivers(customer_id);

CREATE TABLE orders (
    id          BLOB PRIMARY KEY,
    site_id     BLOB NOT NULL,
    customer_id BLOB,
    total_cents INTEGER NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX orders_site_created ON orders(site_id, created_at);

CREATE TABLE checkins (
    id          BLOB PRIMARY KEY,
    site_id     BLOB NOT NULL,
    customer_id BLOB NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX checkins_site_created ON checkins(site_id, created_at);

-- The change feed edges pull. One writer at a time in SQLite, so seq order is commit order.
CREATE TABLE change_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    entity     TEXT NOT NULL,
    entity_id  BLOB NOT NULL,
    op         TEXT NOT NULL,
    site_id    BLOB,                        -- NULL: chain-wide
    data       TEXT NOT NULL,
    changed_at TEXT NOT NULL
);
CREATE INDEX change_log_site_seq ON change_log(site_id, seq);

-- Per-site sync bookkeeping: the highest contiguous pushed seq and the last pull.
CREATE TABLE site_sync (
    site_id      BLOB PRIMARY KEY REFERENCES sites(id),
    acked_seq    INTEGER NOT NULL DEFAULT 0,
    pull_cursor  INTEGER NOT NULL DEFAULT 0,
    last_push_at TEXT,
    last_pull_at TEXT
);

-- Every pushed op central has taken, so a replay is recognised by (site, seq) or op_id.
CREATE TABLE applied_ops (
    site_id     BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    op_id       BLOB NOT NULL UNIQUE,
    rejected    TEXT,                        -- reason, when refused for good
    applied_at  TEXT NOT NULL,
    PRIMARY KEY (site_id, seq)
);

CREATE TABLE audit_log (
    id         BLOB PRIMARY KEY,
    at         TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id   BLOB,
    actor_name TEXT NOT NULL,
    ip         TEXT,
    request_id TEXT,
    action     TEXT NOT NULL,
    target     TEXT,
    site_id    BLOB
);
CREATE INDEX audit_log_at ON audit_log(at);

CREATE TABLE idempotency_keys (
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    status        INTEGER,                   -- NULL while in progress
    content_type  TEXT,
    body          BLOB,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
