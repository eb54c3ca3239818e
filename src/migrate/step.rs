//! The migrations step of a converge (docs/design.md §5) and the schema half of a
//! revert (semantic 6), on top of [`super::apply`] / [`super::undo_to`].
//!
//! berth runs on the host; the `[migrations]` URL names the database as the containers
//! reach it (its service name, which resolves only on the project network). The step
//! reaches the database container by its **address on the project network** instead (as
//! the health probes do), keeping the URL's port, user, password and database: no
//! published port is needed.

use crate::runtime::{Runtime, RuntimeError};
use crate::spec::{DesiredState, Migrations};

/// Why the database could not be addressed.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("the database service {0:?} has no running container")]
    NoContainer(String),
    #[error("the database service {service:?} has no address on network {network:?}")]
    NoAddress { service: String, network: String },
}

/// The `[migrations]` URL with its host replaced by `ip` (its port kept).
pub fn container_url(url: &str, ip: &str) -> String {
    let mut u = url::Url::parse(url).expect("validated when loaded");
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    // A PostgreSQL URL has a host: setting another one cannot fail.
    let _ = u.set_host(Some(&host));
    u.to_string()
}

/// The URL that reaches the database service's running container from the host.
pub async fn database_url<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    m: &Migrations,
) -> Result<String, AddressError> {
    let containers = rt.list_project(&desired.project.name).await?;
    let c = containers
        .iter()
        .find(|c| c.service.as_deref() == Some(m.service.as_str()) && c.running())
        .ok_or_else(|| AddressError::NoContainer(m.service.clone()))?;
    let network = desired
        .services
        .get(&m.service)
        .and_then(|s| s.networks.first())
        .cloned()
        .unwrap_or_default();
    let details = rt.inspect_container(&c.id, &network).await?;
    let ip = details.ip.ok_or_else(|| AddressError::NoAddress {
        service: m.service.clone(),
        network,
    })?;
    Ok(container_url(&m.url, &ip))
}

/// A migration's name as its files are named: `0002_add_user_sessions`.
pub fn name(file: &std::path::Path) -> String {
    let f = file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    f.trim_end_matches(".sql")
        .trim_end_matches(".up")
        .to_string()
}

/// What `berth plan` says about the schema: the migrations apply would run, or, when
/// the database has applied migrations the source no longer holds (above its newest),
/// the ones a return to this desired state undoes. None when there is nothing to do.
pub fn plan_line(status: &super::Status, source_newest: i64) -> Option<String> {
    let undo: Vec<String> = status
        .applied
        .iter()
        .rev()
        .filter(|a| a.checksum_ok.is_none() && a.version > source_newest)
        .map(|a| format!("{:04}_{}", a.version, a.description.replace(' ', "_")))
        .collect();
    if !undo.is_empty() {
        return Some(format!(
            "migrations: undo {} (the database is ahead of this desired state's source)",
            undo.join(", ")
        ));
    }
    if status.pending.is_empty() {
        return None;
    }
    let apply: Vec<String> = status.pending.iter().map(|p| name(&p.file)).collect();
    Some(format!("migrations: apply {}", apply.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::{Applied, Pending, Status};

    fn applied(version: i64, description: &str, in_source: bool) -> Applied {
        Applied {
            version,
            description: description.into(),
            success: true,
            checksum_ok: in_source.then_some(true),
            file: None,
        }
    }

    #[test]
    fn the_plan_names_the_migrations_to_apply_or_undo() {
        let pending = |v: i64, f: &str| Pending {
            version: v,
            description: String::new(),
            file: format!("/m/{f}.up.sql").into(),
        };
        let s = Status {
            applied: vec![applied(1, "initial schema", true)],
            pending: vec![
                pending(2, "0002_add_user_sessions"),
                pending(3, "0003_add_vector_indexes"),
            ],
        };
        assert_eq!(
            plan_line(&s, 3).as_deref(),
            Some("migrations: apply 0002_add_user_sessions, 0003_add_vector_indexes")
        );
        let s = Status {
            applied: vec![
                applied(1, "initial schema", true),
                applied(2, "add user sessions", false),
            ],
            pending: vec![],
        };
        assert_eq!(
            plan_line(&s, 1).as_deref(),
            Some(
                "migrations: undo 0002_add_user_sessions (the database is ahead of this desired state's source)"
            )
        );
        let s = Status {
            applied: vec![applied(1, "initial schema", true)],
            pending: vec![],
        };
        assert_eq!(plan_line(&s, 1), None);
    }

    #[test]
    fn the_step_reaches_the_database_by_its_container_address_keeping_the_port() {
        assert_eq!(
            container_url(
                "postgresql://u:p%40ss@postgres:5432/app?sslmode=disable",
                "172.18.0.5"
            ),
            "postgresql://u:p%40ss@172.18.0.5:5432/app?sslmode=disable"
        );
        assert_eq!(
            container_url("postgres://u:p@db/app", "fd00::5"),
            "postgres://u:p@[fd00::5]/app"
        );
    }

    #[test]
    fn a_migration_is_named_by_its_file() {
        assert_eq!(
            name(std::path::Path::new("/m/0002_add_user_sessions.up.sql")),
            "0002_add_user_sessions"
        );
        assert_eq!(name(std::path::Path::new("/m/0004_x.sql")), "0004_x");
    }
}
