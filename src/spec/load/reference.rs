//! Docker image references, checked against the distribution/reference grammar
//! (`github.com/distribution/reference`, `reference.go`) as Docker's
//! `ParseNormalizedNamed` applies it:
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path-component [ "/" path-component ]*
//! domain     := host [ ":" port ]      host := domain-name | "[" IPv6 "]"
//! path-component := [a-z0-9]+ ( separator [a-z0-9]+ )*
//! separator  := "." | "_" | "__" | "-"+
//! tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex      algorithm := [A-Za-z][A-Za-z0-9]* ( [+._-] ... )*
//! ```
//!
//! No crate on crates.io does this without pulling in a registry client, so it is written
//! out here, small and tested. The check happens at load time so a typo is a
//! `FILE:LINE:COL` error instead of a failed pull halfway through a converge.

/// Why `text` is not an image reference Docker would accept; `Ok` when it is.
pub(super) fn check(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("empty image reference".into());
    }
    let (rest, digest) = match text.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (text, None),
    };
    if let Some(d) = digest {
        check_digest(d)?;
    }
    // A tag is what follows the last ':' after the last '/' (a ':' before that is a port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        check_tag(t)?;
    }
    check_name(name)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the repository name is empty".into());
    }
    if name.len() > 255 {
        return Err("the repository name is longer than 255 characters".into());
    }
    // Docker reads the first component as a registry only when it looks like one.
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    };
    if let Some(d) = domain {
        check_domain(d)?;
    }
    if path.len() == 64 && path.chars().all(|c| c.is_ascii_hexdigit()) && domain.is_none() {
        return Err("a 64-character hexadecimal string is an image ID, not a repository".into());
    }
    for component in path.split('/') {
        check_path_component(component)?;
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("registry {domain:?}: unclosed '['"))?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "registry {domain:?}: {ip:?} is not an IPv6 address"
            ));
        }
        match after {
            "" => (None, None),
            a => match a.strip_prefix(':') {
                Some(p) => (None, Some(p)),
                None => return Err(format!("registry {domain:?}: junk after ']'")),
            },
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(format!(
                    "registry {domain:?}: {label:?} is not a valid host name label"
                ));
            }
        }
    }
    if let Some(p) = port
        && (p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("registry {domain:?}: port {p:?} is not a number"));
    }
    Ok(())
}

fn check_path_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("empty path component (two '/' in a row, or a leading or trailing '/')".into());
    }
    if c.chars().any(|ch| ch.is_ascii_uppercase()) {
        return Err(format!("repository name component {c:?} must be lowercase"));
    }
    if let Some(bad) = c
        .chars()
        .find(|ch| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(*ch)))
    {
        return Err(format!(
            "repository name component {c:?} holds {bad:?}: use a-z, 0-9, '.', '_' and '-'"
        ));
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(format!(
            "repository name component {c:?} must start and end with a lowercase letter or digit"
        ));
    }
    // Between alphanumeric runs: exactly ".", "_" or "__", or any number of "-".
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(format!(
                "repository name component {c:?}: {sep:?} is not a separator Docker allows (\".\", \"_\", \"__\" or dashes)"
            ));
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = tag.len() <= 128
        && tag.starts_with(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad tag {tag:?}: use up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
        ))
    }
}

fn check_digest(digest: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("bad digest {digest:?}: {why}"));
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return bad("expected ALGORITHM:HEX, e.g. sha256:<64 hex digits>");
    };
    let algorithm_ok = algorithm.split(['+', '.', '_', '-']).all(|c| {
        c.starts_with(|ch: char| ch.is_ascii_alphabetic())
            && c.chars().all(|ch| ch.is_ascii_alphanumeric())
    });
    if !algorithm_ok {
        return bad("bad algorithm");
    }
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return bad("the hash is not hexadecimal");
    }
    let want = match algorithm {
        "sha256" => Some(64),
        "sha384" => Some(96),
        "sha512" => Some(128),
        _ => None,
    };
    match want {
        Some(n) if hex.len() != n => bad(&format!("{algorithm} takes {n} hex digits")),
        None if hex.len() < 32 => bad("the hash needs at least 32 hex digits"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    const SHA: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn references_docker_accepts_are_accepted() {
        for r in [
            "nginx",
            "nginx:alpine",
            "nginx:1.25.3-alpine",
            "library/nginx:latest",
            "docker.io/library/nginx",
            "ghcr.io/owner/repo/sub:v1_2",
            "localhost/app",
            "localhost:5000/app:dev",
            "registry.example.com:5000/team/app",
            "[::1]:5000/app",
            "my_app",
            "my__app",
            "my---app",
            "a.b_c-d",
            "Registry.Example.COM/app",
            "berth-fixture:test",
        ] {
            assert_eq!(check(r), Ok(()), "{r}");
        }
        for r in [format!("app@{SHA}"), format!("postgres:15@{SHA}")] {
            assert_eq!(check(&r), Ok(()), "{r}");
        }
    }

    #[test]
    fn references_docker_rejects_are_rejected() {
        for (r, why) in [
            ("", "empty"),
            ("Nginx", "lowercase"),
            ("library/Nginx", "lowercase"),
            ("foo::bar", "holds ':'"),
            ("foo:", "bad tag"),
            ("foo:-x", "bad tag"),
            ("foo:a/b", "not a number"),
            ("foo:tag!", "bad tag"),
            ("foo//bar", "empty path component"),
            ("/foo", "empty"),
            ("foo/", "empty path component"),
            ("foo@sha256:abc", "64 hex digits"),
            ("foo@sha256:zz", "not hexadecimal"),
            ("foo@md5", "ALGORITHM:HEX"),
            ("foo@1sha:0123456789abcdef0123456789abcdef", "bad algorithm"),
            ("-foo", "start and end"),
            ("foo-", "start and end"),
            ("foo..bar", "separator"),
            ("foo___bar", "separator"),
            ("foo._bar", "separator"),
            ("my app", "holds ' '"),
            ("exa_mple.com/app", "host name label"),
            ("example.com:x/app", "not a number"),
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "image ID",
            ),
        ] {
            let err = check(r).expect_err(r);
            assert!(err.contains(why), "{r}: {err}");
        }
        let long_tag = format!("app:{}", "a".repeat(129));
        assert!(check(&long_tag).is_err());
        let long_name = "a".repeat(256);
        assert!(check(&long_name).unwrap_err().contains("255"));
    }
}
