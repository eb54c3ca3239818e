//! The notification outbox (docs/design.md §14): events written in the transaction that
//! records what they tell of, and their deliveries, which the sender
//! ([`crate::notify::send`]) works through.
//!
//! [`record`] is called inside the store's own transactions (a generation's outcome, a
//! repair); [`Store::record_standing`] is the daemon's, for what only it knows (a blocked
//! desired state, a project converged again). What to write is [`notify::decide`]'s.

use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

use super::{Evidence, Outcome, Store, StoreError, now_ms};
use crate::notify::format::{EvidenceSummary, Payload};
use crate::notify::{self, Decision, EventKind, Format, Happened, Incident, Receiver};

/// What an outcome is to notifications.
pub(super) fn happened(outcome: Outcome) -> Happened {
    match outcome {
        Outcome::Healthy => Happened::Healthy,
        Outcome::RolledBack => Happened::RolledBack,
        Outcome::Failed => Happened::Failed,
        Outcome::Down => Happened::Down,
        Outcome::Progressing | Outcome::Reverting | Outcome::Interrupted | Outcome::Superseded => {
            Happened::Unfinished
        }
    }
}

/// One delivery the sender is to make: the event, to whom, and how.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: String,
    /// The receiver's key.
    pub receiver: String,
    /// 0: the event; n: its nth reminder.
    pub reminder: i64,
    pub attempts: i64,
    /// When this delivery was made (a retry gives up 24 h after it).
    pub created_ms: i64,
    /// When the event happened (a reminder says "since").
    pub event_created_ms: i64,
    pub payload: Payload,
    pub url: String,
    pub secret: Option<String>,
    pub format: Format,
}

impl Delivery {
    /// Its `webhook-id`: the event's id, the same on every retry; a reminder's own.
    pub fn webhook_id(&self) -> String {
        match self.reminder {
            0 => self.event.clone(),
            n => format!("{}:reminder:{n}", self.event),
        }
    }
}

/// Record what `happened` to `generation` (for `reason`, when it is not the generation's
/// own), inside the caller's transaction. The event's id when one was written.
pub(super) async fn record(
    conn: &mut SqliteConnection,
    generation: i64,
    happened: Happened,
    reason: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT project, spec_json, outcome, reason, timings_json, reverted_to, commit_id, commit_subject FROM generations WHERE id = ?",
    )
    .bind(generation)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let project: String = row.get(0);
    // A spec this berth cannot read has no receivers to tell: the outcome is recorded
    // all the same.
    let desired: Option<crate::spec::DesiredState> =
        serde_json::from_str(row.get::<&str, _>(1)).ok();
    let reason = reason.map(str::to_string).or(row.get(3));
    let failing = failing_services(row.get::<&str, _>(4));
    let open = open_incident(conn, &project).await?;
    let decision = notify::decide(
        &happened,
        &project,
        generation,
        reason.as_deref().unwrap_or_default(),
        &failing,
        open.as_ref(),
    );
    let now = now_ms();
    let (kind, fingerprint) = match decision {
        Decision::Nothing => return Ok(None),
        Decision::Close => {
            close_incidents(conn, &project, now).await?;
            return Ok(None);
        }
        Decision::Event { kind, fingerprint } => (kind, fingerprint),
    };
    if kind.is_failure() || kind == EventKind::Recovered {
        close_incidents(conn, &project, now).await?;
    }
    let id = free_id(conn, &project, generation, kind).await?;
    let redactor = desired
        .as_ref()
        .map(|d| d.redactor())
        .unwrap_or_default()
        .union(&crate::redact::registered());
    let payload = Payload {
        id: id.clone(),
        event: kind.as_str().into(),
        project: project.clone(),
        generation,
        outcome: Some(row.get(2)),
        reason: match kind {
            EventKind::Deployed | EventKind::Recovered => None,
            _ => reason.map(|r| redactor.text(&crate::text::one_line(&r, 4000))),
        },
        services: desired
            .as_ref()
            .map(|d| d.services.keys().cloned().collect())
            .unwrap_or_default(),
        failing_services: if kind.is_failure() { failing } else { vec![] },
        reverted_to: match kind {
            EventKind::RolledBack => row.get(5),
            _ => None,
        },
        commit: row.get(6),
        commit_subject: row
            .get::<Option<String>, _>(7)
            .map(|s| redactor.text(&crate::text::one_line(&s, 200))),
        host: notify::host(),
        berth_version: env!("CARGO_PKG_VERSION").into(),
        at_ms: now,
        evidence: match kind {
            EventKind::RolledBack | EventKind::Degraded => {
                evidence_summary(conn, generation, &redactor).await?
            }
            _ => vec![],
        },
        // Added by the sender: the diff is worked out above the store.
        changes: vec![],
    };
    sqlx::query(
        "INSERT INTO outbox (id, project, generation, kind, fingerprint, payload_json, created_ms, closed_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&project)
    .bind(generation)
    .bind(kind.as_str())
    .bind(&fingerprint)
    .bind(serde_json::to_string(&payload).expect("a payload serializes"))
    .bind(now)
    .bind((!kind.is_failure()).then_some(now))
    .execute(&mut *conn)
    .await?;
    let receivers = desired.map(|d| d.notify).unwrap_or_default();
    for r in receivers.iter().filter(|r| r.wants(kind)) {
        upsert_receiver(conn, r, now).await?;
        sqlx::query(
            "INSERT OR IGNORE INTO deliveries (event, receiver, reminder, created_ms, next_attempt_ms) VALUES (?, ?, 0, ?, ?)",
        )
        .bind(&id)
        .bind(r.key())
        .bind(now)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Some(id))
}

