-- Mirrors migrations/sqlite/V4__product_grants.sql. What one unit of a product adds to the
-- buyer's balances (credit packs, memberships).
ALTER TABLE products ADD grant_account NVARCHAR(20) NULL, grant_amount BIGINT NULL;
