//! `berth logs`: the project's containers' output, as `docker compose logs` shows it: a
//! `name |` prefix per service, padded to one width and coloured per service on a
//! terminal, plain `name | line` otherwise. `-f` follows, also the containers a converge
//! creates meanwhile, until Ctrl-C. `--generation N` shows instead what was captured of
//! generation N's failed or dead containers (docs/design.md §13), from the state store.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cmd::{FileArgs, connect, load};
use crate::exit::OK as EXIT_OK;
use crate::logs::{Request, Shown};
use crate::runtime::LogOptions;
use crate::shutdown::Shutdown;
use crate::store::{Cause, Evidence, Store, format_ms};

/// `berth logs`'s flags. `-f` is `--follow` here, as in `docker logs` and `docker compose
/// logs`; the desired state is named with `--file` (or `BERTH_FILE`).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Services to show (default: every container of the project).
    pub services: Vec<String>,
    /// Keep showing what the containers write, and the containers that start meanwhile
    /// (a recreated service's new one), until Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines written since then: a duration back from now (`10m`, `1h30m`) or a
    /// time (`2026-12-07T10:00:00Z`).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<SystemTime>,
    /// Only the last N lines of each container (`all`: every line).
    #[arg(long, value_parser = parse_tail)]
    pub tail: Option<Tail>,
    /// Show when the engine received each line.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Never colour the prefixes (also when `NO_COLOR` is set, or not on a terminal).
    #[arg(long)]
    pub no_color: bool,
    /// Show what was captured of generation N's failed or dead containers (their last
    /// log lines and how they ended), from the state store, instead of the engine's logs.
    #[arg(long, value_name = "N", conflicts_with_all = ["follow", "since", "tail", "timestamps"])]
    pub generation: Option<i64>,
    /// Desired state: a TOML file or a directory of *.toml files.
    #[arg(long = "file", env = "BERTH_FILE", default_value = "desired-state")]
    pub file: PathBuf,
    /// Enable services of this profile (repeatable), besides [project].profiles.
    #[arg(long = "profile")]
    pub profiles: Vec<String>,
    /// Leave this service out (repeatable, or comma-separated).
    #[arg(long = "exclude", value_delimiter = ',')]
    pub exclude: Vec<String>,
}

/// `--tail`: a number of lines, or all of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tail(pub Option<usize>);

fn parse_tail(s: &str) -> Result<Tail, String> {
    if s == "all" {
        return Ok(Tail(None));
    }
    s.parse()
        .map(|n| Tail(Some(n)))
        .map_err(|_| format!("{s:?} is not a number of lines (or `all`)"))
}

/// `--since`: `10m` back from now, or an RFC 3339 time.
fn parse_since(s: &str) -> Result<SystemTime, String> {
    if let Ok(back) = humantime::parse_duration(s) {
        return Ok(SystemTime::now()
            .checked_sub(back)
            .unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        format!("{s:?} is neither a duration (`10m`) nor a time (`2026-12-07T10:00:00Z`)")
    })
}

