//! The `hikyaku-api` command line: the body of the binary, in the library so the integration
//! tests run the very same program as a child process (to kill it mid-expansion).

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};

use crate::ApiConfig;

/// hikyaku's customer REST API, campaign expander and event recorder.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ApiConfig,
}

/// Parses flags, serves until SIGTERM or SIGINT.
pub fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = Args::command().get_matches();
    crate::secrets::refuse_on_command_line(
        &matches,
        &[
            ("database_url", "HIKYAKU_DATABASE_URL"),
            ("redis_url", "HIKYAKU_REDIS_URL"),
        ],
    )
    .map_err(anyhow::Error::msg)?;
    let args = Args::from_arg_matches(&matches)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.config.listen)
            .await
            .with_context(|| format!("binding {}", args.config.listen))?;
        crate::run(
            args.config,
            listener,
            hikyaku_queue_schema::shutdown::signal(),
        )
        .await
        .context("api failed")
    })
}
