//! Evidence: what a failed or dead container left behind, kept on its generation
//! (docs/design.md §13, "Evidence outlives the container").
//!
//! Captured (by [`crate::evidence`]) before a revert removes the container whose gate
//! failed, and before a repair replaces or restarts one that died. Everything in it that
//! the container wrote is already redacted and made one line per entry when it gets
//! here. Old evidence is pruned: older than [`KEEP_DAYS`] days, or beyond the newest
//! [`KEEP_GENERATIONS`] generations of its project; the generations themselves stay.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Store, StoreError, now_ms};
use crate::runtime::HealthRun;

/// Evidence older than this many days is pruned.
pub const KEEP_DAYS: i64 = 90;
/// Evidence of generations older than a project's newest this many is pruned.
pub const KEEP_GENERATIONS: i64 = 100;

/// Cause evidence was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// Its gate failed; the revert is about to remove it.
    GateFailed,
    /// It died while its generation ran; a repair is about to replace or restart it.
    Died,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::GateFailed => "gate-failed",
            Cause::Died => "died",
        }
    }

    fn parse(s: &str) -> Cause {
        match s {
            "gate-failed" => Cause::GateFailed,
            _ => Cause::Died,
        }
    }
}

/// One container's evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub generation: i64,
    pub service: String,
    /// The container's name when it was captured.
    pub container: String,
    pub why: Cause,
    pub captured_ms: i64,
    /// Whether it was still running when captured (a gate can fail on a probe while
    /// the container runs on).
    pub running: bool,
    /// How its last run ended: None while it still runs.
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub restart_count: i64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The HEALTHCHECK's last runs, oldest first (empty without one).
    pub health: Vec<HealthRun>,
    /// berth's own last probe result for it, when it was gated.
    pub probe: Option<String>,
    /// Its last log lines, oldest first: at most 200, at most 64 KiB in all.
    pub lines: Vec<String>,
}

/// What is stored as `body_json`: everything but the columns.
#[derive(Serialize, Deserialize)]
struct Body {
    running: bool,
    exit_code: Option<i64>,
    oom_killed: bool,
    restart_count: i64,
    started_at: Option<String>,
    finished_at: Option<String>,
    health: Vec<HealthRun>,
    probe: Option<String>,
    lines: Vec<String>,
}

impl Store {
    /// Keep evidence on generation `generation` of `project`, then prune what is past
    /// its retention.
    pub async fn add_evidence(
        &self,
        project: &str,
        evidence: &[Evidence],
    ) -> Result<(), StoreError> {
        if evidence.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for e in evidence {
            let body = Body {
                running: e.running,
                exit_code: e.exit_code,
                oom_killed: e.oom_killed,
                restart_count: e.restart_count,
                started_at: e.started_at.clone(),
                finished_at: e.finished_at.clone(),
                health: e.health.clone(),
                probe: e.probe.clone(),
                lines: e.lines.clone(),
            };
            sqlx::query(
                "INSERT INTO evidence (generation, project, service, container, why, captured_ms, body_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(e.generation)
            .bind(project)
            .bind(&e.service)
            .bind(&e.container)
            .bind(e.why.as_str())
            .bind(e.captured_ms)
            .bind(serde_json::to_string(&body).expect("evidence is plain data"))
            .execute(&mut *tx)
            .await?;
        }
        prune(&mut tx, project, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The evidence kept on a generation, in the order it was captured.
    pub async fn evidence(&self, generation: i64) -> Result<Vec<Evidence>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        evidence_on(&mut conn, generation).await
    }
}

/// The evidence kept on `generation`, read on `conn` (inside a caller's transaction: the
/// notification outbox summarizes it in the one that records the outcome).
pub(super) async fn evidence_on(
    conn: &mut sqlx::SqliteConnection,
    generation: i64,
) -> Result<Vec<Evidence>, StoreError> {
    let rows = sqlx::query(
        "SELECT generation, service, container, why, captured_ms, body_json FROM evidence WHERE generation = ? ORDER BY id",
    )
    .bind(generation)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let generation: i64 = r.get(0);
            let body: Body =
                serde_json::from_str(r.get::<&str, _>(5)).map_err(|e| StoreError::Corrupt {
                    generation,
                    message: format!("its evidence: {e}"),
                })?;
            Ok(Evidence {
                generation,
                service: r.get(1),
                container: r.get(2),
                why: Cause::parse(r.get::<&str, _>(3)),
                captured_ms: r.get(4),
                running: body.running,
                exit_code: body.exit_code,
                oom_killed: body.oom_killed,
                restart_count: body.restart_count,
                started_at: body.started_at,
                finished_at: body.finished_at,
                health: body.health,
                probe: body.probe,
                lines: body.lines,
            })
        })
        .collect()
}

