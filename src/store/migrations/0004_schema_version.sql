-- The database schema version (the newest applied migration) a generation reached, once
-- its converge's migrations step reached the database (DESIGN.md semantics 5 and 6): the
-- auto-revert and `berth rollback` undo migrations down to the target generation's value.
-- NULL: the generation has no [migrations] block, or its step never reached the database.
ALTER TABLE generations ADD COLUMN schema_version INTEGER;
