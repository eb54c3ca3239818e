//! The runbook's pre-flight (`scripts/validate_config.py` and "Infrastructure Readiness"),
//! for `berth validate` and before every `berth apply`.
//!
//! The checks that need only the files and the environment (required variables, API key
//! formats, the database URL) run while loading, so they point at their line like any
//! other error. The host checks run here:
//!
//! - the Docker engine answers and is at least `docker_min_version` (and API 1.41, the
//!   oldest berth speaks);
//! - every published host port is free, or held by this project's own container. Read
//!   from the kernel's socket tables (`/proc/net/tcp`, `tcp6`, `udp`, `udp6`), never by
//!   binding it: Docker binds it, not berth, so the check needs no privilege for a port
//!   below 1024 (the systemd unit grants berth none);
//! - every `data_dirs` entry is a directory with its mode, or is missing (then it is
//!   created, but only once every check has passed: a failed pre-flight changes nothing);
//! - `min_free_disk` is free on the filesystem that holds the data;
//! - a data directory berth must create, and the backup directory, are on a writable
//!   filesystem: under the systemd unit's `ProtectSystem=strict` only the unit's
//!   `ReadWritePaths=` are, and the error says so ([`read_only_hint`]).
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

/// What the checks found: the problems, and what passed.
#[derive(Default)]
struct Findings {
    diags: Diagnostics,
    passed: Passed,
}

/// Run the host checks. Changes nothing.
pub async fn check<R: Runtime>(rt: &R, d: &DesiredState) -> Result<Passed, Diagnostics> {
    let pf = &d.preflight;
    let first_file = d.files.first().cloned().unwrap_or_default();
    let mut f = Findings::default();
    loaded(pf, &mut f);
    engine(rt, pf, &first_file, &mut f).await;
    own_container(rt, d, &mut f).await;
    host_ports(rt, d, &mut f).await;
    data_dirs(pf, &mut f);
    backup_dir(d, &first_file, &mut f);
    free_disk(pf, &mut f);
    if f.diags.is_empty() {
        Ok(f.passed)
    } else {
        Err(f.diags.sorted())
    }
}

/// What the loader already checked (variables, keys, the database URL), said as passed.
fn loaded(pf: &crate::spec::Preflight, f: &mut Findings) {
    if pf.required_env > 0 {
        f.passed.lines.push(format!(
            "all {} required environment variables are set",
            pf.required_env
        ));
    }
    if pf.api_keys > 0 {
        f.passed
            .lines
            .push(format!("{} API keys have a plausible format", pf.api_keys));
    }
    if let Some(var) = &pf.database_url {
        f.passed
            .lines
            .push(format!("{var} parses as a PostgreSQL URL"));
    }
}

/// The engine answers, speaks API 1.41 or newer, and is as new as `docker_min_version`.
async fn engine<R: Runtime>(
    rt: &R,
    pf: &crate::spec::Preflight,
    first_file: &std::path::Path,
    f: &mut Findings,
) {
    match rt.engine_version().await {
        Err(e) => f.diags.push(Diagnostic::file(
            first_file,
            format!("preflight: the Docker engine is not reachable: {e}"),
        )),
        Ok(v) => {
            let api = crate::spec::parse_version(&v.api_version).unwrap_or((0, 0));
            let mut ok = true;
            if api < MIN_API {
                ok = false;
                f.diags.push(Diagnostic::file(
                    first_file,
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
                    f.diags.push(at.diag(format!(
                        "preflight: Docker Engine {} is older than docker_min_version {}.{}",
                        v.version, min.0, min.1
                    )));
                }
            }
            if ok {
                f.passed.lines.push(format!(
                    "Docker Engine {} (API {}) is reachable",
                    v.version, v.api_version
                ));
            }
        }
    }
}

/// The container berth runs in (berth's image, [`crate::runtime::own`]) is no service's:
/// a service whose container would be it, by name or by the project's labels, is refused,
/// since converging it would mean recreating or stopping berth itself.
async fn own_container<R: Runtime>(rt: &R, d: &DesiredState, f: &mut Findings) {
    if d.project.engine == crate::spec::Engine::Swarm {
        return;
    }
    // An engine that does not answer is reported above.
    let Ok(Some(own)) = rt.own_container().await else {
        return;
    };
    let project = &d.project.name;
    let first_file = d.files.first().cloned().unwrap_or_default();
    for (name, s) in &d.services {
        let by = if s.container_name == own.name {
            format!("its container name {:?}", s.container_name)
        } else if own.project.as_ref() == Some(project) && own.service.as_ref() == Some(name) {
            format!("the labels berth.project={project} and berth.service={name}")
        } else {
            continue;
        };
        let diag = |msg: String| match d.preflight.services.get(name) {
            Some(at) => at.diag(msg),
            None => Diagnostic::file(&first_file, msg),
        };
        f.diags.push(diag(format!(
            "preflight: service {name:?} is the container berth runs in ({} {}, by {by}); berth never recreates, stops or removes its own container: run berth in a container that is none of the project's services, or leave the service out",
            own.name,
            own.short_id(),
        )));
    }
    // Said once per process: the daemon runs the pre-flight on every turn.
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::info!(container = %own.name, id = %own.short_id(), "berth runs in this container; it is none of the project's containers and is never recreated, stopped or removed");
        if own.network_mode != "host" {
            tracing::warn!(
                container = %own.name,
                network_mode = %own.network_mode,
                "berth runs in a container that is not on the host's network: it joins each project network to reach the services, but the pre-flight's host-port check sees only this container's sockets, not the host's (run it with --network host for that check)"
            );
        }
    });
}

