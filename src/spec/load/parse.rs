//! The small grammars inside desired-state values: ports, volumes, names, sizes and
//! versions. Pure functions, so they are unit-tested here.

use std::path::{Path, PathBuf};

use std::time::Duration;

use crate::spec::{Port, PullPolicy, Volume, duration};

/// "10GiB", "500MB", "1T", "4096": K/M/G/T and KiB... are powers of 1024, KB... of 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad size {text:?}: use a number and a unit, e.g. \"10GiB\""))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "KiB" => 1024.0,
        "M" | "MiB" => 1024.0 * 1024.0,
        "G" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        u => {
            return Err(format!(
                "bad size unit {u:?} in {text:?}: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ));
        }
    };
    Ok((n * mult) as u64)
}

/// "20.10" -> (20, 10); "24" -> (24, 0).
pub fn parse_version(text: &str) -> Option<(u64, u64)> {
    let mut it = text.trim().split('.');
    let major = it.next()?.parse().ok()?;
    let minor = match it.next() {
        Some(m) => m.parse().ok()?,
        None => 0,
    };
    Some((major, minor))
}

pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// A network berth will create (and own) for the project or a service.
pub(super) fn check_network_name(name: &str) -> Result<(), String> {
    if !valid_name(name) {
        return Err(format!("bad network name {name:?}"));
    }
    // Docker makes these itself on every host; berth can neither create nor own them, and
    // `host`/`none` are network modes, not networks a container joins beside others.
    if matches!(name, "bridge" | "host" | "none") {
        return Err(format!(
            "network {name:?} is one of Docker's predefined networks (bridge, host, none): berth creates and owns the networks it names, so choose another name"
        ));
    }
    Ok(())
}

/// Compose's `pull_policy` words, plus `every_<duration>` with berth's durations.
pub(super) fn parse_pull_policy(text: &str) -> Result<PullPolicy, String> {
    const ACCEPTED: &str = "use \"missing\", \"always\", \"never\", \"daily\", \"weekly\" or \"every_<duration>\" (e.g. \"every_6h\")";
    match text {
        "missing" => Ok(PullPolicy::Missing),
        "always" => Ok(PullPolicy::Always),
        "never" => Ok(PullPolicy::Never),
        "daily" => Ok(PullPolicy::Every(Duration::from_secs(24 * 3600))),
        "weekly" => Ok(PullPolicy::Every(Duration::from_secs(7 * 24 * 3600))),
        other => match other.strip_prefix("every_") {
            Some(d) => match duration::parse(d) {
                Ok(d) if !d.is_zero() => Ok(PullPolicy::Every(d)),
                Ok(_) => Err(format!(
                    "bad pull_policy {text:?}: the interval must be greater than 0"
                )),
                Err(why) => Err(format!("bad pull_policy {text:?}: {why}")),
            },
            None => Err(format!("bad pull_policy {text:?}: {ACCEPTED}")),
        },
    }
}

pub(super) fn valid_container_name(s: &str) -> bool {
    // ASCII is checked first: the prefix below is cut by bytes, and a cut inside a
    // multi-byte character would panic (a crash loop under systemd, `docs/design.md` §12).
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && s.len() >= 2
        && s.len() <= 128
        && s.get(..s.len().min(63)).is_some_and(valid_name)
}

pub(super) fn valid_project_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
}

pub(super) fn parse_port_number(s: &str, what: &str, full: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(n) => Err(format!(
            "{what} port {n} in {full:?} is out of range 1-65535"
        )),
        Err(_) => Err(format!(
            "bad port mapping {full:?}: {s:?} is not a port number (write \"HOST:CONTAINER\", e.g. \"8080:80\")"
        )),
    }
}

/// `CONTAINER`, `HOST:CONTAINER`, `IP:HOST:CONTAINER`, each with an optional `/tcp|/udp`.
pub(super) fn parse_port(text: &str) -> Result<Port, String> {
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((s, p)) if p == "tcp" || p == "udp" => (s, p.to_string()),
        Some((_, p)) => {
            return Err(format!(
                "bad protocol {p:?} in port {text:?}: use tcp or udp"
            ));
        }
        None => (text, "tcp".to_string()),
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (host_ip, host, container) = match parts.as_slice() {
        [c] => (None, None, *c),
        [c, h] => (None, Some(*h), *c),
        [c, h, ip] => (Some(ip.trim_matches(['[', ']']).to_string()), Some(*h), *c),
        _ => unreachable!(),
    };
    if let Some(ip) = &host_ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return Err(format!("bad host address {ip:?} in port {text:?}"));
    }
    Ok(Port {
        host_ip,
        host: host
            .map(|h| parse_port_number(h, "host", text))
            .transpose()?,
        container: parse_port_number(container, "container", text)?,
        protocol,
    })
}

