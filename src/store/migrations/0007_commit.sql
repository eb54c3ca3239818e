-- The git commit a generation came from (`berth run --git`, README "GitOps"): its id and
-- subject. A revert or rollback records its target's. NULL: read from a file.
ALTER TABLE generations ADD COLUMN commit_id TEXT;
ALTER TABLE generations ADD COLUMN commit_subject TEXT;
