-- Central schema, T-SQL. Mirrors migrations/sqlite/V1__initial.sql table for table, column for
-- column. It must run unchanged on SQL Server 2019+, Azure SQL and Babelfish for PostgreSQL, so it
-- keeps to plain CREATE TABLE / CREATE INDEX. refinery sends the whole file as one batch inside
-- one transaction, so there are no batch separators and no statement that must start a batch;
-- and no statement may return rows (refinery drops a result stream unread, which would hide an
-- error raised after it). Never edit an applied migration: refinery checksums it. Add V2__...
--
-- Types: ids UNIQUEIDENTIFIER; text NVARCHAR (NVARCHAR(MAX) for JSON and free text that is never
-- indexed); times DATETIME2(3), always UTC; flags BIT; money and sequence numbers BIGINT.
-- Every constraint is named: the store maps a duplicate-key error to a message by its name.
-- Text limits are in UTF-16 code units, at least twice the character limits the API checks
-- (a character outside the BMP takes two units); a pushed row that fits its checks always fits.

CREATE TABLE sites (
    id               UNIQUEIDENTIFIER NOT NULL,
    name             NVARCHAR(400)    NOT NULL,
    timezone         NVARCHAR(64)     NOT NULL,
    allowed_networks NVARCHAR(MAX)    NOT NULL,  -- JSON array of CIDRs
    created_at       DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_sites PRIMARY KEY (id)
);

CREATE TABLE enrollment_tokens (
    id          UNIQUEIDENTIFIER NOT NULL,
    site_id     UNIQUEIDENTIFIER NOT NULL,
    token_hash  NVARCHAR(128)    NOT NULL,
    created_at  DATETIME2(3)     NOT NULL,
    expires_at  DATETIME2(3)     NOT NULL,
    used_at     DATETIME2(3)     NULL,
    device_id   UNIQUEIDENTIFIER NULL,
    CONSTRAINT pk_enrollment_tokens PRIMARY KEY (id),
    CONSTRAINT fk_enrollment_tokens_site FOREIGN KEY (site_id) REFERENCES sites (id),
    CONSTRAINT uq_enrollment_tokens_token_hash UNIQUE (token_hash)
);

CREATE TABLE devices (
    id               UNIQUEIDENTIFIER NOT NULL,
    site_id          UNIQUEIDENTIFIER NOT NULL,
    name             NVARCHAR(400)    NOT NULL,
    kind             NVARCHAR(32)     NOT NULL,
    allowed_networks NVARCHAR(MAX)    NOT NULL,
    key_hash         NVARCHAR(128)    NOT NULL,
    created_at       DATETIME2(3)     NOT NULL,
    revoked_at       DATETIME2(3)     NULL,
    CONSTRAINT pk_devices PRIMARY KEY (id),
    CONSTRAINT fk_devices_site FOREIGN KEY (site_id) REFERENCES sites (id),
    CONSTRAINT uq_devices_key_hash UNIQUE (key_hash)
);
CREATE INDEX devices_site ON devices (site_id);

-- Usernames are unique and looked up case-insensitively. The collation is spelled out rather
-- than inherited, so a database created with a case-sensitive default still behaves the same
-- (SQLite: COLLATE NOCASE). SQL_Latin1_General_CP1_CI_AS is also Babelfish's default collation.
CREATE TABLE users (
    id            UNIQUEIDENTIFIER NOT NULL,
    username      NVARCHAR(400)    COLLATE SQL_Latin1_General_CP1_CI_AS NOT NULL,
    password_hash NVARCHAR(400)    NOT NULL,
    role          NVARCHAR(32)     NOT NULL,
    created_at    DATETIME2(3)     NOT NULL,
    disabled_at   DATETIME2(3)     NULL,
    CONSTRAINT pk_users PRIMARY KEY (id),
    CONSTRAINT uq_users_username UNIQUE (username)
);

CREATE TABLE user_sites (
    user_id UNIQUEIDENTIFIER NOT NULL,
    site_id UNIQUEIDENTIFIER NOT NULL,
    CONSTRAINT pk_user_sites PRIMARY KEY (user_id, site_id),
    CONSTRAINT fk_user_sites_user FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT fk_user_sites_site FOREIGN KEY (site_id) REFERENCES sites (id)
);

