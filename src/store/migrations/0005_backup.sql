-- The database backup (its path) a generation's migrations step took before applying
-- pending migrations (README "Migrations"): when a down migration is missing or fails,
-- the revert restores it. NULL: no backup was taken (nothing pending, `backup = false`,
-- no [migrations] block).
ALTER TABLE generations ADD COLUMN backup TEXT;
