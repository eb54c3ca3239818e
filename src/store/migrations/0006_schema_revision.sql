-- The revision a generation's migration job reached (README "Migrations: a migration
-- job"), as the job's tool records it (Alembic's `alembic_version`; `base` before the
-- first). A revert runs the job's downgrade to its target's revision. NULL: no job, or
-- its step never reached the database.
ALTER TABLE generations ADD COLUMN schema_revision TEXT;