/// `NAME:/path[:ro|:rw]` for a named volume, `./rel:/path` or `/abs:/path` for a bind.
pub(super) fn parse_volume(text: &str, base: &Path) -> Result<Volume, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, "rw"),
        [s, t, m] => (*s, *t, *m),
        _ => {
            return Err(format!(
                "bad volume {text:?}: write \"SOURCE:/container/path[:ro]\""
            ));
        }
    };
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        m => return Err(format!("bad volume mode {m:?} in {text:?}: use ro or rw")),
    };
    if !target.starts_with('/') {
        return Err(format!(
            "volume target {target:?} in {text:?} must be an absolute path"
        ));
    }
    let target = target.to_string();
    if source.starts_with('/') || source.starts_with('.') || source.starts_with('~') {
        let source = if let Some(rest) = source.strip_prefix("~/") {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(rest)
        } else {
            base.join(source)
        };
        let source = normalize(&source);
        Ok(Volume::Bind {
            source,
            target,
            read_only,
        })
    } else if valid_name(source) {
        Ok(Volume::Named {
            name: source.to_string(),
            target,
            read_only,
        })
    } else {
        Err(format!("bad volume name {source:?} in {text:?}"))
    }
}

/// Make a path absolute and drop `.` / `..` without touching the filesystem.
pub(super) fn normalize(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_like_compose() {
        assert_eq!(parse_port("8080:80").unwrap().host, Some(8080));
        let p = parse_port("127.0.0.1:5433:5432").unwrap();
        assert_eq!(
            (p.host_ip.as_deref(), p.host, p.container),
            (Some("127.0.0.1"), Some(5433), 5432)
        );
        assert_eq!(parse_port("53/udp").unwrap().protocol, "udp");
        assert!(parse_port("70000:80").unwrap_err().contains("out of range"));
        assert!(parse_port("x:80").is_err());
    }

    #[test]
    fn pull_policy_takes_compose_words_and_every_duration() {
        let day = Duration::from_secs(86400);
        assert_eq!(parse_pull_policy("missing"), Ok(PullPolicy::Missing));
        assert_eq!(parse_pull_policy("always"), Ok(PullPolicy::Always));
        assert_eq!(parse_pull_policy("never"), Ok(PullPolicy::Never));
        assert_eq!(parse_pull_policy("daily"), Ok(PullPolicy::Every(day)));
        assert_eq!(parse_pull_policy("weekly"), Ok(PullPolicy::Every(7 * day)));
        assert_eq!(
            parse_pull_policy("every_6h"),
            Ok(PullPolicy::Every(Duration::from_secs(6 * 3600)))
        );
        assert!(
            parse_pull_policy("every_0s")
                .unwrap_err()
                .contains("greater than 0")
        );
        assert!(parse_pull_policy("every_6").unwrap_err().contains("unit"));
        assert!(
            parse_pull_policy("if_not_present")
                .unwrap_err()
                .contains("\"weekly\"")
        );
    }

    #[test]
    fn predefined_networks_are_refused() {
        for n in ["host", "none", "bridge"] {
            assert!(check_network_name(n).unwrap_err().contains("predefined"));
        }
        assert_eq!(check_network_name("backend"), Ok(()));
    }

    #[test]
    fn volumes_tell_bind_from_named() {
        let base = Path::new("/srv/stack");
        assert!(matches!(
            parse_volume("pgdata:/var/lib/postgresql", base).unwrap(),
            Volume::Named { .. }
        ));
        match parse_volume("./data/pg:/data:ro", base).unwrap() {
            Volume::Bind {
                source, read_only, ..
            } => {
                assert_eq!(source, PathBuf::from("/srv/stack/data/pg"));
                assert!(read_only);
            }
            v => panic!("{v:?}"),
        }
        assert!(parse_volume("data:relative", base).is_err());
    }
}
