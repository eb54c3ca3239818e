-- One row per applied desired state (DESIGN.md "generation").
CREATE TABLE generations (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    project       TEXT    NOT NULL,
    started_ms    INTEGER NOT NULL,
    finished_ms   INTEGER,
    source_hash   TEXT    NOT NULL,
    -- Where the desired state came from: the files read.
    source        TEXT    NOT NULL,
    -- The resolved desired state (JSON), values unredacted: a revert needs them.
    spec_json     TEXT    NOT NULL,
    -- Image reference -> image ID the generation ran (pinned).
    images_json   TEXT    NOT NULL,
    -- progressing | healthy | failed | rolled-back
    outcome       TEXT    NOT NULL,
    reason        TEXT,
    -- Per service: created/started/healthy times (JSON).
    timings_json  TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX generations_project ON generations (project, id);
