-- What one unit of a product adds to the buyer's balances (credit packs, memberships).
ALTER TABLE products ADD COLUMN grant_account TEXT;
ALTER TABLE products ADD COLUMN grant_amount INTEGER;
