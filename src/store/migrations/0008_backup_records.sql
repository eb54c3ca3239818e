-- A backup file is data, never code (docs/design.md §12).
--
-- The SHA-256 of the backup a generation's migrations step took, recorded as berth wrote
-- it: the revert restores that backup only while the file still has it. NULL: no backup,
-- or one an older berth took (the revert does not restore it by itself).
ALTER TABLE generations ADD COLUMN backup_sha256 TEXT;

-- Every file berth wrote into a backup directory (dumps, by `berth backup` or before a
-- migration, and the snapshot archives beside them), by its path as written. Retention
-- deletes only these, never a file that merely matches the naming.
CREATE TABLE backups (
    path TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    written_ms INTEGER NOT NULL
);
CREATE INDEX backups_project ON backups (project, written_ms);
