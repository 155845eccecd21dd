-- The passes each order left its customer, per pass product: the gate reads one small row
-- instead of the customer's whole order history. Kept in the same transaction as the sale, the
-- check-in that uses a pass and the refund that voids an order (see replica::venue). An order
-- fully refunded (and not free) leaves none.
CREATE TABLE passes_left (
    order_id    BLOB NOT NULL,
    product_id  BLOB NOT NULL,
    customer_id BLOB NOT NULL,
    remaining   INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
-- Only orders with a pass left are ever looked for.
CREATE INDEX passes_left_customer ON passes_left(customer_id, product_id, created_at)
    WHERE remaining > 0;

INSERT INTO passes_left (order_id, product_id, customer_id, remaining, created_at)
SELECT l.order_id, l.product_id, l.customer_id,
       CASE WHEN o.total_cents > 0
                 AND o.total_cents <= (SELECT COALESCE(SUM(r.total_cents), 0) FROM refunds r WHERE r.order_id = o.id)
            THEN 0
            ELSE MAX(0, SUM(l.quantity)
                 - (SELECT COUNT(*) FROM checkins c WHERE c.order_id = l.order_id AND c.product_id = l.product_id))
       END,
       MIN(l.created_at)
  FROM order_lines l JOIN orders o ON o.id = l.order_id
 WHERE l.kind = 'pass' AND l.customer_id IS NOT NULL
 GROUP BY l.order_id, l.product_id;
