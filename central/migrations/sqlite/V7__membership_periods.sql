-- How long a membership's visits last once sold (day, week, month); NULL: they never lapse.
ALTER TABLE products ADD COLUMN grant_period TEXT;
