-- Notifications (docs/design.md §14). An event is written in the transaction that records
-- the outcome it tells of, with one delivery per receiver that wants it; the sender works
-- through the deliveries, so nothing is lost across a restart.
CREATE TABLE outbox (
    -- "{project}:{generation}:{kind}" (":{n}" after it when that one is taken): the
    -- webhook-id receivers deduplicate on, the same on every retry.
    id           TEXT    PRIMARY KEY,
    project      TEXT    NOT NULL,
    generation   INTEGER NOT NULL,
    -- deployed | rolled-back | degraded | blocked | recovered
    kind         TEXT    NOT NULL,
    -- "The same failure": project, kind, the reason without its numbers, failing services.
    fingerprint  TEXT    NOT NULL,
    -- What receivers are sent (notify::format::Payload), secrets redacted.
    payload_json TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    -- A failure is the project's open incident until this is set (recovered, replaced by
    -- another failure, or the project taken down); other events are closed when written.
    closed_ms    INTEGER
);
CREATE INDEX outbox_open ON outbox (project, closed_ms, created_ms);

-- Where events go, by key: the SHA-256 of the URL. The URL and secret are secrets, kept
-- here as the generations' specs keep theirs (the file is mode 600).
CREATE TABLE receivers (
    key        TEXT    PRIMARY KEY,
    url        TEXT    NOT NULL,
    secret     TEXT,
    -- standard | slack
    format     TEXT    NOT NULL,
    -- How often an open incident is reminded of.
    repeat_ms  INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);

-- One event (reminder 0) or one reminder of it (1, 2, ...) to one receiver.
CREATE TABLE deliveries (
    event           TEXT    NOT NULL REFERENCES outbox (id),
    receiver        TEXT    NOT NULL REFERENCES receivers (key),
    reminder        INTEGER NOT NULL DEFAULT 0,
    created_ms      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    -- pending | delivered | failed (given up after 24 h)
    state           TEXT    NOT NULL DEFAULT 'pending',
    -- The receiver's last answer ("200 OK", "503 ...", "connection refused"), one line.
    last_answer     TEXT,
    delivered_ms    INTEGER,
    PRIMARY KEY (event, receiver, reminder)
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_ms);
