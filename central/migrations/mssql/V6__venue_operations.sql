-- Mirrors migrations/sqlite/V6__venue_operations.sql; same rules as V1 (one batch, no batch
-- separators, no statement returning rows, every constraint named).
--
-- Venue operations pushed by edges: orders with their lines, refunds, the balance ledger,
-- check-ins and game scores. Each is written once and never edited; a row keeps the record as
-- pushed (`data`, JSON) beside the columns reports and lookups need. The V1 `orders` and
-- `checkins` tables were placeholders nothing ever wrote, so they are replaced.
DROP TABLE orders;
DROP TABLE checkins;

CREATE TABLE orders (
    id          UNIQUEIDENTIFIER NOT NULL,
    site_id     UNIQUEIDENTIFIER NOT NULL,
    customer_id UNIQUEIDENTIFIER NULL,
    total_cents BIGINT           NOT NULL,
    created_at  DATETIME2(3)     NOT NULL,
    data        NVARCHAR(MAX)    NOT NULL,
    CONSTRAINT pk_orders PRIMARY KEY (id)
);
CREATE INDEX orders_site_created ON orders (site_id, created_at);

-- An order's lines, with the order's site and time copied so sales by product read one table.
-- SKUs and names are checked to at most 40 and 100 characters before a line gets here.
CREATE TABLE order_lines (
    order_id    UNIQUEIDENTIFIER NOT NULL,
    line_no     INT              NOT NULL,
    site_id     UNIQUEIDENTIFIER NOT NULL,
    product_id  UNIQUEIDENTIFIER NOT NULL,
    sku         NVARCHAR(400)    NOT NULL,
    name        NVARCHAR(400)    NOT NULL,
    quantity    INT              NOT NULL,
    total_cents BIGINT           NOT NULL,
    created_at  DATETIME2(3)     NOT NULL,
    CONSTRAINT pk_order_lines PRIMARY KEY (order_id, line_no),
    CONSTRAINT fk_order_lines_order FOREIGN KEY (order_id) REFERENCES orders (id)
);
CREATE INDEX order_lines_site_created ON order_lines (site_id, created_at);

CREATE TABLE refunds (
    id          UNIQUEIDENTIFIER NOT NULL,
    order_id    UNIQUEIDENTIFIER NOT NULL,
    site_id     UNIQUEIDENTIFIER NOT NULL,
    total_cents BIGINT           NOT NULL,
    created_at  DATETIME2(3)     NOT NULL,
    data        NVARCHAR(MAX)    NOT NULL,
    CONSTRAINT pk_refunds PRIMARY KEY (id)
);
CREATE INDEX refunds_order ON refunds (order_id);
CREATE INDEX refunds_site_created ON refunds (site_id, created_at);

-- A balance is the sum of its entries' deltas: never a stored number.
CREATE TABLE ledger_entries (
    id          UNIQUEIDENTIFIER NOT NULL,
    customer_id UNIQUEIDENTIFIER NOT NULL,
    account     NVARCHAR(32)     NOT NULL,
    delta       BIGINT           NOT NULL,
    site_id     UNIQUEIDENTIFIER NOT NULL,
    created_at  DATETIME2(3)     NOT NULL,
    data        NVARCHAR(MAX)    NOT NULL,
    CONSTRAINT pk_ledger_entries PRIMARY KEY (id)
);
CREATE INDEX ledger_entries_customer ON ledger_entries (customer_id, account);

-- Wristbands are checked to at most 64 bytes upstream.
CREATE TABLE checkins (
    id          UNIQUEIDENTIFIER NOT NULL,
    site_id     UNIQUEIDENTIFIER NOT NULL,
    customer_id UNIQUEIDENTIFIER NOT NULL,
    product_id  UNIQUEIDENTIFIER NOT NULL,
    wristband   NVARCHAR(128)    NOT NULL,
    starts_at   DATETIME2(3)     NOT NULL,
    ends_at     DATETIME2(3)     NOT NULL,
    created_at  DATETIME2(3)     NOT NULL,
    data        NVARCHAR(MAX)    NOT NULL,
    CONSTRAINT pk_checkins PRIMARY KEY (id)
);
CREATE INDEX checkins_site_created ON checkins (site_id, created_at);
CREATE INDEX checkins_customer ON checkins (customer_id);

CREATE TABLE scores (
    id          UNIQUEIDENTIFIER NOT NULL,
    site_id     UNIQUEIDENTIFIER NOT NULL,
    game_id     UNIQUEIDENTIFIER NOT NULL,
    customer_id UNIQUEIDENTIFIER NOT NULL,
    score       BIGINT           NOT NULL,
    created_at  DATETIME2(3)     NOT NULL,
    data        NVARCHAR(MAX)    NOT NULL,
    CONSTRAINT pk_scores PRIMARY KEY (id)
);
CREATE INDEX scores_game_created ON scores (game_id, created_at);

-- HQ looks customers up by email and by name, ignoring case. The collation is spelled out (as
-- for usernames) so a database created with a case-sensitive default behaves the same
-- (SQLite: COLLATE NOCASE and LIKE).
ALTER TABLE customers ALTER COLUMN email NVARCHAR(254) COLLATE SQL_Latin1_General_CP1_CI_AS NULL;
ALTER TABLE customers ALTER COLUMN first_name NVARCHAR(200) COLLATE SQL_Latin1_General_CP1_CI_AS NOT NULL;
ALTER TABLE customers ALTER COLUMN last_name NVARCHAR(200) COLLATE SQL_Latin1_General_CP1_CI_AS NOT NULL;
CREATE INDEX customers_email ON customers (email);
