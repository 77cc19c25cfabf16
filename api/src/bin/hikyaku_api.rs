//! `hikyaku-api`: the REST API daemon.

use anyhow::Context;
use clap::Parser;
use hikyaku_api::ApiConfig;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// hikyaku's customer REST API, campaign expander and event recorder.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ApiConfig,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.config.listen)
            .await
            .with_context(|| format!("binding {}", args.config.listen))?;
        hikyaku_api::run(args.config, listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("api failed")
    })
}
