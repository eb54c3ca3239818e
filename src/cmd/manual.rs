//! `berth completions SHELL` and `berth man DIR`: shell completions and man pages, made
//! from the command line's own definition (clap_complete, clap_mangen), so they never
//! drift from it. The Debian package's build writes them fresh (scripts/build-deb.sh).

use std::path::PathBuf;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::OK as EXIT_OK;

/// `berth completions`'s arguments.
#[derive(clap::Args, Debug)]
pub struct CompletionArgs {
    /// The shell: bash, zsh or fish.
    pub shell: clap_complete::Shell,
}

/// `berth man`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// The directory to write `berth.1` and one `berth-COMMAND.1` per command into.
    pub dir: PathBuf,
}

pub fn completions(args: CompletionArgs) -> anyhow::Result<i32> {
    use std::io::Write;
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "berth", &mut script);
    // A reader that stops early (`| head`) is not an error.
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(EXIT_OK)
}

/// `berth.1`, then `berth-COMMAND.1` (and `berth-COMMAND-SUB.1`) for every command.
pub fn man(args: ManArgs) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&args.dir)?;
    let cmd = Cli::command();
    let mut written = Vec::new();
    write_page(&cmd, "berth", "berth", &args.dir, &mut written)?;
    for name in &written {
        println!("{}", args.dir.join(name).display());
    }
    Ok(EXIT_OK)
}

fn write_page(
    cmd: &clap::Command,
    name: &str,
    bin: &str,
    dir: &std::path::Path,
    written: &mut Vec<String>,
) -> anyhow::Result<()> {
    // clap names a command by a `&'static str`; this one-shot command leaks a few bytes
    // per page.
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    // The page is `berth-apply`; its SYNOPSIS is the command as typed, `berth apply`.
    let page = cmd
        .clone()
        .name(name)
        .display_name(name)
        .bin_name(bin.to_string());
    let mut out = Vec::new();
    clap_mangen::Man::new(page.clone()).render(&mut out)?;
    let file = format!("{name}.1");
    std::fs::write(dir.join(&file), out)?;
    written.push(file);
    for sub in page.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let sub_bin = format!("{bin} {}", sub.get_name());
        write_page(
            sub,
            &format!("{name}-{}", sub.get_name()),
            &sub_bin,
            dir,
            written,
        )?;
    }
    Ok(())
}
