-- A balance is the sum of its account's deltas, read on every kiosk lookup and every spend: an
-- index that carries the delta answers the sum from the index alone, one contiguous range per
-- customer and account, instead of a table row per entry. It replaces the narrower index,
-- which it covers.
CREATE INDEX ledger_balance ON ledger(customer_id, account, delta);
DROP INDEX ledger_customer_account;
