-- The passes an order left its customer, stored in the order the gate searches them: by
-- customer, product, then oldest first. A check-in spending a pass changes only `remaining`,
-- which no index holds, so it rewrites one page of this table. Before, the table was kept in
-- order of insertion and the gate searched a partial index (`WHERE remaining > 0`) that every
-- spent pass had to update too: two pages in random places per check-in, each a frame of the
-- write-ahead log to write and make durable. Passes used up stay as rows with `remaining` 0,
-- beside the customer's others, and the gate steps over them.
CREATE TABLE passes_left_v11 (
    customer_id BLOB NOT NULL,
    product_id  BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    order_id    BLOB NOT NULL,
    remaining   INTEGER NOT NULL,
    PRIMARY KEY (customer_id, product_id, created_at, order_id)
) WITHOUT ROWID;

INSERT INTO passes_left_v11 (customer_id, product_id, created_at, order_id, remaining)
SELECT customer_id, product_id, created_at, order_id, remaining FROM passes_left;

DROP TABLE passes_left;
ALTER TABLE passes_left_v11 RENAME TO passes_left;

-- A sale adds to its order's row (the upsert's target); a check-in and a refund find it.
CREATE UNIQUE INDEX passes_left_order ON passes_left(order_id, product_id);
