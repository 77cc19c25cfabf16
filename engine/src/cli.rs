//! The `hikyaku-engine` command line: the body of the binary, in the library so the
//! integration tests run the very same program as a child process (their wrapper binary calls
//! [`main`]).

use std::path::PathBuf;

use crate::{EngineConfig, Listeners};
use anyhow::Context;
use clap::Parser;

/// hikyaku's delivery engine.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Engine configuration file (TOML).
    #[arg(long, env = "HIKYAKU_CONFIG")]
    config: PathBuf,
}

/// Parses flags, loads the config, runs the engine until SIGTERM or SIGINT.
pub fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = EngineConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    let runtime = config.runtime().context("starting the runtime")?;
    runtime.block_on(async {
        let metrics = match config.metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding metrics listener {addr}"))?,
            ),
            None => None,
        };
        crate::run(
            config,
            Listeners { metrics },
            hikyaku_queue_schema::shutdown::signal(),
        )
        .await
        .context("engine failed")
    })
}