/// How many containers' evidence an event carries.
const EVIDENCE_CONTAINERS: usize = 20;
/// How long an evidence's last line may be in an event.
const LAST_LINE_CHARS: usize = 500;

/// The evidence kept on `generation`, in short: the newest of each container, in the
/// order captured. Evidence that cannot be read is left out, never an error: the
/// outcome is recorded all the same.
async fn evidence_summary(
    conn: &mut SqliteConnection,
    generation: i64,
    redactor: &crate::redact::Redactor,
) -> Result<Vec<EvidenceSummary>, StoreError> {
    let kept = match super::evidence::evidence_on(conn, generation).await {
        Ok(kept) => kept,
        Err(StoreError::Corrupt { message, .. }) => {
            tracing::warn!(generation, %message, "evidence left out of the notification");
            return Ok(vec![]);
        }
        Err(e) => return Err(e),
    };
    let mut newest: Vec<Evidence> = Vec::new();
    for e in kept {
        newest.retain(|n| n.container != e.container);
        newest.push(e);
    }
    let skip = newest.len().saturating_sub(EVIDENCE_CONTAINERS);
    Ok(newest
        .into_iter()
        .skip(skip)
        .map(|e| EvidenceSummary {
            last_line: e
                .lines
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| redactor.text(&crate::text::one_line(l, LAST_LINE_CHARS))),
            service: e.service,
            container: e.container,
            why: e.why.as_str().into(),
            exit_code: e.exit_code,
            oom_killed: e.oom_killed,
            restart_count: e.restart_count,
        })
        .collect())
}

/// The services whose step failed, from a generation's timings (`failed_ms` set).
fn failing_services(timings_json: &str) -> Vec<String> {
    let timings: serde_json::Value = serde_json::from_str(timings_json).unwrap_or_default();
    let mut failing: Vec<String> = timings
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, t)| t.get("failed_ms").is_some_and(|v| !v.is_null()))
        .map(|(name, _)| name.clone())
        .collect();
    failing.sort();
    failing
}

async fn open_incident(
    conn: &mut SqliteConnection,
    project: &str,
) -> Result<Option<Incident>, StoreError> {
    let row = sqlx::query(
        "SELECT id, generation, kind, fingerprint FROM outbox WHERE project = ? AND closed_ms IS NULL ORDER BY created_ms DESC, rowid DESC LIMIT 1",
    )
    .bind(project)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.and_then(|r| {
        Some(Incident {
            id: r.get(0),
            generation: r.get(1),
            kind: EventKind::parse(r.get(2))?,
            fingerprint: r.get(3),
        })
    }))
}