/// Host ports: free, or published by this project's own containers.
async fn host_ports<R: Runtime>(rt: &R, d: &DesiredState, f: &mut Findings) {
    let pf = &d.preflight;
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
            let why = match port_holder(ip, hp.port, &hp.protocol) {
                Ok(None) => continue,
                Ok(Some(holder)) => format!("is already in use on this host ({holder})"),
                Err(e) => format!("cannot be checked: {e}"),
            };
            bad += 1;
            f.diags.push(hp.at.diag(format!(
                "preflight: host port {ip}:{}/{} (service {:?}) {why}",
                hp.port, hp.protocol, hp.service
            )));
        }
        if bad == 0 {
            f.passed.lines.push(format!(
                "{} host ports are free or held by project {:?}",
                pf.host_ports.len(),
                d.project.name
            ));
        }
    }
}

/// Data directories: a directory with its mode, or missing (created once all passed),
/// and then not on a read-only filesystem.
fn data_dirs(pf: &crate::spec::Preflight, f: &mut Findings) {
    let mut dir_errors = 0;
    for dir in &pf.data_dirs {
        match std::fs::metadata(&dir.path) {
            Ok(m) if !m.is_dir() => {
                dir_errors += 1;
                f.diags.push(dir.at.diag(format!(
                    "preflight: data directory {} exists but is not a directory",
                    dir.path.display()
                )));
            }
            Ok(m) => {
                let mode = m.permissions().mode() & 0o7777;
                if mode != dir.mode {
                    dir_errors += 1;
                    f.diags.push(dir.at.diag(format!(
                        "preflight: data directory {} has mode {mode:04o}, expected {:04o} (chmod {:o} {})",
                        dir.path.display(),
                        dir.mode,
                        dir.mode,
                        dir.path.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match read_only_problem(&dir.path) {
                    Some(problem) => {
                        dir_errors += 1;
                        f.diags.push(dir.at.diag(format!(
                            "preflight: data directory {} is missing and {problem}",
                            dir.path.display()
                        )));
                    }
                    None => f.passed.missing_dirs.push(dir.clone()),
                }
            }
            Err(e) => {
                dir_errors += 1;
                f.diags.push(dir.at.diag(format!(
                    "preflight: data directory {}: {e}",
                    dir.path.display()
                )));
            }
        }
    }
    if !pf.data_dirs.is_empty() && dir_errors == 0 {
        f.passed.lines.push(format!(
            "data directories: {} in place with their modes, {} to create",
            pf.data_dirs.len() - f.passed.missing_dirs.len(),
            f.passed.missing_dirs.len()
        ));
    }
}

/// The backups berth writes before migrations need a writable `backup_dir`.
fn backup_dir(d: &DesiredState, first_file: &std::path::Path, f: &mut Findings) {
    if let Some(m) = d.migrations.as_ref().filter(|m| m.backup)
        && let Some(problem) = read_only_problem(&m.backup_dir)
    {
        f.diags.push(Diagnostic::file(
            first_file,
            format!("preflight: backup_dir {} {problem}", m.backup_dir.display()),
        ));
    }
}

/// Free disk, where the data goes.
fn free_disk(pf: &crate::spec::Preflight, f: &mut Findings) {
    if let Some((need, at)) = &pf.min_free_disk {
        let target = pf
            .data_dirs
            .first()
            .map(|d| d.path.clone())
            .unwrap_or_else(|| pf.base_dir.clone());
        let existing = nearest_existing(&target);
        match free_bytes(&existing) {
            Ok(free) if free < *need => f.diags.push(at.diag(format!(
                "preflight: only {} free on the filesystem of {}; min_free_disk is {}",
                human(free),
                existing.display(),
                human(*need)
            ))),
            Ok(free) => f.passed.lines.push(format!(
                "{} free on the filesystem of {} (min_free_disk {})",
                human(free),
                existing.display(),
                human(*need)
            )),
            Err(e) => f.diags.push(at.diag(format!(
                "preflight: cannot read free space of {}: {e}",
                existing.display()
            ))),
        }
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
    let hint = read_only_hint(&e, p).unwrap_or_default();
    std::io::Error::new(e.kind(), format!("{}: {e}{hint}", p.display()))
}

/// What to add to an error about writing `path` when it is a read-only filesystem
/// (EROFS). Under the systemd unit that is `ProtectSystem=strict`, which leaves only the
/// unit's `ReadWritePaths=` writable, and the hint names the setting: a data or backup
/// directory elsewhere would otherwise fail with a bare "Read-only file system".
pub fn read_only_hint(e: &std::io::Error, path: &Path) -> Option<String> {
    (e.raw_os_error() == Some(libc::EROFS)).then(|| read_only_why(path))
}

fn read_only_why(path: &Path) -> String {
    // systemd sets INVOCATION_ID for every unit it starts.
    if std::env::var_os("INVOCATION_ID").is_some() {
        format!(
            "; {} is read-only under the unit's ProtectSystem=strict: add it to \
             ReadWritePaths= (systemctl edit berth)",
            path.display()
        )
    } else {
        format!("; {} is on a read-only filesystem", path.display())
    }
}

/// The problem with writing into `dir` (or creating it), when the filesystem that would
/// hold it is mounted read-only: read from the mount flags, changing nothing.
pub fn read_only_problem(dir: &Path) -> Option<String> {
    let existing = nearest_existing(dir);
    let st = rustix::fs::statvfs(&existing).ok()?;
    st.f_flag
        .contains(rustix::fs::StatVfsMountFlags::RDONLY)
        .then(|| format!("cannot be written{}", read_only_why(dir)))
}

/// Who holds `ip:port` for `protocol` on this host, or None when it is free: a TCP
/// listener, or any UDP socket bound to the port, on that address or a wildcard (or any
/// address, when `ip` is a wildcard). Read from the kernel's socket tables of berth's
/// network namespace (the host's: the unit keeps it). Two small fixed-format files; a
/// crate would bring more than it saves.
fn port_holder(ip: &str, port: u16, protocol: &str) -> std::io::Result<Option<String>> {
    let want: std::net::IpAddr = ip
        .parse()
        .map_err(|_| std::io::Error::other(format!("{ip:?} is not an IP address")))?;
    let (tables, listening_only) = match protocol {
        "udp" => (["/proc/net/udp", "/proc/net/udp6"], false),
        _ => (["/proc/net/tcp", "/proc/net/tcp6"], true),
    };
    for table in tables {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            // No IPv6 on this host.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{table}: {e}"))),
        };
        for (addr, state) in text.lines().skip(1).filter_map(socket_entry) {
            // TCP_LISTEN: a connected socket on the port (a client's, or an accepted
            // connection) does not stop Docker's listener.
            if listening_only && state != 0x0A {
                continue;
            }
            if addr.port() == port && clashes(want, addr.ip()) {
                let kind = if listening_only {
                    "a listener"
                } else {
                    "a socket"
                };
                return Ok(Some(format!("{kind} on {addr} holds it")));
            }
        }
    }
    Ok(None)
}

/// Whether binding `want` would clash with a socket bound to `held` on the same port.
fn clashes(want: std::net::IpAddr, held: std::net::IpAddr) -> bool {
    let canonical = |ip: std::net::IpAddr| ip.to_canonical();
    let (want, held) = (canonical(want), canonical(held));
    want.is_unspecified() || held.is_unspecified() || want == held
}

/// The local address and state of one line of `/proc/net/{tcp,udp}{,6}`:
/// `sl local_address rem_address st ...`, the address as hex words in the kernel's byte
/// order (`0100007F:1F90` is 127.0.0.1:8080).
fn socket_entry(line: &str) -> Option<(std::net::SocketAddr, u8)> {
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let state = u8::from_str_radix(fields.nth(1)?, 16).ok()?;
    let (ip, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in ip.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some((std::net::SocketAddr::new(ip, port), state))
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

    #[tokio::test]
    async fn a_service_that_would_be_the_container_berth_runs_in_is_refused_at_its_line() {
        use crate::runtime::{OwnContainer, fake::FakeRuntime};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("berth.toml");
        std::fs::write(
            &file,
            "[project]\nname = \"p\"\n\n[services.web]\nimage = \"x:1\"\n\n[services.db]\nimage = \"y:1\"\n",
        )
        .unwrap();
        let d = crate::spec::load(&file, &Default::default()).unwrap();
        let rt = FakeRuntime::new();
        let own = |name: &str, service: Option<&str>| OwnContainer {
            id: "ab".repeat(32),
            name: name.into(),
            project: service.map(|_| "p".to_string()),
            service: service.map(str::to_string),
            network_mode: "host".into(),
        };
        // On the host, or in a container that is none of the services: nothing to refuse.
        assert!(check(&rt, &d).await.is_ok());
        rt.set_own(Some(own("berth", Some("old"))));
        assert!(check(&rt, &d).await.is_ok());
        // By name: the service's container would be berth's.
        rt.set_own(Some(own("p-web", None)));
        let said = check(&rt, &d).await.unwrap_err().to_string();
        assert!(
            said.contains(
                "berth.toml:4:11: preflight: service \"web\" is the container berth runs in (p-web abababababab, by its container name \"p-web\")"
            ),
            "{said}"
        );
        assert!(!said.contains("\"db\""), "{said}");
        // By the project's labels.
        rt.set_own(Some(own("elsewhere", Some("db"))));
        let said = check(&rt, &d).await.unwrap_err().to_string();
        assert!(
            said.contains(
                "berth.toml:7:11: preflight: service \"db\" is the container berth runs in"
            ) && said.contains("by the labels berth.project=p and berth.service=db"),
            "{said}"
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(10 * 1024 * 1024 * 1024), "10.0 GiB");
    }

    #[test]
    fn a_listening_port_is_found_in_the_kernels_tables_without_binding_it() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let holder = port_holder("127.0.0.1", port, "tcp").unwrap();
        assert_eq!(
            holder.as_deref(),
            Some(format!("a listener on 127.0.0.1:{port} holds it").as_str())
        );
        // A wildcard publish clashes with it; another address does not; UDP is another
        // table.
        assert!(port_holder("0.0.0.0", port, "tcp").unwrap().is_some());
        assert!(port_holder("::", port, "tcp").unwrap().is_some());
        assert_eq!(port_holder("127.0.0.2", port, "tcp").unwrap(), None);
        assert_eq!(port_holder("127.0.0.1", port, "udp").unwrap(), None);
        // A connection to it holds a socket on another port, not the listener's.
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let client_port = c.local_addr().unwrap().port();
        assert_eq!(port_holder("127.0.0.1", client_port, "tcp").unwrap(), None);
        drop((c, l));
        assert_eq!(port_holder("127.0.0.1", port, "tcp").unwrap(), None);
    }

    #[test]
    fn a_bound_udp_socket_and_an_ipv6_wildcard_listener_hold_their_ports() {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        assert!(port_holder("0.0.0.0", port, "udp").unwrap().is_some());
        assert_eq!(port_holder("0.0.0.0", port, "tcp").unwrap(), None);
        // Premise: this host has IPv6 sockets.
        let Ok(l) = std::net::TcpListener::bind("[::]:0") else {
            return;
        };
        let port = l.local_addr().unwrap().port();
        assert_eq!(
            port_holder("0.0.0.0", port, "tcp").unwrap().as_deref(),
            Some(format!("a listener on [::]:{port} holds it").as_str())
        );
        assert!(port_holder("10.1.2.3", port, "tcp").unwrap().is_some());
    }

    #[test]
    fn the_kernels_socket_lines_are_read_in_its_byte_order() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            socket_entry(v4),
            Some(("127.0.0.1:8080".parse().unwrap(), 0x0A))
        );
        let v6 = "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1";
        assert_eq!(socket_entry(v6), Some(("[::1]:80".parse().unwrap(), 0x0A)));
        assert_eq!(socket_entry("  sl  local_address rem_address   st"), None);
    }

    #[test]
    fn a_read_only_filesystem_is_named_with_the_unit_setting_to_change() {
        let e = std::io::Error::from_raw_os_error(libc::EROFS);
        let hint = read_only_hint(&e, Path::new("/data/chroma")).unwrap();
        assert!(hint.contains("/data/chroma"), "{hint}");
        let other = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(read_only_hint(&other, Path::new("/x")), None);
        assert_eq!(
            read_only_problem(&std::env::temp_dir().join("berth-x")),
            None
        );
    }
}