/// Remove `project`'s evidence older than [`KEEP_DAYS`] at `now`, or kept on a
/// generation older than its newest [`KEEP_GENERATIONS`].
async fn prune(tx: &mut sqlx::SqliteConnection, project: &str, now: i64) -> Result<(), StoreError> {
    let oldest_ms = now - KEEP_DAYS * 24 * 3600 * 1000;
    sqlx::query("DELETE FROM evidence WHERE project = ? AND captured_ms < ?")
        .bind(project)
        .bind(oldest_ms)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "DELETE FROM evidence WHERE project = ? AND generation < (
             SELECT COALESCE(MIN(id), 0) FROM (
                 SELECT id FROM generations WHERE project = ? ORDER BY id DESC LIMIT ?
             )
         )",
    )
    .bind(project)
    .bind(project)
    .bind(KEEP_GENERATIONS)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Kind, NewGeneration, Store};

    fn kept(generation: i64, service: &str, captured_ms: i64) -> Evidence {
        Evidence {
            generation,
            service: service.into(),
            container: format!("p-{service}"),
            why: Cause::GateFailed,
            captured_ms,
            running: false,
            exit_code: Some(3),
            oom_killed: false,
            restart_count: 0,
            started_at: Some("2026-12-07T10:00:00Z".into()),
            finished_at: Some("2026-12-07T10:00:01Z".into()),
            health: vec![],
            probe: Some("tcp :8080: connection refused".into()),
            lines: vec!["one".into(), "two".into()],
        }
    }

    async fn generation(store: &Store) -> i64 {
        store
            .begin(
                NewGeneration {
                    project: "p",
                    kind: Kind::Apply,
                    source_hash: "s",
                    resolved_hash: "r",
                    source: "f",
                    spec_json: "{}",
                    images: &serde_json::json!({}),
                    commit: None,
                },
                None,
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn evidence_kept_on_a_generation_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        let g = generation(&store).await;
        let e = kept(g, "web", now_ms());
        store
            .add_evidence("p", std::slice::from_ref(&e))
            .await
            .unwrap();
        assert_eq!(store.evidence(g).await.unwrap(), vec![e]);
        assert!(store.evidence(g + 1).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn evidence_past_ninety_days_or_a_hundred_generations_is_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
        let first = generation(&store).await;
        let old = now_ms() - (KEEP_DAYS + 1) * 24 * 3600 * 1000;
        store
            .add_evidence("p", &[kept(first, "old", old)])
            .await
            .unwrap();
        assert!(
            store.evidence(first).await.unwrap().is_empty(),
            "older than 90 days"
        );
        store
            .add_evidence("p", &[kept(first, "web", now_ms())])
            .await
            .unwrap();
        let mut last = first;
        for _ in 0..KEEP_GENERATIONS - 1 {
            last = generation(&store).await;
        }
        store
            .add_evidence("p", &[kept(last, "web", now_ms())])
            .await
            .unwrap();
        assert_eq!(
            store.evidence(first).await.unwrap().len(),
            1,
            "still among the newest 100"
        );
        let newest = generation(&store).await;
        store
            .add_evidence("p", &[kept(newest, "web", now_ms())])
            .await
            .unwrap();
        assert!(
            store.evidence(first).await.unwrap().is_empty(),
            "101 generations back"
        );
        assert_eq!(store.evidence(last).await.unwrap().len(), 1);
    }
}
