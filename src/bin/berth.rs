//! The `berth` binary: a thin shell over the library's CLI.

use clap::Parser;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        // Every log line goes through the redactor: nothing logged may show a secret.
        .with_writer(berth::redact::LogWriter)
        .init();
    let code = berth::cli::run(berth::cli::Cli::parse()).await;
    std::process::exit(code);
}
