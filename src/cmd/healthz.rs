//! `berth healthz`: whether a `berth run` serves, from its `/healthz` (the image's
//! HEALTHCHECK: a `FROM scratch` image has no curl, so berth asks itself).

use std::time::Duration;

use crate::exit::{OK as EXIT_OK, RUNTIME as EXIT_RUNTIME};

/// `berth healthz`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the `berth run` listens (its first `--listen`).
    #[arg(value_name = "IP:PORT", default_value = crate::daemon::http::DEFAULT_LISTEN)]
    pub addr: std::net::SocketAddr,
    /// How long to wait for its answer.
    #[arg(long, default_value = "5s", value_parser = crate::spec::duration::parse)]
    pub timeout: Duration,
}

pub async fn run(Args { addr, timeout }: Args) -> anyhow::Result<i32> {
    let url = format!("http://{addr}/healthz");
    let client = crate::notify::tls::builder()
        .no_proxy()
        .timeout(timeout)
        .build()?;
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => {
            println!("{url}: {}", r.status());
            Ok(EXIT_OK)
        }
        Ok(r) => {
            eprintln!("berth: {url} answered {}", r.status());
            Ok(EXIT_RUNTIME)
        }
        Err(e) => {
            eprintln!("berth: healthz: {}", crate::cli::error_chain(&e));
            Ok(EXIT_RUNTIME)
        }
    }
}
