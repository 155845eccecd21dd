-- Nothing at the edge reads these any more: order lines are read from the order's own record
-- (receipts, sales by product) and the passes an order left are counted in `passes_left` (V6).
-- Each was written on every sale or check-in, in pages of its own.
DROP INDEX order_lines_customer_product;
DROP INDEX order_lines_created;
DROP TABLE order_lines;
DROP INDEX orders_customer;
DROP INDEX checkins_order;
