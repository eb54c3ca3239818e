//! The state store: generations in SQLite through sqlx (DESIGN.md "generation").
//!
//! The default is an embedded SQLite file (`--state`, env `BERTH_STATE`). The store has
//! its own schema migrations in `src/store/migrations`, applied on open. The file holds
//! unredacted specs (a revert needs the real values), so it is created mode 0600.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("state store {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("state store schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("state store query failed: {0}")]
    Query(#[from] sqlx::Error),
}

/// One generation as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub id: i64,
    pub project: String,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub source_hash: String,
    pub source: String,
    #[serde(skip)]
    pub spec_json: String,
    pub images: serde_json::Value,
    pub outcome: String,
    pub reason: Option<String>,
    pub timings: serde_json::Value,
    /// For a rolled-back generation: the generation the stack went back to.
    pub reverted_to: Option<i64>,
}

pub struct Store {
    pool: SqlitePool,
}

/// Where the state lives when `--state` and `BERTH_STATE` say nothing.
pub fn default_path() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("berth/state.db");
    }
    if std::env::var("USER").as_deref() == Ok("root") || std::env::var_os("HOME").is_none() {
        return PathBuf::from("/var/lib/berth/state.db");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/state/berth/state.db")
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| StoreError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        sqlx::migrate!("src/store/migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    /// Record a generation as `progressing` and return its number.
    pub async fn begin(
        &self,
        project: &str,
        source_hash: &str,
        source: &str,
        spec_json: &str,
        images: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO generations (project, started_ms, source_hash, source, spec_json, images_json, outcome)
             VALUES (?, ?, ?, ?, ?, ?, 'progressing') RETURNING id",
        )
        .bind(project)
        .bind(now_ms())
        .bind(source_hash)
        .bind(source)
        .bind(spec_json)
        .bind(images.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.get(0))
    }

    pub async fn finish(
        &self,
        id: i64,
        outcome: &str,
        reason: Option<&str>,
        timings: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE generations SET finished_ms = ?, outcome = ?, reason = ?, timings_json = ? WHERE id = ?")
            .bind(now_ms())
            .bind(outcome)
            .bind(reason)
            .bind(timings.to_string())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Mark a generation rolled back to `to`, now that `to` is healthy again.
    pub async fn mark_rolled_back(&self, id: i64, to: i64, reason: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE generations SET outcome = 'rolled-back', finished_ms = ?, reverted_to = ?, reason = ? WHERE id = ?")
            .bind(now_ms())
            .bind(to)
            .bind(reason)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest generation older than `before` whose every gate passed.
    pub async fn last_good(
        &self,
        project: &str,
        before: i64,
    ) -> Result<Option<Generation>, StoreError> {
        Ok(self
            .history(Some(project))
            .await?
            .into_iter()
            .rev()
            .find(|g| g.id < before && g.outcome == "healthy"))
    }

    pub async fn get(&self, project: &str, id: i64) -> Result<Option<Generation>, StoreError> {
        Ok(self
            .history(Some(project))
            .await?
            .into_iter()
            .find(|g| g.id == id))
    }

    pub async fn latest(&self, project: &str) -> Result<Option<Generation>, StoreError> {
        Ok(self.history(Some(project)).await?.pop())
    }

    /// Generations oldest first, for one project or all.
    pub async fn history(&self, project: Option<&str>) -> Result<Vec<Generation>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, project, started_ms, finished_ms, source_hash, source, spec_json, images_json, outcome, reason, timings_json, reverted_to
             FROM generations WHERE (?1 IS NULL OR project = ?1) ORDER BY id",
        )
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Generation {
                id: r.get(0),
                project: r.get(1),
                started_ms: r.get(2),
                finished_ms: r.get(3),
                source_hash: r.get(4),
                source: r.get(5),
                spec_json: r.get(6),
                images: serde_json::from_str(r.get::<&str, _>(7)).unwrap_or_default(),
                outcome: r.get(8),
                reason: r.get(9),
                timings: serde_json::from_str(r.get::<&str, _>(10)).unwrap_or_default(),
                reverted_to: r.get(11),
            })
            .collect())
    }

    pub async fn projects(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT project FROM generations ORDER BY project")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_unix_ms_as_utc() {
        assert_eq!(format_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_ms(1_795_000_000_000), "2026-11-18 11:06:40 UTC");
    }

    #[tokio::test]
    async fn generations_are_numbered_and_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/state.db");
        let store = Store::open(&path).await.unwrap();
        let a = store
            .begin("p", "h1", "f", "{}", &serde_json::json!({}))
            .await
            .unwrap();
        let b = store
            .begin("p", "h2", "f", "{}", &serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(b, a + 1);
        store
            .finish(b, "failed", Some("why"), &serde_json::json!({}))
            .await
            .unwrap();
        let latest = store.latest("p").await.unwrap().unwrap();
        assert_eq!(
            (latest.id, latest.outcome.as_str(), latest.reason.as_deref()),
            (b, "failed", Some("why"))
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
