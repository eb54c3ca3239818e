//! The migrations step of a converge (DESIGN.md semantic 5) and the schema half of a
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

#[cfg(test)]
mod tests {
    use super::*;

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
