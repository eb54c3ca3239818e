-- Poison is keyed on what a desired state resolves to (after env files, environment,
-- profiles, excludes and build contexts), not on the bytes of its files.
ALTER TABLE generations ADD COLUMN resolved_hash TEXT NOT NULL DEFAULT '';
-- Generations recorded before this column existed are identified by their files.
UPDATE generations SET resolved_hash = source_hash WHERE resolved_hash = '';
CREATE INDEX generations_resolved ON generations (project, resolved_hash, id);

-- What happened to a generation after it began: repairs of drift, interruptions and
-- resumptions. A repair is counted on the generation it repairs, not a new one.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    generation  INTEGER NOT NULL REFERENCES generations (id),
    at_ms       INTEGER NOT NULL,
    -- repair | repair-failed | interrupted | resumed
    kind        TEXT    NOT NULL,
    service     TEXT,
    message     TEXT    NOT NULL
);
CREATE INDEX events_generation ON events (generation, id);

-- What made a generation: an apply of a desired state, a manual rollback, or `down`.
-- Only applies decide poison; a rollback or down is resumed as what it is.
ALTER TABLE generations ADD COLUMN kind TEXT NOT NULL DEFAULT 'apply';
UPDATE generations SET kind = 'rollback' WHERE source LIKE 'rollback to generation %';