async fn close_incidents(
    conn: &mut SqliteConnection,
    project: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox SET closed_ms = ? WHERE project = ? AND closed_ms IS NULL")
        .bind(now)
        .bind(project)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// `{project}:{generation}:{kind}`, or with `:2`, `:3`... after it when a generation has
/// had that event before (failed, repaired, failed again).
async fn free_id(
    conn: &mut SqliteConnection,
    project: &str,
    generation: i64,
    kind: EventKind,
) -> Result<String, StoreError> {
    let base = format!("{project}:{generation}:{kind}");
    let mut n = 1;
    loop {
        let id = match n {
            1 => base.clone(),
            n => format!("{base}:{n}"),
        };
        let taken = sqlx::query("SELECT 1 FROM outbox WHERE id = ?")
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
        if !taken {
            return Ok(id);
        }
        n += 1;
    }
}

async fn upsert_receiver(
    conn: &mut SqliteConnection,
    r: &Receiver,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO receivers (key, url, secret, format, repeat_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (key) DO UPDATE SET url = excluded.url, secret = excluded.secret, format = excluded.format, repeat_ms = excluded.repeat_ms, updated_ms = excluded.updated_ms",
    )
    .bind(r.key())
    .bind(&r.url)
    .bind(&r.secret)
    .bind(r.format.as_str())
    .bind(r.repeat.as_millis() as i64)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const SELECT_DELIVERY: &str = "SELECT d.event, d.receiver, d.reminder, d.attempts, d.created_ms, o.created_ms, o.payload_json, r.url, r.secret, r.format
     FROM deliveries d JOIN outbox o ON o.id = d.event JOIN receivers r ON r.key = d.receiver";

fn row_to_delivery(r: sqlx::sqlite::SqliteRow) -> Option<Delivery> {
    Some(Delivery {
        event: r.get(0),
        receiver: r.get(1),
        reminder: r.get(2),
        attempts: r.get(3),
        created_ms: r.get(4),
        event_created_ms: r.get(5),
        payload: serde_json::from_str(r.get::<&str, _>(6)).ok()?,
        url: r.get(7),
        secret: r.get(8),
        format: match r.get::<&str, _>(9) {
            "slack" => Format::Slack,
            _ => Format::Standard,
        },
    })
}

/// A reminder that is due: an open incident's receiver, nothing pending for it, and its
/// last delivery older than its `repeat`.
struct ReminderState {
    event: String,
    receiver: String,
    last_reminder: i64,
    /// When the next one is due.
    due_ms: i64,
    pending: bool,
}

impl Store {
    /// Record what the daemon knows of `project` and the store does not: its desired
    /// state is blocked (`reason`), or it is converged. In its own transaction, against
    /// the project's newest generation (the one kept running); the event's id when one
    /// was written. Called on every turn: the same failure is written once.
    pub async fn record_standing(
        &self,
        project: &str,
        happened: Happened,
        reason: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let Some(latest) = self.latest(project).await? else {
            return Ok(None);
        };
        // Taken down on purpose: the daemon does not bring it up, and says so, but that
        // needs no person.
        if latest.outcome == Outcome::Down && matches!(happened, Happened::Blocked { .. }) {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        let id = record(&mut tx, latest.id, happened, reason).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Deliveries due by `now_ms` (all pending ones when None), soonest first, at most
    /// `limit`.
    pub async fn due_deliveries(
        &self,
        now_ms: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_DELIVERY} WHERE d.state = 'pending' AND (?1 IS NULL OR d.next_attempt_ms <= ?1)
             ORDER BY d.next_attempt_ms, o.created_ms LIMIT ?2"
        )))
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().filter_map(row_to_delivery).collect())
    }

    /// A delivery the receiver took.
    pub async fn delivered(&self, d: &Delivery, answer: &str) -> Result<(), StoreError> {
        self.attempted(d, "delivered", answer, None).await
    }

    /// A delivery that failed, tried again at `next_ms`.
    pub async fn retry_delivery(
        &self,
        d: &Delivery,
        answer: &str,
        next_ms: i64,
    ) -> Result<(), StoreError> {
        self.attempted(d, "pending", answer, Some(next_ms)).await
    }

    /// A delivery given up on (it kept failing for 24 h).
    pub async fn give_up_delivery(&self, d: &Delivery, answer: &str) -> Result<(), StoreError> {
        self.attempted(d, "failed", answer, None).await
    }

    async fn attempted(
        &self,
        d: &Delivery,
        state: &str,
        answer: &str,
        next_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "UPDATE deliveries SET attempts = attempts + 1, state = ?, last_answer = ?,
                    next_attempt_ms = COALESCE(?, next_attempt_ms),
                    delivered_ms = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_ms END
             WHERE event = ? AND receiver = ? AND reminder = ?",
        )
        .bind(state)
        .bind(crate::text::one_line(answer, 400))
        .bind(next_ms)
        .bind(state)
        .bind(now)
        .bind(&d.event)
        .bind(&d.receiver)
        .bind(d.reminder)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn reminder_states(&self) -> Result<Vec<ReminderState>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.id, d.receiver, MAX(d.reminder), MAX(d.created_ms), SUM(d.state = 'pending'), r.repeat_ms
             FROM outbox o JOIN deliveries d ON d.event = o.id JOIN receivers r ON r.key = d.receiver
             WHERE o.closed_ms IS NULL GROUP BY o.id, d.receiver",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ReminderState {
                event: r.get(0),
                receiver: r.get(1),
                last_reminder: r.get(2),
                due_ms: r.get::<i64, _>(3).saturating_add(r.get::<i64, _>(5)),
                pending: r.get::<i64, _>(4) > 0,
            })
            .collect())
    }

    /// Make the reminders due by `now`: for each open incident and each receiver it was
    /// sent to, one more delivery once its last is `repeat` old and none is pending (a
    /// receiver that is down gets one reminder when it is back, not a pile). How many.
    pub async fn add_due_reminders(&self, now: i64) -> Result<usize, StoreError> {
        let mut added = 0;
        for s in self.reminder_states().await? {
            if s.pending || s.due_ms > now {
                continue;
            }
            sqlx::query(
                "INSERT OR IGNORE INTO deliveries (event, receiver, reminder, created_ms, next_attempt_ms) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&s.event)
            .bind(&s.receiver)
            .bind(s.last_reminder + 1)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
            added += 1;
        }
        Ok(added)
    }

    /// When the sender has something to do next: the soonest pending attempt or reminder.
    pub async fn next_notify_ms(&self) -> Result<Option<i64>, StoreError> {
        let attempt: Option<i64> =
            sqlx::query("SELECT MIN(next_attempt_ms) FROM deliveries WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?
                .get(0);
        let reminder = self
            .reminder_states()
            .await?
            .into_iter()
            .filter(|s| !s.pending)
            .map(|s| s.due_ms)
            .min();
        Ok(attempt.into_iter().chain(reminder).min())
    }

    /// Deliveries not yet made or given up on (`berth_notify_outbox_depth`).
    pub async fn outbox_depth(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?
                .get(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Kind, NewGeneration};

    /// A store and the JSON of a desired state with two receivers: `a` hears only of
    /// deploys, `b` of everything else, reminded every second.
    async fn store() -> (tempfile::TempDir, Store, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(
            &file,
            r#"
[project]
name = "p"
[services.web]
image = "fixture:test"
[[notify]]
url = "http://a.example/hook"
events = ["deployed"]
[[notify]]
url = "http://b.example/hook"
secret = "s3cret"
repeat = "1s"
"#,
        )
        .unwrap();
        let desired = crate::spec::load_with_env(
            &file,
            &Default::default(),
            &std::collections::HashMap::new(),
        )
        .unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        (dir, store, serde_json::to_string(&desired).unwrap())
    }

    async fn begin(store: &Store, spec: &str) -> i64 {
        store
            .begin(
                NewGeneration {
                    project: "p",
                    kind: Kind::Apply,
                    source_hash: "h",
                    resolved_hash: "h",
                    source: "f",
                    spec_json: spec,
                    images: &serde_json::Value::Null,
                    commit: None,
                },
                None,
            )
            .await
            .unwrap()
    }

    /// (webhook id, receiver host) of every delivery, in order.
    async fn deliveries(store: &Store) -> Vec<(String, String)> {
        store
            .due_deliveries(None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.webhook_id(), notify::describe_url(&d.url)))
            .collect()
    }

    async fn deliver_all(store: &Store) {
        for d in store.due_deliveries(None, 100).await.unwrap() {
            store.delivered(&d, "200 OK").await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_outcome_writes_its_event_for_each_receiver_that_wants_it() {
        let (_dir, store, spec) = store().await;
        let g1 = begin(&store, &spec).await;
        store
            .finish(g1, Outcome::Healthy, None, &Default::default())
            .await
            .unwrap();
        assert_eq!(
            deliveries(&store).await,
            [("p:1:deployed".into(), "http://a.example/…".into())]
        );
        deliver_all(&store).await;

        let g2 = begin(&store, &spec).await;
        store
            .start_revert(g2, g1, "web exited 1", &Default::default())
            .await
            .unwrap();
        assert!(
            deliveries(&store).await.is_empty(),
            "reverting is not final"
        );
        store
            .mark_rolled_back(g2, g1, "web exited 1; reverted to generation 1")
            .await
            .unwrap();
        let due = store.due_deliveries(None, 100).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].webhook_id(), "p:2:rolled-back");
        assert_eq!(due[0].secret.as_deref(), Some("s3cret"));
        assert_eq!(due[0].payload.reverted_to, Some(1));
        assert_eq!(due[0].payload.services, ["web"]);
        assert_eq!(store.outbox_depth().await.unwrap(), 1);
        deliver_all(&store).await;
        assert_eq!(store.outbox_depth().await.unwrap(), 0);
    }

    fn kept(generation: i64, container: &str, code: i64, lines: &[&str]) -> Evidence {
        Evidence {
            generation,
            service: "web".into(),
            container: container.into(),
            why: crate::store::Cause::GateFailed,
            captured_ms: now_ms(),
            running: false,
            exit_code: Some(code),
            oom_killed: code == 137,
            restart_count: 1,
            started_at: None,
            finished_at: None,
            health: vec![],
            probe: None,
            lines: lines.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn a_rolled_back_event_carries_the_newest_evidence_of_each_container_and_the_same_fingerprint()
     {
        let (_dir, store, spec) = store().await;
        let g1 = begin(&store, &spec).await;
        store
            .finish(g1, Outcome::Healthy, None, &Default::default())
            .await
            .unwrap();
        deliver_all(&store).await;
        let g2 = begin(&store, &spec).await;
        store
            .add_evidence(
                "p",
                &[
                    kept(g2, "p-web", 1, &["an older run"]),
                    kept(g2, "p-worker", 2, &["worker down"]),
                    // The receiver's secret, written by the container, is no secret's news.
                    kept(
                        g2,
                        "p-web",
                        137,
                        &["allocating", "token s3cret leaked", "  "],
                    ),
                ],
            )
            .await
            .unwrap();
        let reason = "service \"web\" failed its gate: exited (code 137)";
        store.mark_rolled_back(g2, g1, reason).await.unwrap();
        let due = store.due_deliveries(None, 100).await.unwrap();
        let evidence = &due[0].payload.evidence;
        assert_eq!(
            evidence
                .iter()
                .map(|e| (e.container.as_str(), e.exit_code))
                .collect::<Vec<_>>(),
            [("p-worker", Some(2)), ("p-web", Some(137))],
            "the newest of each container, in the order captured"
        );
        assert_eq!(
            evidence[1].last_line.as_deref(),
            Some("token <redacted> leaked"),
            "the last line that is not blank, redacted"
        );
        assert!(evidence[1].oom_killed);
        assert_eq!(evidence[1].why, "gate-failed");
        let fingerprint: String = sqlx::query("SELECT fingerprint FROM outbox WHERE id = ?")
            .bind(&due[0].event)
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            fingerprint,
            notify::fingerprint("p", EventKind::RolledBack, reason, &[]),
            "evidence is no part of what makes a failure the same"
        );
    }

    #[tokio::test]
    async fn a_blocked_desired_state_is_one_event_however_many_turns_see_it() {
        let (_dir, store, spec) = store().await;
        let g1 = begin(&store, &spec).await;
        store
            .finish(g1, Outcome::Healthy, None, &Default::default())
            .await
            .unwrap();
        let g2 = begin(&store, &spec).await;
        store.mark_rolled_back(g2, g1, "gate failed").await.unwrap();
        deliver_all(&store).await;
        let poisoned = Happened::Blocked {
            poisoned_by: Some(g2),
        };
        assert_eq!(
            store
                .record_standing("p", poisoned, Some("poisoned"))
                .await
                .unwrap(),
            None,
            "the poison of the rolled-back generation is its incident"
        );
        let invalid = || Happened::Blocked { poisoned_by: None };
        for line in 1..5 {
            let reason = format!("invalid: f.toml:{line}:3: bad");
            let id = store
                .record_standing("p", invalid(), Some(&reason))
                .await
                .unwrap();
            assert_eq!(id.is_some(), line == 1, "turn {line}: {id:?}");
        }
        assert_eq!(
            deliveries(&store).await,
            [("p:2:blocked".into(), "http://b.example/…".into())]
        );
        deliver_all(&store).await;
        let recovered = store
            .record_standing("p", Happened::Converged, None)
            .await
            .unwrap();
        assert_eq!(recovered.as_deref(), Some("p:2:recovered"));
        assert_eq!(
            store
                .record_standing("p", Happened::Converged, None)
                .await
                .unwrap(),
            None,
            "closed: converged again is no news"
        );
    }

    #[tokio::test]
    async fn reminders_come_once_per_repeat_while_the_incident_is_open() {
        let (_dir, store, spec) = store().await;
        let g1 = begin(&store, &spec).await;
        store
            .finish(
                g1,
                Outcome::Failed,
                Some("no last good"),
                &Default::default(),
            )
            .await
            .unwrap();
        let now = now_ms();
        assert_eq!(
            store.add_due_reminders(now + 5_000).await.unwrap(),
            0,
            "the event is pending"
        );
        deliver_all(&store).await;
        assert_eq!(
            store.add_due_reminders(now + 500).await.unwrap(),
            0,
            "not yet"
        );
        assert_eq!(store.add_due_reminders(now + 1_500).await.unwrap(), 1);
        assert_eq!(
            store.add_due_reminders(now + 1_600).await.unwrap(),
            0,
            "one pending"
        );
        assert_eq!(
            deliveries(&store).await,
            [(
                "p:1:degraded:reminder:1".into(),
                "http://b.example/…".into()
            )]
        );
        deliver_all(&store).await;
        // The first reminder was made at `now + 1.5 s`: the second is due a second later.
        assert_eq!(store.add_due_reminders(now + 2_400).await.unwrap(), 0);
        assert_eq!(store.add_due_reminders(now + 2_600).await.unwrap(), 1);
        deliver_all(&store).await;
        // Fixed: the incident closes, no reminder after.
        let g2 = begin(&store, &spec).await;
        store
            .finish(g2, Outcome::Healthy, None, &Default::default())
            .await
            .unwrap();
        assert_eq!(
            deliveries(&store).await,
            [("p:2:recovered".into(), "http://b.example/…".into())]
        );
        deliver_all(&store).await;
        assert_eq!(store.add_due_reminders(now_ms() + 60_000).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_failed_repair_is_degraded_and_the_next_repair_recovers_it() {
        let (_dir, store, spec) = store().await;
        let g1 = begin(&store, &spec).await;
        store
            .finish(g1, Outcome::Healthy, None, &Default::default())
            .await
            .unwrap();
        deliver_all(&store).await;
        store
            .add_event(g1, "repair-failed", None, "web exited 1")
            .await
            .unwrap();
        store
            .add_event(g1, "repair-failed", None, "web exited 2")
            .await
            .unwrap();
        let due = store.due_deliveries(None, 100).await.unwrap();
        assert_eq!(due.len(), 1, "the same failure once");
        assert_eq!(due[0].webhook_id(), "p:1:degraded");
        assert_eq!(due[0].payload.reason.as_deref(), Some("web exited 1"));
        deliver_all(&store).await;
        store
            .add_event(g1, "repair", Some("web"), "exited")
            .await
            .unwrap();
        store
            .add_event(g1, "repair", Some("db"), "exited")
            .await
            .unwrap();
        assert_eq!(
            deliveries(&store).await,
            [("p:1:recovered".into(), "http://b.example/…".into())]
        );
        deliver_all(&store).await;
        // Failing again later is a new incident with an id of its own.
        store
            .add_event(g1, "repair-failed", None, "web exited 1")
            .await
            .unwrap();
        assert_eq!(
            deliveries(&store).await,
            [("p:1:degraded:2".into(), "http://b.example/…".into())]
        );
    }
}
