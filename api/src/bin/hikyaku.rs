//! `hikyaku`: the admin batch CLI.

use anyhow::Context;
use clap::{Parser, Subcommand};
use sqlx::postgres::PgPoolOptions;

/// hikyaku's admin batch CLI.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// PostgreSQL URL of the record.
    #[arg(
        long,
        global = true,
        env = "HIKYAKU_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/hikyaku"
    )]
    database_url: String,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        cmd: TenantCmd,
    },
    /// API keys.
    Apikey {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCmd {
    /// Creates a tenant; prints its id and first API key (shown once).
    Create {
        /// Tenant name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCmd {
    /// Adds an API key to a tenant; prints it (shown once).
    Create {
        /// Tenant id.
        #[arg(long)]
        tenant: i64,
    },
    /// Revokes the key with this prefix, effective at once.
    Revoke {
        /// The key's visible prefix (8 hex characters).
        prefix: String,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let db = PgPoolOptions::new()
            .max_connections(2)
            .connect(&args.database_url)
            .await
            .with_context(|| {
                "connecting to PostgreSQL (set --database-url or HIKYAKU_DATABASE_URL)"
            })?;
        sqlx::migrate!("./migrations")
            .run(&db)
            .await
            .context("migrations")?;
        match args.cmd {
            Cmd::Tenant {
                cmd: TenantCmd::Create { name },
            } => {
                let t = hikyaku_api::admin::create_tenant(&db, &name).await?;
                print_key(&t, args.json)?;
            }
            Cmd::Apikey {
                cmd: KeyCmd::Create { tenant },
            } => {
                let t = hikyaku_api::admin::create_key(&db, tenant).await?;
                print_key(&t, args.json)?;
            }
            Cmd::Apikey {
                cmd: KeyCmd::Revoke { prefix },
            } => {
                hikyaku_api::admin::revoke_key(&db, &prefix).await?;
                if args.json {
                    println!("{}", serde_json::json!({ "revoked": prefix }));
                } else {
                    println!("revoked key {prefix}");
                }
            }
        }
        Ok(())
    })
}

fn print_key(t: &hikyaku_api::admin::CreatedTenant, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(t)?);
    } else {
        println!(
            "tenant  {}\napi key {}   (shown once; prefix {})",
            t.tenant_id, t.api_key, t.prefix
        );
    }
    Ok(())
}