CREATE TABLE products (
    id               UNIQUEIDENTIFIER NOT NULL,
    sku              NVARCHAR(400)    NOT NULL,
    name             NVARCHAR(400)    NOT NULL,
    kind             NVARCHAR(32)     NOT NULL,
    price_cents      BIGINT           NOT NULL,
    duration_minutes INT              NULL,
    active           BIT              NOT NULL,
    created_at       DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_products PRIMARY KEY (id),
    CONSTRAINT uq_products_sku UNIQUE (sku)
);

CREATE TABLE games (
    id          UNIQUEIDENTIFIER NOT NULL,
    name        NVARCHAR(400)    NOT NULL,
    score_order NVARCHAR(32)     NOT NULL,
    created_at  DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_games PRIMARY KEY (id),
    CONSTRAINT uq_games_name UNIQUE (name)
);

CREATE TABLE plugs (
    id         UNIQUEIDENTIFIER NOT NULL,
    site_id    UNIQUEIDENTIFIER NOT NULL,
    name       NVARCHAR(400)    NOT NULL,
    host       NVARCHAR(512)    NOT NULL,
    port       INT              NOT NULL,
    child_id   NVARCHAR(400)    NULL,
    created_at DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_plugs PRIMARY KEY (id),
    CONSTRAINT fk_plugs_site FOREIGN KEY (site_id) REFERENCES sites (id),
    CONSTRAINT uq_plugs_site_name UNIQUE (site_id, name)
);

CREATE TABLE plug_schedules (
    id         UNIQUEIDENTIFIER NOT NULL,
    plug_id    UNIQUEIDENTIFIER NOT NULL,
    site_id    UNIQUEIDENTIFIER NOT NULL,
    cron       NVARCHAR(400)    NOT NULL,
    state      NVARCHAR(16)     NOT NULL,
    created_at DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_plug_schedules PRIMARY KEY (id),
    CONSTRAINT fk_plug_schedules_plug FOREIGN KEY (plug_id) REFERENCES plugs (id),
    CONSTRAINT fk_plug_schedules_site FOREIGN KEY (site_id) REFERENCES sites (id)
);
CREATE INDEX plug_schedules_plug ON plug_schedules (plug_id);

-- Pushed by edges. Names are checked to at most 100 characters, phone to 32 bytes and email to
-- 254 bytes before a row gets here, so these widths always fit.
CREATE TABLE customers (
    id           UNIQUEIDENTIFIER NOT NULL,
    first_name   NVARCHAR(200)    NOT NULL,
    last_name    NVARCHAR(200)    NOT NULL,
    birth_date   DATE             NOT NULL,
    phone        NVARCHAR(32)     NULL,
    email        NVARCHAR(254)    NULL,
    guardian_id  UNIQUEIDENTIFIER NULL,
    home_site_id UNIQUEIDENTIFIER NOT NULL,
    created_at   DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_customers PRIMARY KEY (id)
);
CREATE INDEX customers_phone ON customers (phone);
CREATE INDEX customers_site_created ON customers (home_site_id, created_at);

-- The signer's name has no length check upstream, hence NVARCHAR(MAX): a pushed op must never
-- fail on width, or it would block the site's queue instead of being applied or rejected.
CREATE TABLE waivers (
    id          UNIQUEIDENTIFIER NOT NULL,
    customer_id UNIQUEIDENTIFIER NOT NULL,
    site_id     UNIQUEIDENTIFIER NOT NULL,
    signer_name NVARCHAR(MAX)    NOT NULL,
    signed_at   DATETIME2(3)     NOT NULL,
    expires_at  DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_waivers PRIMARY KEY (id)
);
CREATE INDEX waivers_customer ON waivers (customer_id);

CREATE TABLE orders (
    id          UNIQUEIDENTIFIER NOT NULL,
    site_id     UNIQUEIDENTIFIER NOT NULL,
    customer_id UNIQUEIDENTIFIER NULL,
    total_cents BIGINT           NOT NULL,
    created_at  DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_orders PRIMARY KEY (id)
);
CREATE INDEX orders_site_created ON orders (site_id, created_at);

