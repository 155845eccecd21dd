-- Indexes that hand their queries rows already in the order asked for, ties included, so no
-- query sorts a temporary B-tree first: the gate's search for the oldest unused pass (on every
-- check-in, on the writer), the running sessions by end (the session watcher and the sessions
-- list, both paged by (ends_at, id)), and the day's orders (paged by (created_at, id)).
DROP INDEX passes_left_customer;
CREATE INDEX passes_left_customer ON passes_left(customer_id, product_id, created_at, order_id)
    WHERE remaining > 0;

DROP INDEX checkins_ends;
CREATE INDEX checkins_ends ON checkins(ends_at, id);

DROP INDEX orders_created;
CREATE INDEX orders_created ON orders(created_at, id);
