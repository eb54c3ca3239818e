//! The Compose model, as `docker compose config` would see it: the `-f` files merged in
//! order, each service's `extends` resolved, and every value interpolated from the
//! environment and the env file (`--env-file`, else `.env` beside the first file), the
//! environment winning, as in Compose. A value keeps its text as written beside the
//! interpolated one, so the translation can keep `${VAR}` references where berth's TOML
//! can hold them.
//!
//! Everything wrong with the input is a [`Diagnostic`] at `FILE:LINE:COL` of the key or
//! value at fault: invalid YAML, an unknown top-level key, an `extends` cycle, a
//! `${VAR:?message}` whose variable has no value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::yaml::{Kind, Node, Pos, parse};
use crate::diag::Diagnostic;
use crate::spec::interpolate::interpolate;

/// What `berth import` was asked to read.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub files: Vec<PathBuf>,
    pub env_file: Option<PathBuf>,
}

/// The variables interpolation reads: the process environment over the env file.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// The env file read, if any.
    pub file: Option<PathBuf>,
    pub from_file: HashMap<String, String>,
    pub process: HashMap<String, String>,
}

impl Env {
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.process
            .get(name)
            .or_else(|| self.from_file.get(name))
            .cloned()
    }
}

/// One service after merging and `extends`.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    /// Where its name was written (the first file that has it).
    pub pos: Pos,
    /// Its mapping.
    pub node: Node,
}

