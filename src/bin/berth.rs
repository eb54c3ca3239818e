//! The `berth` binary: a thin shell over the library's CLI.

use berth::cli::{Cli, LogFormat};
use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Every log line goes through the redactor: nothing logged may show a secret.
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(berth::redact::LogWriter);
    // systemd sets JOURNAL_STREAM for a service whose output goes to the journal, which
    // stamps every line itself and shows no colours.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    match cli.log_format {
        LogFormat::Json => fmt.json().init(),
        LogFormat::Auto if journal => fmt.without_time().with_ansi(false).init(),
        LogFormat::Auto | LogFormat::Text => fmt.init(),
    }
    berth::notify::tls::install_provider();
    let code = berth::cli::run(cli).await;
    std::process::exit(code);
}