CREATE TABLE checkins (
    id          UNIQUEIDENTIFIER NOT NULL,
    site_id     UNIQUEIDENTIFIER NOT NULL,
    customer_id UNIQUEIDENTIFIER NOT NULL,
    created_at  DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_checkins PRIMARY KEY (id)
);
CREATE INDEX checkins_site_created ON checkins (site_id, created_at);

-- The change feed edges pull. IDENTITY values are handed out at INSERT, not at COMMIT, so
-- the store serialises appends with a transaction-scoped application lock taken just before
-- them: no seq is allocated until the previous appender has committed, so seq order is commit
-- order and a puller can never pass over a row that commits late.
CREATE TABLE change_log (
    seq        BIGINT IDENTITY(1, 1) NOT NULL,
    entity     NVARCHAR(32)     NOT NULL,
    entity_id  UNIQUEIDENTIFIER NOT NULL,
    op         NVARCHAR(16)     NOT NULL,
    site_id    UNIQUEIDENTIFIER NULL,         -- NULL: chain-wide
    data       NVARCHAR(MAX)    NOT NULL,     -- the row's JSON
    changed_at DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_change_log PRIMARY KEY (seq)
);
CREATE INDEX change_log_site_seq ON change_log (site_id, seq);

-- Per-site sync bookkeeping: the highest contiguous pushed seq and the last pull.
CREATE TABLE site_sync (
    site_id      UNIQUEIDENTIFIER NOT NULL,
    acked_seq    BIGINT           NOT NULL CONSTRAINT df_site_sync_acked_seq DEFAULT 0,
    pull_cursor  BIGINT           NOT NULL CONSTRAINT df_site_sync_pull_cursor DEFAULT 0,
    last_push_at DATETIME2(3)     NULL,
    last_pull_at DATETIME2(3)     NULL,
    CONSTRAINT pk_site_sync PRIMARY KEY (site_id),
    CONSTRAINT fk_site_sync_site FOREIGN KEY (site_id) REFERENCES sites (id)
);

-- Every pushed op central has taken, so a replay is recognised by (site, seq) or op_id.
CREATE TABLE applied_ops (
    site_id    UNIQUEIDENTIFIER NOT NULL,
    seq        BIGINT           NOT NULL,
    op_id      UNIQUEIDENTIFIER NOT NULL,
    rejected   NVARCHAR(MAX)    NULL,         -- reason, when refused for good
    applied_at DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_applied_ops PRIMARY KEY (site_id, seq),
    CONSTRAINT uq_applied_ops_op_id UNIQUE (op_id)
);

-- AT is a keyword of AT TIME ZONE; [at] is bracketed everywhere so no parser has to guess.
CREATE TABLE audit_log (
    id         UNIQUEIDENTIFIER NOT NULL,
    [at]       DATETIME2(3)     NOT NULL,
    actor_kind NVARCHAR(32)     NOT NULL,
    actor_id   UNIQUEIDENTIFIER NULL,
    actor_name NVARCHAR(400)    NOT NULL,
    ip         NVARCHAR(64)     NULL,
    request_id NVARCHAR(MAX)    NULL,         -- may come from a client header: any length
    action     NVARCHAR(64)     NOT NULL,
    target     NVARCHAR(400)    NULL,
    site_id    UNIQUEIDENTIFIER NULL,
    CONSTRAINT pk_audit_log PRIMARY KEY (id)
);
CREATE INDEX audit_log_at ON audit_log ([at]);

-- KEY is a reserved word in T-SQL, hence [key] here and in every query.
CREATE TABLE idempotency_keys (
    scope        NVARCHAR(128)  NOT NULL,
    [key]        NVARCHAR(255)  NOT NULL,
    fingerprint  NVARCHAR(128)  NOT NULL,
    status       INT            NULL,         -- NULL while in progress
    content_type NVARCHAR(MAX)  NULL,
    body         VARBINARY(MAX) NULL,
    created_at   DATETIME2(3)   NOT NULL,
    CONSTRAINT pk_idempotency_keys PRIMARY KEY (scope, [key])
);