/// A note on the input that is not about one service key (the report shows it).
#[derive(Debug, Clone)]
pub struct Note {
    pub pos: Pos,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct Compose {
    pub files: Vec<PathBuf>,
    /// The first file's directory: relative paths are from here.
    pub dir: PathBuf,
    pub name: Option<Node>,
    /// In the order first written.
    pub services: Vec<Service>,
    /// `networks`, `volumes`, `secrets`, `configs`: merged across the files.
    pub top: Vec<(String, Node)>,
    pub env: Env,
    /// Top-level keys read but not translated (`version`, `x-…`, `include`), and
    /// variables that had no value (Compose would use an empty string).
    pub notes: Vec<Note>,
}

const TOP_KEYS: &[&str] = &[
    "version", "name", "services", "networks", "volumes", "secrets", "configs", "include",
];

/// Read and merge the Compose files.
pub fn load(opts: &Options, process: HashMap<String, String>) -> Result<Compose, Diagnostic> {
    let first = opts
        .files
        .first()
        .ok_or_else(|| Diagnostic::file(Path::new("-"), "no Compose file given"))?;
    let dir = first
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let env = read_env(opts.env_file.clone(), &dir, process)?;
    let mut c = Compose {
        files: opts.files.clone(),
        dir: dir.clone(),
        name: None,
        services: Vec::new(),
        top: Vec::new(),
        env,
        notes: Vec::new(),
    };
    let mut roots = Vec::new();
    for file in &opts.files {
        let root = read_file(file, &c.env, &mut c.notes)?;
        check_top(&root, &mut c.notes)?;
        roots.push((file.clone(), root));
    }
    // Each file's services with their `extends` resolved, then merged in file order.
    for (file, root) in &roots {
        if let Some(n) = root.get("name") {
            c.name = Some(n.clone());
        }
        for key in ["networks", "volumes", "secrets", "configs"] {
            if let Some(v) = root.get(key) {
                match c.top.iter_mut().find(|(k, _)| k == key) {
                    Some((_, old)) => *old = merge(old, v),
                    None => c.top.push((key.to_string(), v.clone())),
                }
            }
        }
        let Some(services) = root.get("services") else {
            continue;
        };
        if services.is_null() {
            continue;
        }
        if services.map().is_none() {
            return Err(services.pos.diag(format!(
                "services must be a mapping, not {}",
                services.what()
            )));
        }
        for (name, key, node) in services.entries() {
            let mut seen = Vec::new();
            let node = extended(file, root, name, node, &c.env, &mut seen, &mut c.notes)?;
            match c.services.iter_mut().find(|s| s.name == name) {
                Some(s) => s.node = merge(&s.node, &node),
                None => c.services.push(Service {
                    name: name.to_string(),
                    pos: key.pos.clone(),
                    node,
                }),
            }
        }
    }
    check_cycles(&c)?;
    Ok(c)
}

/// A `depends_on` cycle is an error at the dependency that closes it.
fn check_cycles(c: &Compose) -> Result<(), Diagnostic> {
    let deps = |name: &str| -> Vec<(String, Pos)> {
        c.services
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.node.get("depends_on"))
            .map(as_map)
            .map(|m| {
                m.entries()
                    .map(|(d, k, _)| (d.to_string(), k.pos.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    // 0 unvisited, 1 on the path, 2 done.
    let mut state: HashMap<String, u8> = HashMap::new();
    fn visit(
        name: &str,
        path: &mut Vec<String>,
        state: &mut HashMap<String, u8>,
        deps: &dyn Fn(&str) -> Vec<(String, Pos)>,
    ) -> Result<(), Diagnostic> {
        state.insert(name.to_string(), 1);
        path.push(name.to_string());
        for (d, pos) in deps(name) {
            match state.get(&d).copied().unwrap_or(0) {
                1 => {
                    let from = path.iter().position(|p| *p == d).unwrap_or(0);
                    let mut cycle = path[from..].to_vec();
                    cycle.push(d.clone());
                    return Err(
                        pos.diag(format!("depends_on makes a cycle: {}", cycle.join(" → ")))
                    );
                }
                0 => visit(&d, path, state, deps)?,
                _ => {}
            }
        }
        path.pop();
        state.insert(name.to_string(), 2);
        Ok(())
    }
    for s in &c.services {
        if state.get(&s.name).copied().unwrap_or(0) == 0 {
            visit(&s.name, &mut Vec::new(), &mut state, &deps)?;
        }
    }
    Ok(())
}

fn read_env(
    given: Option<PathBuf>,
    dir: &Path,
    process: HashMap<String, String>,
) -> Result<Env, Diagnostic> {
    let path = match given {
        Some(p) => Some(p),
        None => Some(dir.join(".env")).filter(|p| p.is_file()),
    };
    let mut from_file = HashMap::new();
    if let Some(p) = &path {
        let text = std::fs::read_to_string(p)
            .map_err(|e| Diagnostic::file(p, format!("env file cannot be read: {e}")))?;
        for (i, line) in crate::spec::env_lines(&text) {
            let (k, v) = line.map_err(|()| Diagnostic {
                file: p.clone(),
                line: i + 1,
                col: 1,
                message: "expected KEY=VALUE".into(),
            })?;
            from_file.insert(k.to_string(), v.to_string());
        }
    }
    Ok(Env {
        file: path,
        from_file,
        process,
    })
}

/// One file, parsed and interpolated.
fn read_file(file: &Path, env: &Env, notes: &mut Vec<Note>) -> Result<Node, Diagnostic> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Diagnostic::file(file, format!("cannot be read: {e}")))?;
    let mut root = parse(file, &text)?;
    if !root.is_null() && root.map().is_none() {
        return Err(root.pos.diag(format!(
            "a Compose file is a mapping (services:, networks:, …), not {}",
            root.what()
        )));
    }
    interpolate_tree(&mut root, env, notes)?;
    Ok(root)
}

fn check_top(root: &Node, notes: &mut Vec<Note>) -> Result<(), Diagnostic> {
    for (k, key, _) in root.entries() {
        if k.starts_with("x-") {
            notes.push(Note {
                pos: key.pos.clone(),
                text: format!("{k}: an extension field, read for its anchors only"),
            });
        } else if k == "version" {
            notes.push(Note {
                pos: key.pos.clone(),
                text: "version: obsolete in Compose, and not needed by berth".into(),
            });
        } else if k == "include" {
            notes.push(Note {
                pos: key.pos.clone(),
                text: "include: not translated: import the included files with more -f".into(),
            });
        } else if !TOP_KEYS.contains(&k) {
            return Err(key.pos.diag(format!(
                "unknown top-level key {k:?}: a Compose file has services, networks, volumes, secrets, configs, name, version, include and x-… extension fields"
            )));
        }
    }
    Ok(())
}

/// Interpolate every value (not keys) in place, keeping the text as written. A `${VAR}`
/// without a value is what Compose replaces by an empty string with a warning: the same
/// here, noted, and written back as `${VAR:-}` so berth (which refuses an unset
/// variable) reads it the same way.
fn interpolate_tree(n: &mut Node, env: &Env, notes: &mut Vec<Note>) -> Result<(), Diagnostic> {
    match &mut n.kind {
        Kind::Scalar { text, raw, .. } if text.contains('$') => {
            // Compose reads `$VAR` as `${VAR}`; berth only the braced form.
            *text = braced(text);
            let mut empty: Vec<String> = Vec::new();
            let value = loop {
                let lookup = |name: &str| {
                    if empty.iter().any(|e| e == name) {
                        Some(String::new())
                    } else {
                        env.lookup(name)
                    }
                };
                match interpolate(text, &lookup) {
                    Ok(v) => break v,
                    Err(e) => match e.unset {
                        Some(name) if !empty.contains(&name) => empty.push(name),
                        _ => return Err(n.pos.diag(e.message)),
                    },
                }
            };
            let mut written = text.clone();
            for name in &empty {
                written = written.replace(&format!("${{{name}}}"), &format!("${{{name}:-}}"));
                notes.push(Note {
                    pos: n.pos.clone(),
                    text: format!(
                        "${{{name}}} has no value: Compose uses an empty string (with a warning); written as ${{{name}:-}}, which berth reads the same way"
                    ),
                });
            }
            *raw = Some(written);
            *text = value;
        }
        Kind::Seq(items) => {
            for i in items {
                interpolate_tree(i, env, notes)?;
            }
        }
        Kind::Map(entries) => {
            for (_, v) in entries {
                interpolate_tree(v, env, notes)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `$VAR` written as `${VAR}` (`$$` and `${` left as they are).
fn braced(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('$') => {
                out.push_str("$$");
                chars.next();
            }
            Some(n) if n.is_ascii_alphabetic() || *n == '_' => {
                out.push_str("${");
                while let Some(n) = chars.peek().copied() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        out.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push('}');
            }
            _ => out.push('$'),
        }
    }
    out
}

/// A service with its `extends` chain resolved: the base (from this file or the one
/// `extends.file` names), with this service merged over it.
fn extended(
    file: &Path,
    root: &Node,
    name: &str,
    node: &Node,
    env: &Env,
    seen: &mut Vec<(PathBuf, String)>,
    notes: &mut Vec<Note>,
) -> Result<Node, Diagnostic> {
    if node.map().is_none() {
        return Err(node.pos.diag(format!(
            "service {name:?} must be a mapping, not {}",
            node.what()
        )));
    }
    let Some(ext) = node.get("extends") else {
        return Ok(node.clone());
    };
    let here = (file.to_path_buf(), name.to_string());
    if seen.contains(&here) {
        return Err(ext.pos.diag(format!(
            "extends makes a cycle: {} → {name}",
            seen.iter()
                .map(|(_, s)| s.as_str())
                .collect::<Vec<_>>()
                .join(" → ")
        )));
    }
    seen.push(here);
    let (base_name, base_file) = match (ext.str(), ext.get("service")) {
        (Some(s), _) => (s.to_string(), None),
        (None, Some(s)) => (
            s.str().unwrap_or_default().to_string(),
            ext.get("file").and_then(Node::str).map(PathBuf::from),
        ),
        _ => {
            return Err(ext
                .pos
                .diag("extends takes a service name, or { service, file }"));
        }
    };
    let (other_root, other_file);
    let (base_root, base_path) = match base_file {
        None => (root, file.to_path_buf()),
        Some(f) => {
            let dir = file.parent().unwrap_or(Path::new("."));
            other_file = dir.join(f);
            other_root = read_file(&other_file, env, notes)?;
            (&other_root, other_file.clone())
        }
    };
    let base = base_root
        .get("services")
        .and_then(|s| s.get(&base_name))
        .ok_or_else(|| {
            ext.pos.diag(format!(
                "extends: no service {base_name:?} in {}",
                base_path.display()
            ))
        })?;
    let mut base = extended(&base_path, base_root, &base_name, base, env, seen, notes)?;
    let from = base_path.parent().unwrap_or(Path::new("."));
    let to = file.parent().unwrap_or(Path::new("."));
    if from != to {
        rebase(&mut base, from);
    }
    let mut own = node.clone();
    if let Kind::Map(entries) = &mut own.kind {
        entries.retain(|(k, _)| k.str() != Some("extends"));
    }
    Ok(merge(&base, &own))
}

/// A service read from another file's directory: its relative paths made absolute, as
/// Compose resolves them against the file that writes them.
fn rebase(service: &mut Node, dir: &Path) {
    let abs = |p: &str| -> Option<String> {
        (p.starts_with("./") || p.starts_with("../") || p == ".")
            .then(|| dir.join(p).display().to_string())
    };
    let Kind::Map(entries) = &mut service.kind else {
        return;
    };
    for (k, v) in entries {
        match (k.str().unwrap_or_default(), &mut v.kind) {
            ("build" | "env_file", Kind::Scalar { text, raw, .. }) => {
                if let Some(a) = abs(text) {
                    *text = a;
                    *raw = None;
                }
            }
            ("build", Kind::Map(b)) => {
                for (bk, bv) in b {
                    if bk.str() == Some("context")
                        && let Kind::Scalar { text, raw, .. } = &mut bv.kind
                        && let Some(a) = abs(text)
                    {
                        *text = a;
                        *raw = None;
                    }
                }
            }
            ("volumes", Kind::Seq(items)) => {
                for item in items {
                    if let Kind::Scalar { text, raw, .. } = &mut item.kind
                        && let Some((src, rest)) = text.split_once(':')
                        && let Some(a) = abs(src)
                    {
                        *text = format!("{a}:{rest}");
                        *raw = None;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Keys whose lists are appended to across files (the rest are replaced, or merged
/// when they are mappings).
const APPENDED: &[&str] = &[
    "ports",
    "expose",
    "dns",
    "dns_search",
    "env_file",
    "external_links",
    "cap_add",
    "cap_drop",
    "volumes",
    "devices",
    "secrets",
    "configs",
    "extra_hosts",
    "profiles",
    "security_opt",
    "tmpfs",
];
/// Keys that are mappings in one spelling and `KEY=VALUE` (or name) lists in the other:
/// merged as mappings.
const AS_MAP: &[&str] = &[
    "environment",
    "labels",
    "depends_on",
    "networks",
    "build_args",
];

/// `over` merged onto `base`, as Compose merges a file onto the one before it (and a
/// service onto the one it extends): mappings key by key, the lists of [`APPENDED`]
/// appended (without repeats), [`AS_MAP`] lists as mappings, anything else replaced.
/// `!reset` removes a key, `!override` replaces it whole.
pub fn merge(base: &Node, over: &Node) -> Node {
    let (Some(b), Some(o)) = (base.map(), over.map()) else {
        return over.clone();
    };
    let mut out: Vec<(Node, Node)> = b.to_vec();
    for (k, v) in o {
        let key = k.str().unwrap_or_default();
        let at = out.iter().position(|(e, _)| e.str() == Some(key));
        match (v.tag.as_deref(), at) {
            (Some("reset"), Some(i)) => {
                out.remove(i);
            }
            (Some("reset"), None) => {}
            (Some("override"), Some(i)) | (_, Some(i)) if v.tag.as_deref() == Some("override") => {
                out[i].1 = v.clone()
            }
            (_, Some(i)) => {
                let old = &out[i].1;
                let merged = if AS_MAP.contains(&key) {
                    merge(&as_map(old), &as_map(v))
                } else if APPENDED.contains(&key) {
                    appended(old, v)
                } else {
                    merge(old, v)
                };
                out[i].1 = merged;
            }
            (_, None) => out.push((k.clone(), v.clone())),
        }
    }
    Node {
        kind: Kind::Map(out),
        pos: base.pos.clone(),
        tag: None,
    }
}

fn appended(old: &Node, more: &Node) -> Node {
    let (Some(a), Some(b)) = (old.seq(), more.seq()) else {
        return more.clone();
    };
    let mut items = a.to_vec();
    for i in b {
        let same = |x: &Node| x.str().is_some() && x.str() == i.str();
        if !items.iter().any(same) {
            items.push(i.clone());
        }
    }
    Node {
        kind: Kind::Seq(items),
        pos: old.pos.clone(),
        tag: None,
    }
}

/// A `KEY=VALUE` (or bare name) list as a mapping; a mapping as it is.
pub fn as_map(n: &Node) -> Node {
    let Some(items) = n.seq() else {
        return n.clone();
    };
    let entries = items
        .iter()
        .map(|i| {
            let text = i.str().unwrap_or_default();
            let raw = i.raw().unwrap_or_default();
            let (k, v) = match text.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (text.to_string(), None),
            };
            let raw_v = raw.split_once('=').map(|(_, v)| v.to_string());
            let key = Node {
                kind: Kind::Scalar {
                    text: k,
                    raw: None,
                    quoted: false,
                },
                pos: i.pos.clone(),
                tag: None,
            };
            let value = Node {
                kind: match v {
                    Some(text) => Kind::Scalar {
                        raw: raw_v.filter(|r| *r != text),
                        text,
                        quoted: true,
                    },
                    None => Kind::Null,
                },
                pos: i.pos.clone(),
                tag: None,
            };
            (key, value)
        })
        .collect();
    Node {
        kind: Kind::Map(entries),
        pos: n.pos.clone(),
        tag: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn load_files(files: Vec<PathBuf>, env: &[(&str, &str)]) -> Result<Compose, Diagnostic> {
        let process = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load(
            &Options {
                files,
                env_file: None,
            },
            process,
        )
    }

    #[test]
    fn files_merge_in_order_and_extends_resolves() {
        let t = tempfile::tempdir().unwrap();
        let a = write(
            t.path(),
            "compose.yml",
            "services:\n  base:\n    image: app:1\n    environment: [A=1, B=2]\n    ports: ['80:80']\n  web:\n    extends: base\n    environment:\n      B: '3'\n",
        );
        let b = write(
            t.path(),
            "override.yml",
            "services:\n  web:\n    ports: ['443:443']\n    image: app:2\n",
        );
        let c = load_files(vec![a, b], &[]).unwrap();
        let web = &c.services.iter().find(|s| s.name == "web").unwrap().node;
        assert_eq!(web.get("image").unwrap().str(), Some("app:2"));
        let env = web.get("environment").unwrap();
        assert_eq!(env.get("A").unwrap().str(), Some("1"));
        assert_eq!(env.get("B").unwrap().str(), Some("3"));
        let ports: Vec<_> = web
            .get("ports")
            .unwrap()
            .seq()
            .unwrap()
            .iter()
            .map(|p| p.str().unwrap())
            .collect();
        assert_eq!(ports, ["80:80", "443:443"]);
        assert!(web.get("extends").is_none());
    }

    #[test]
    fn interpolation_keeps_what_was_written_and_env_wins_over_the_env_file() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), ".env", "TAG=from-file\nPORT=8080\n");
        let a = write(
            t.path(),
            "compose.yml",
            "services:\n  web:\n    image: app:${TAG}\n    ports: ['${PORT}:80']\n    environment:\n      X: ${NOPE}\n",
        );
        let c = load_files(vec![a], &[("TAG", "from-env")]).unwrap();
        let web = &c.services[0].node;
        let image = web.get("image").unwrap();
        assert_eq!(image.str(), Some("app:from-env"));
        assert_eq!(image.raw(), Some("app:${TAG}"));
        assert_eq!(
            web.get("ports").unwrap().seq().unwrap()[0].str(),
            Some("8080:80")
        );
        let x = web.get("environment").unwrap().get("X").unwrap();
        assert_eq!((x.str(), x.raw()), (Some(""), Some("${NOPE:-}")));
        assert!(
            c.notes
                .iter()
                .any(|n| n.text.contains("${NOPE} has no value"))
        );
    }

    #[test]
    fn bad_input_is_located() {
        let t = tempfile::tempdir().unwrap();
        let a = write(
            t.path(),
            "c.yml",
            "services:\n  web:\n    image: ${NEED:?set NEED}\n",
        );
        let e = load_files(vec![a], &[]).unwrap_err();
        assert_eq!((e.line, e.col), (3, 12), "{e}");
        assert!(e.message.contains("set NEED"), "{e}");
        let a = write(t.path(), "d.yml", "services: {}\nvolumez: {}\n");
        let e = load_files(vec![a], &[]).unwrap_err();
        assert_eq!((e.line, e.col), (2, 1), "{e}");
        assert!(e.message.contains("unknown top-level key"), "{e}");
        let a = write(
            t.path(),
            "e.yml",
            "services:\n  a:\n    extends: b\n  b:\n    extends: a\n",
        );
        let e = load_files(vec![a], &[]).unwrap_err();
        assert!(e.message.contains("cycle"), "{e}");
    }
}
