-- What the venue sells and runs: orders and refunds, the balance ledger, check-ins (jump
-- sessions), games and scores. Every row is written once, where it happened, and never edited;
-- `data` holds the record as it travels (shared::wire::venue), the other columns are what the
-- venue's reads filter and sum on.

-- Games were kept as unknown rows before this version; they move to their own table.
CREATE TABLE games (
    id   BLOB PRIMARY KEY,
    data TEXT NOT NULL
);
INSERT INTO games (id, data) SELECT entity_id, data FROM other_rows WHERE entity = 'game';
DELETE FROM other_rows WHERE entity = 'game';

CREATE TABLE orders (
    id          BLOB PRIMARY KEY,
    customer_id BLOB,
    total_cents INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX orders_created ON orders(created_at);
CREATE INDEX orders_customer ON orders(customer_id);

-- One row per order line: passes a customer holds, and sales by product.
CREATE TABLE order_lines (
    order_id    BLOB NOT NULL,
    line_no     INTEGER NOT NULL,
    product_id  BLOB NOT NULL,
    customer_id BLOB,
    kind        TEXT NOT NULL,
    quantity    INTEGER NOT NULL,
    total_cents INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX order_lines_customer_product ON order_lines(customer_id, product_id);
CREATE INDEX order_lines_created ON order_lines(created_at);

CREATE TABLE refunds (
    id          BLOB PRIMARY KEY,
    order_id    BLOB NOT NULL,
    total_cents INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX refunds_order ON refunds(order_id);
CREATE INDEX refunds_created ON refunds(created_at);

-- Chain-wide: every venue's entries arrive through the pull; a balance is the sum of its
-- account's deltas.
CREATE TABLE ledger (
    id          BLOB PRIMARY KEY,
    customer_id BLOB NOT NULL,
    account     TEXT NOT NULL,
    delta       INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX ledger_customer_account ON ledger(customer_id, account);

CREATE TABLE checkins (
    id          BLOB PRIMARY KEY,
    customer_id BLOB NOT NULL,
    wristband   TEXT NOT NULL,
    product_id  BLOB NOT NULL,
    order_id    BLOB,
    starts_at   TEXT NOT NULL,
    ends_at     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX checkins_ends ON checkins(ends_at);
CREATE INDEX checkins_customer ON checkins(customer_id, ends_at);
CREATE INDEX checkins_wristband ON checkins(wristband, ends_at);
CREATE INDEX checkins_order ON checkins(order_id);
CREATE INDEX checkins_created ON checkins(created_at);

CREATE TABLE scores (
    id          BLOB PRIMARY KEY,
    game_id     BLOB NOT NULL,
    customer_id BLOB NOT NULL,
    score       INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX scores_game_score ON scores(game_id, score);
CREATE INDEX scores_game_created ON scores(game_id, created_at);
