-- Whether a generation's migration job upgrade ran to its end and exited 0: a later
-- generation with the very same job and pinned image, finding the database at the
-- revision this one recorded, does not run it again. 0: no job, or its upgrade did not
-- run or did not succeed.
ALTER TABLE generations ADD COLUMN job_upgraded INTEGER NOT NULL DEFAULT 0;
-- Generations recorded before this column kept that fact only in the text of their
-- `migration-job` events: an upgrade that exited 0 is one whose text starts with
-- "exit 0 `<the upgrade command, its words joined by spaces>`". (A downgrade's run is
-- kept as such an event too, under its own command.)
UPDATE generations SET job_upgraded = 1
WHERE json_extract(spec_json, '$.migrations.job.upgrade') IS NOT NULL
  AND EXISTS (
    SELECT 1 FROM events e
    WHERE e.generation = generations.id
      AND e.kind = 'migration-job'
      AND instr(
            e.message,
            'exit 0 `' || (
                SELECT group_concat(value, ' ' ORDER BY key)
                FROM json_each(generations.spec_json, '$.migrations.job.upgrade')
            ) || '`'
          ) = 1
  );
