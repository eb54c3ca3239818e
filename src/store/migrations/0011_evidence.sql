-- What a failed or dead container left behind, kept on its generation before the
-- container is removed or recreated: its last log lines, how its last run ended, its
-- HEALTHCHECK's last runs and berth's own last probe result. One row per container
-- captured; pruned by age and by generation count, never with the generation itself.
CREATE TABLE evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    generation INTEGER NOT NULL,
    project TEXT NOT NULL,
    service TEXT NOT NULL,
    container TEXT NOT NULL,
    why TEXT NOT NULL,
    captured_ms INTEGER NOT NULL,
    -- The rest as one JSON document (state, health runs, probe, lines).
    body_json TEXT NOT NULL
);
CREATE INDEX evidence_by_generation ON evidence (generation);
CREATE INDEX evidence_by_project ON evidence (project, generation);
