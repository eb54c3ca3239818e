//! The runbook's pre-flight (`scripts/validate_config.py` and "Infrastructure Readiness"),
//! for `berth validate` and before every `berth apply`.
//!
//! The checks that need only the files and the environment (required variables, API key
//! formats, the database URL) run while loading, so they point at their line like any
//! other error. The host checks run here:
//!
//! - the Docker engine answers and is at least `docker_min_version` (and API 1.41, the
//!   oldest berth speaks);
//! - every published host port is free, or held by this project's own container;
//! - every `data_dirs` entry is a directory with its mode, or is missing (then it is
//!   created, but only once every check has passed: a failed pre-flight changes nothing);
//! - `min_free_disk` is free on the filesystem that holds the data.
//!
//! Each failure is one [`Diagnostic`] at the line that asked for the check.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Diagnostics};
use crate::runtime::Runtime;
use crate::spec::{DataDir, DesiredState};

/// The oldest Docker API berth speaks (Docker 20.10).
pub const MIN_API: (u64, u64) = (1, 41);

/// What passed, one line each, for `berth validate` to print.
#[derive(Debug, Default)]
pub struct Passed {
    pub lines: Vec<String>,
    /// Data directories that are missing and will be created by [`create_missing`].
    pub missing_dirs: Vec<DataDir>,
}

