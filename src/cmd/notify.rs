//! `berth notify test|flush`: the `[[notify]]` receivers by hand (docs/notifications.md).

use std::path::Path;

use clap::Subcommand;

use crate::cmd::{FileArgs, load};
use crate::exit::{OK as EXIT_OK, RUNTIME as EXIT_RUNTIME};
use crate::notify::send;
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Send a test event to each `[[notify]]` receiver of the desired state, once, and
    /// print each answer; exit 0 only when every receiver took it (2xx).
    Test(FileArgs),
    /// Deliver what the outbox holds, each delivery once now, and print each answer:
    /// for a host without `berth run` (whose sender does this on its own). Exit 0 unless
    /// a receiver did not take one (it stays in the outbox, retried later).
    Flush,
}

pub async fn run(command: Command, state_path: &Path) -> anyhow::Result<i32> {
    match command {
        Command::Test(args) => test(&args).await,
        Command::Flush => flush(state_path).await,
    }
}

async fn test(args: &FileArgs) -> anyhow::Result<i32> {
    let d = match load(args) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    if d.notify.is_empty() {
        println!("{}: no [[notify]] receiver to test", args.file.display());
        return Ok(EXIT_OK);
    }
    let client = send::client();
    let mut all_took = true;
    for (n, r) in d.notify.iter().enumerate() {
        let attempt = send::test(&client, &d.project.name, r).await;
        all_took &= attempt.ok();
        let signed = match r.secret {
            Some(_) => "signed",
            None => "unsigned",
        };
        println!(
            "receiver {} {} ({}, {signed}): {}",
            n + 1,
            r.describe(),
            r.format.as_str(),
            crate::redact::registered_text(&attempt.answer)
        );
    }
    Ok(if all_took { EXIT_OK } else { EXIT_RUNTIME })
}

async fn flush(state_path: &Path) -> anyhow::Result<i32> {
    let store = Store::open(state_path).await?;
    let sent = send::pass(&store, &send::client(), true).await?;
    if sent.is_empty() {
        println!("nothing to deliver");
    }
    for s in &sent {
        let what = match s.next {
            send::Next::Delivered => "delivered".to_string(),
            send::Next::RetryAt(at) => {
                format!("not taken; retried after {}", crate::store::format_ms(at))
            }
            send::Next::Failed => "not taken for 24 h; given up".to_string(),
        };
        println!(
            "{} to {}: {} ({what})",
            s.delivery.webhook_id(),
            crate::notify::describe_url(&s.delivery.url),
            s.attempt.answer
        );
    }
    let depth = store.outbox_depth().await?;
    if depth > 0 {
        println!("{depth} still waiting in the outbox");
    }
    let all_took = sent.iter().all(|s| s.next == send::Next::Delivered);
    Ok(if all_took { EXIT_OK } else { EXIT_RUNTIME })
}
