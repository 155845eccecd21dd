-- Mirrors migrations/sqlite/V7__membership_periods.sql. How long a membership's visits last
-- once sold (day, week, month); NULL: they never lapse.
ALTER TABLE products ADD grant_period NVARCHAR(16) NULL;