/// Run the host checks. Changes nothing.
pub async fn check<R: Runtime>(rt: &R, d: &DesiredState) -> Result<Passed, Diagnostics> {
    let pf = &d.preflight;
    let mut diags = Diagnostics::default();
    let mut passed = Passed::default();
    let first_file = d.files.first().cloned().unwrap_or_default();

    if pf.required_env > 0 {
        passed.lines.push(format!(
            "all {} required environment variables are set",
            pf.required_env
        ));
    }
    if pf.api_keys > 0 {
        passed
            .lines
            .push(format!("{} API keys have a plausible format", pf.api_keys));
    }
    if let Some(var) = &pf.database_url {
        passed
            .lines
            .push(format!("{var} parses as a PostgreSQL URL"));
    }

    // The engine.
    match rt.engine_version().await {
        Err(e) => diags.push(Diagnostic::file(
            &first_file,
            format!("preflight: the Docker engine is not reachable: {e}"),
        )),
        Ok(v) => {
            let api = crate::spec::parse_version(&v.api_version).unwrap_or((0, 0));
            let mut ok = true;
            if api < MIN_API {
                ok = false;
                diags.push(Diagnostic::file(
                    &first_file,
                    format!(
                        "preflight: Docker Engine {} speaks API {}; berth needs API {}.{} (Docker 20.10) or newer",
                        v.version, v.api_version, MIN_API.0, MIN_API.1
                    ),
                ));
            }
            if let Some((min, at)) = &pf.docker_min_version {
                let have = crate::spec::parse_version(
                    v.version.split(['+', '-', '~']).next().unwrap_or(""),
                )
                .unwrap_or((0, 0));
                if have < *min {
                    ok = false;
                    diags.push(at.diag(format!(
                        "preflight: Docker Engine {} is older than docker_min_version {}.{}",
                        v.version, min.0, min.1
                    )));
                }
            }
            if ok {
                passed.lines.push(format!(
                    "Docker Engine {} (API {}) is reachable",
                    v.version, v.api_version
                ));
            }
        }
    }

    // Host ports: free, or published by this project's own containers.
    if !pf.host_ports.is_empty() {
        let own: Vec<u16> = match rt.list_project(&d.project.name).await {
            Ok(list) => list.into_iter().flat_map(|c| c.published).collect(),
            Err(_) => Vec::new(), // the engine error is reported above
        };
        let mut bad = 0;
        for hp in &pf.host_ports {
            if own.contains(&hp.port) {
                continue;
            }
            let ip = hp.host_ip.as_deref().unwrap_or("0.0.0.0");
            if let Err(e) = try_bind(ip, hp.port, &hp.protocol) {
                bad += 1;
                let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                    "is already in use on this host".to_string()
                } else {
                    format!("cannot be bound on this host: {e}")
                };
                diags.push(hp.at.diag(format!(
                    "preflight: host port {ip}:{}/{} (service {:?}) {why}",
                    hp.port, hp.protocol, hp.service
                )));
            }
        }
        if bad == 0 {
            passed.lines.push(format!(
                "{} host ports are free or held by project {:?}",
                pf.host_ports.len(),
                d.project.name
            ));
        }
    }

    // Data directories.
    let mut dir_errors = 0;
    for dir in &pf.data_dirs {
        match std::fs::metadata(&dir.path) {
            Ok(m) if !m.is_dir() => {
                dir_errors += 1;
                diags.push(dir.at.diag(format!(
                    "preflight: data directory {} exists but is not a directory",
                    dir.path.display()
                )));
            }
            Ok(m) => {
                let mode = m.permissions().mode() & 0o7777;
                if mode != dir.mode {
                    dir_errors += 1;
                    diags.push(dir.at.diag(format!(
                        "preflight: data directory {} has mode {mode:04o}, expected {:04o} (chmod {:o} {})",
                        dir.path.display(),
                        dir.mode,
                        dir.mode,
                        dir.path.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                passed.missing_dirs.push(dir.clone())
            }
            Err(e) => {
                dir_errors += 1;
                diags.push(dir.at.diag(format!(
                    "preflight: data directory {}: {e}",
                    dir.path.display()
                )));
            }
        }
    }
    if !pf.data_dirs.is_empty() && dir_errors == 0 {
        passed.lines.push(format!(
            "data directories: {} in place with their modes, {} to create",
            pf.data_dirs.len() - passed.missing_dirs.len(),
            passed.missing_dirs.len()
        ));
    }

    // Free disk, where the data goes.
    if let Some((need, at)) = &pf.min_free_disk {
        let target = pf
            .data_dirs
            .first()
            .map(|d| d.path.clone())
            .unwrap_or_else(|| pf.base_dir.clone());
        let existing = nearest_existing(&target);
        match free_bytes(&existing) {
            Ok(free) if free < *need => diags.push(at.diag(format!(
                "preflight: only {} free on the filesystem of {}; min_free_disk is {}",
                human(free),
                existing.display(),
                human(*need)
            ))),
            Ok(free) => passed.lines.push(format!(
                "{} free on the filesystem of {} (min_free_disk {})",
                human(free),
                existing.display(),
                human(*need)
            )),
            Err(e) => diags.push(at.diag(format!(
                "preflight: cannot read free space of {}: {e}",
                existing.display()
            ))),
        }
    }

    if diags.is_empty() {
        Ok(passed)
    } else {
        Err(diags.sorted())
    }
}

/// Create the missing data directories with their modes (and owners, when root).
/// Returns one line per directory created.
pub fn create_missing(dirs: &[DataDir]) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    for dir in dirs {
        if dir.path.exists() {
            continue; // a parent listed earlier in the same pass
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(dir.mode)
            .create(&dir.path)
            .map_err(|e| with_path(e, &dir.path))?;
        // The mode and owner go to the directory opened without following a symlink
        // (O_NOFOLLOW): one put in its place since would carry them, as root, to
        // whatever it names (docs/design.md §12).
        let opened = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
                .open(&dir.path)
                .map_err(|e| with_path(e, &dir.path))?
        };
        // The umask may have taken bits away.
        opened
            .set_permissions(std::fs::Permissions::from_mode(dir.mode))
            .map_err(|e| with_path(e, &dir.path))?;
        let mut line = format!("created {} (mode {:o})", dir.path.display(), dir.mode);
        if let Some((uid, gid)) = dir.owner
            && rustix::process::geteuid().is_root()
        {
            std::os::unix::fs::fchown(&opened, Some(uid), Some(gid))
                .map_err(|e| with_path(e, &dir.path))?;
            line.push_str(&format!(", owner {uid}:{gid}"));
        }
        lines.push(line);
    }
    Ok(lines)
}

fn with_path(e: std::io::Error, p: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

fn try_bind(ip: &str, port: u16, protocol: &str) -> std::io::Result<()> {
    let addr = format!("{ip}:{port}");
    if protocol == "udp" {
        std::net::UdpSocket::bind(&addr).map(drop)
    } else {
        std::net::TcpListener::bind(&addr).map(drop)
    }
}

fn nearest_existing(p: &Path) -> PathBuf {
    let mut cur = p.to_path_buf();
    while !cur.exists() {
        if !cur.pop() {
            return PathBuf::from(".");
        }
    }
    if cur.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        cur
    }
}

/// Bytes available to an unprivileged user on the filesystem holding `p`.
pub fn free_bytes(p: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(p)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// 10737418240 -> "10.0 GiB".
pub fn human(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(10 * 1024 * 1024 * 1024), "10.0 GiB");
    }

    #[test]
    fn a_bound_port_is_reported_in_use() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let e = try_bind("127.0.0.1", port, "tcp").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        drop(l);
        try_bind("127.0.0.1", port, "tcp").unwrap();
    }
}
