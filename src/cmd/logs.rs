//! `berth logs`: the project's containers' output, as `docker compose logs` shows it: a
//! `name |` prefix per service, padded to one width and coloured per service on a
//! terminal, plain `name | line` otherwise. `-f` follows, also the containers a converge
//! creates meanwhile, until Ctrl-C.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cmd::{FileArgs, connect, load};
use crate::exit::OK as EXIT_OK;
use crate::logs::{Request, Shown};
use crate::runtime::LogOptions;
use crate::shutdown::Shutdown;

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

pub async fn run(args: Args, _state_path: &Path) -> anyhow::Result<i32> {
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
    let rt = connect().await?;
    let names: Vec<&str> = if request.services.is_empty() {
        d.services.keys().map(String::as_str).collect()
    } else {
        request.services.iter().map(String::as_str).collect()
    };
    let colour = !args.no_color && colour_wanted();
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