pub async fn run(args: Args, state_path: &Path) -> anyhow::Result<i32> {
    let colour = !args.no_color && colour_wanted();
    if let Some(generation) = args.generation {
        return evidence(generation, &args.services, state_path, colour).await;
    }
    let file_args = FileArgs {
        file: args.file.clone(),
        profiles: args.profiles.clone(),
        exclude: args.exclude.clone(),
    };
    let d = match load(&file_args) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let options = LogOptions {
        follow: args.follow,
        since: args.since,
        tail: args.tail.and_then(|t| t.0),
    };
    let request = Request::new(&d, &args.services, options)?;
    let engine = connect().await?;
    // Under engine = "swarm": the tasks that run on this node (docs/swarm.md).
    let rt = crate::swarm::local::Local::of(&engine, &d).await?;
    let names: Vec<&str> = if request.services.is_empty() {
        d.services.keys().map(String::as_str).collect()
    } else {
        request.services.iter().map(String::as_str).collect()
    };
    let mut prefix = Prefixer::new(names, colour);
    let shutdown = Shutdown::on_signals();
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    crate::logs::stream(&rt, &request, &d.redactor(), &shutdown, |line| {
        match writeln!(out, "{}", prefix.line(&line, args.timestamps)) {
            Ok(()) => ControlFlow::Continue(()),
            // The reader went away (`berth logs | head`): nothing more to show.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ControlFlow::Break(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    })
    .await?;
    if let Some(e) = failed {
        anyhow::bail!("writing the logs to stdout: {e}");
    }
    Ok(EXIT_OK)
}

/// `berth logs --generation N [SERVICE…]`: a header per container captured, then its
/// lines behind the same prefix as the engine's logs.
async fn evidence(
    generation: i64,
    services: &[String],
    state_path: &Path,
    colour: bool,
) -> anyhow::Result<i32> {
    let store = Store::open(state_path).await?;
    let mut found = None;
    for project in store.projects().await? {
        if let Some(g) = store.get(&project, generation).await? {
            found = Some(g);
            break;
        }
    }
    let Some(g) = found else {
        anyhow::bail!(
            "generation {generation} does not exist in the state store {}",
            state_path.display()
        );
    };
    let all = store.evidence(generation).await?;
    if all.is_empty() {
        anyhow::bail!(
            "generation {generation} of project {:?} ({}) has no evidence: it is kept only when a container fails its gate or dies",
            g.project,
            g.outcome
        );
    }
    let shown: Vec<&Evidence> = all
        .iter()
        .filter(|e| services.is_empty() || services.contains(&e.service))
        .collect();
    if shown.is_empty() {
        let kept: BTreeSet<&str> = all.iter().map(|e| e.service.as_str()).collect();
        anyhow::bail!(
            "generation {generation} has no evidence of {} (it has: {})",
            services.join(", "),
            kept.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    // Kept already redacted; redacted again with the generation's own secrets, as
    // `history` does its reasons: what reaches the screen is never only the capture's word.
    let redactor = g.desired().map(|d| d.redactor()).unwrap_or_default();
    let mut prefix = Prefixer::new(shown.iter().map(|e| e.service.as_str()), colour);
    let mut out = std::io::stdout().lock();
    for e in shown {
        let head = format!(
            "{}{}{}",
            prefix.colour_start(&e.service),
            header(e),
            prefix.colour_end()
        );
        let mut lines = vec![head];
        for l in &e.lines {
            let text = crate::logs::safe_text(&redactor, l);
            lines.push(format!("{}{text}", prefix.prefix(&e.service)));
        }
        for line in lines {
            match writeln!(out, "{line}") {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(EXIT_OK),
                Err(e) => anyhow::bail!("writing the evidence to stdout: {e}"),
            }
        }
    }
    Ok(EXIT_OK)
}

/// `== web (container p-web, gate failed, exited code 3, captured 2026-12-07 10:00:00 UTC)`.
fn header(e: &Evidence) -> String {
    let why = match e.why {
        Cause::GateFailed => "gate failed",
        Cause::Died => "died",
    };
    let ended = match (e.running, e.exit_code) {
        (true, _) => "still running".to_string(),
        (false, Some(code)) if e.oom_killed => format!("exited code {code}, OOM-killed"),
        (false, Some(code)) => format!("exited code {code}"),
        (false, None) if e.oom_killed => "OOM-killed".to_string(),
        (false, None) => "not running".to_string(),
    };
    format!(
        "== {} (container {}, {why}, {ended}, captured {})",
        crate::text::escaped(&e.service),
        crate::text::escaped(&e.container),
        format_ms(e.captured_ms)
    )
}

/// Colours on a terminal, unless `NO_COLOR` asks for none (no-color.org).
fn colour_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The colours of the prefixes, in the order services get them (docker compose's:
/// cyan, yellow, green, magenta, blue, then their bright forms).
const PALETTE: [&str; 10] = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

/// How each line is introduced: `name |`, names padded to the longest one known at the
/// start; on a terminal, the prefix in its service's colour.
pub struct Prefixer {
    width: usize,
    colour: bool,
    /// Each service's colour, given in order of first sight (the known names first).
    colours: BTreeMap<String, &'static str>,
}

impl Prefixer {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>, colour: bool) -> Prefixer {
        let mut p = Prefixer {
            width: 0,
            colour,
            colours: BTreeMap::new(),
        };
        for name in names {
            p.width = p.width.max(name.chars().count());
            p.colour_of(name);
        }
        p
    }

    fn colour_of(&mut self, service: &str) -> &'static str {
        let next = PALETTE[self.colours.len() % PALETTE.len()];
        self.colours.entry(service.to_string()).or_insert(next)
    }

    /// Where a header in `service`'s colour begins (nothing without colours).
    fn colour_start(&mut self, service: &str) -> String {
        if self.colour {
            format!("\x1b[{}m", self.colour_of(service))
        } else {
            String::new()
        }
    }

    /// Where a coloured header ends.
    fn colour_end(&self) -> &'static str {
        if self.colour { "\x1b[0m" } else { "" }
    }

    /// The prefix of a line of `service`: `web   | `.
    pub fn prefix(&mut self, service: &str) -> String {
        // The service comes from a container's label: escaped like its words.
        let name = crate::text::escaped(service);
        let padded = format!("{name:<width$} |", width = self.width);
        if self.colour {
            let c = self.colour_of(service);
            format!("\x1b[{c}m{padded}\x1b[0m ")
        } else {
            format!("{padded} ")
        }
    }

    /// One shown line: its prefix, the time when asked for, its (already safe) text.
    pub fn line(&mut self, line: &Shown, timestamps: bool) -> String {
        let mut s = self.prefix(&line.service);
        if timestamps {
            match line.timestamp {
                Some(t) => s.push_str(&format!("{t} ")),
                None => s.push_str("- "),
            }
        }
        s.push_str(&line.text);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::LogSource;
    use std::time::Duration;

    fn shown(service: &str, text: &str) -> Shown {
        Shown {
            service: service.into(),
            source: LogSource::Stdout,
            timestamp: Some("2026-12-07T10:00:00.5Z".parse().unwrap()),
            text: text.into(),
        }
    }

    #[test]
    fn plain_prefixes_are_padded_to_the_longest_name_without_colour() {
        let mut p = Prefixer::new(["web", "postgres"], false);
        assert_eq!(p.line(&shown("web", "hello"), false), "web      | hello");
        assert_eq!(
            p.line(&shown("postgres", "ready"), false),
            "postgres | ready"
        );
        assert_eq!(
            p.line(&shown("web", "hi"), true),
            "web      | 2026-12-07T10:00:00.5Z hi"
        );
        // A name not known at the start is shown as it is.
        assert_eq!(p.line(&shown("orphaned", "x"), false), "orphaned | x");
    }

    #[test]
    fn on_a_terminal_each_service_keeps_its_own_colour() {
        let mut p = Prefixer::new(["db", "web"], true);
        let db = p.prefix("db");
        let web = p.prefix("web");
        assert_eq!(db, "\x1b[36mdb  |\x1b[0m ");
        assert_eq!(web, "\x1b[33mweb |\x1b[0m ");
        assert_eq!(p.prefix("db"), db);
        // A later service takes the next colour.
        assert!(p.prefix("cache").starts_with("\x1b[32m"));
    }

    #[test]
    fn an_evidence_header_says_whose_it_is_how_it_ended_and_when() {
        let mut e = Evidence {
            generation: 2,
            service: "web".into(),
            container: "p-web".into(),
            why: Cause::GateFailed,
            captured_ms: 1796637600000,
            running: false,
            exit_code: Some(3),
            oom_killed: false,
            restart_count: 0,
            started_at: None,
            finished_at: None,
            health: vec![],
            probe: None,
            lines: vec![],
        };
        assert_eq!(
            header(&e),
            "== web (container p-web, gate failed, exited code 3, captured 2026-12-07 10:00:00 UTC)"
        );
        e.why = Cause::Died;
        e.exit_code = Some(137);
        e.oom_killed = true;
        assert!(header(&e).contains("died, exited code 137, OOM-killed,"));
        e.running = true;
        assert!(header(&e).contains("still running"));
    }

    #[test]
    fn since_takes_a_duration_back_from_now_or_a_time() {
        let ten_min = parse_since("10m").unwrap();
        let back = SystemTime::now().duration_since(ten_min).unwrap();
        assert!(back >= Duration::from_secs(600) && back < Duration::from_secs(610));
        let at = parse_since("2026-12-07T10:00:00Z").unwrap();
        assert_eq!(
            at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1796637600
        );
        assert!(parse_since("yesterday").unwrap_err().contains("neither"));
        assert_eq!(parse_tail("all").unwrap(), Tail(None));
        assert_eq!(parse_tail("3").unwrap(), Tail(Some(3)));
        assert!(parse_tail("-1").is_err());
    }
}
