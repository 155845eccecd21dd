-- Kiosk lookups ask for one phone (or email) ordered by (created_at, id): an index in that
-- order answers them without a temporary sort b-tree per lookup. It replaces the single-column
-- indexes, which it covers.
CREATE INDEX customers_phone_created ON customers(phone, created_at, id);
CREATE INDEX customers_email_created ON customers(email, created_at, id);
DROP INDEX customers_phone;
DROP INDEX customers_email;
