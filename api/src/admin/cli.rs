//! The `hikyaku` admin batch command line: parsing, output (text or `--json`), exit codes, and
//! the audit event of every command. The binary is `main` and nothing else.
//!
//! Exit codes: 0 done; 1 failed (database, Redis, files); 2 bad input; 3 not found;
//! 4 conflicts with the current state (e.g. pausing a campaign that is not sending).

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use hikyaku_queue_schema::drain::Scope;
use hikyaku_queue_schema::EventStatus;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;

use super::{audit, AdminError, Ctx};
use crate::routes::campaigns::RunAction;
use crate::text::terminal;

/// hikyaku's admin batch: tenants and keys, sites, queues, campaigns, reports, the daily error
/// digest, suppressions, retention. Every command is recorded as an audit event.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Exit codes: 0 done, 1 failed, 2 bad input, 3 not found, 4 conflicts with the current state."
)]
struct Args {
    /// PostgreSQL URL of the record.
    #[arg(
        long,
        global = true,
        env = "HIKYAKU_DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/hikyaku"
    )]
    database_url: String,
    /// Redis URL of the queues (commands on sites, queues and campaigns).
    #[arg(
        long,
        global = true,
        env = "HIKYAKU_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Cmd {
    /// Tenants: create, list, retire.
    Tenant {
        #[command(subcommand)]
        cmd: TenantCmd,
    },
    /// API keys: create, list, revoke.
    Apikey {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Destination sites: list, pause, resume, set-rate.
    Site {
        #[command(subcommand)]
        cmd: SiteCmd,
    },
    /// Queues: stats, requeue, drain, inspect.
    Queue {
        #[command(subcommand)]
        cmd: QueueCmd,
    },
    /// Campaigns: list, pause, resume, cancel, report.
    Campaign {
        #[command(subcommand)]
        cmd: CampaignCmd,
    },
    /// The error digest: a day's deferrals, bounces and expiries grouped by normalized reply.
    Digest(DigestArgs),
    /// Suppression files: import, export.
    Suppressions {
        #[command(subcommand)]
        cmd: SuppressionCmd,
    },
    /// Deletes recorded events older than the retention (campaign counters stay).
    Purge {
        /// Retention: 30d, 2w, 36h (at least 1d).
        #[arg(long)]
        older_than: String,
        /// Count what would go, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The latest audit events.
    Audit {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand, Serialize)]
#[serde(rename_all = "kebab-case")]
enum TenantCmd {
    /// Creates a tenant; prints its id and first API key (shown once).
    Create {
        /// Tenant name.
        name: String,
    },
    /// Lists tenants with their active keys, campaigns and subscribers.
    List,
    /// Shows a tenant's monthly sending quota, this month's use and its list size, or sets them.
    Quota {
        /// Tenant id.
        tenant: i64,
        /// Messages the tenant may send per calendar month (UTC).
        #[arg(long, conflicts_with = "unlimited")]
        monthly: Option<i64>,
        /// Removes the monthly limit.
        #[arg(long)]
        unlimited: bool,
        /// Subscribers each of the tenant's lists may hold (every status counts; new tenants
        /// get 10,000,000). A list already larger keeps its subscribers and takes no more.
        #[arg(long)]
        list_size: Option<i64>,
    },
    /// Retires a tenant: revokes its keys, cancels its campaigns, exports its data to a
    /// directory, then deletes it from the record and its snapshots from Redis.
    Retire {
        /// Tenant id.
        tenant: i64,
        /// Directory for the export (created; must not exist or be empty).
        #[arg(long)]
        export_dir: PathBuf,
        /// Confirms the deletion.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand, Serialize)]
#[serde(rename_all = "kebab-case")]
enum KeyCmd {
    /// Adds an API key to a tenant; prints it (shown once).
    Create {
        /// Tenant id.
        #[arg(long)]
        tenant: i64,
        /// What the key may do: `read` (every GET), `send` (campaigns), `admin` (lists,
        /// subscribers, suppressions); repeat or comma-separate. Default: all three.
        #[arg(long = "scope", value_enum, value_delimiter = ',')]
        scopes: Vec<crate::scope::Scope>,
    },
    /// Lists keys (prefixes only), of every tenant or one.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<i64>,
    },
    /// Revokes a key, effective at once.
    Revoke {
        /// The key's visible prefix (8 hex characters), or the whole key
        /// (`hk_<prefix>_<secret>`; only its prefix is kept, printed and audited).
        #[arg(value_name = "PREFIX_OR_KEY", value_parser = key_ref)]
        prefix: KeyRef,
    },
}

/// What `apikey revoke` was given, reduced to the key's prefix (`None`: malformed). The whole
/// key never lives past parsing, so neither the audit trail (arguments are serialized from
/// the command) nor any message can carry its secret.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
struct KeyRef(Option<String>);

/// Parses [`KeyRef`]; never fails, so clap never echoes what it was given.
fn key_ref(given: &str) -> Result<KeyRef, std::convert::Infallible> {
    Ok(KeyRef(crate::keys::prefix_of(given).map(str::to_owned)))
}

#[derive(Debug, Subcommand, Serialize)]
#[serde(rename_all = "kebab-case")]
enum SiteCmd {
    /// Every site: pause, rate override and in force, adaptive state, connections, queue.
    List,
    /// Pauses a site on every engine (queued jobs wait in the retry sets).
    Pause {
        /// Site name (google, yahoo, docomo, …).
        site: String,
    },
    /// Resumes a paused site.
    Resume {
        /// Site name.
        site: String,
    },
    /// The adaptive log: cuts, suspensions, blocks, recovery steps and learned rates, with the
    /// provider's reply that caused each, newest first (from `hk:site:events`).
    Events {
        /// Site name (every site's when left out).
        site: Option<String>,
        /// Most events shown.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Overrides a site's rate (messages per second per engine node), or clears it.
    SetRate {
        /// Site name.
        site: String,
        /// Messages per second.
        #[arg(required_unless_present = "clear")]
        rate: Option<f64>,
        /// Back to the policy's rate.
        #[arg(long, conflicts_with = "rate")]
        clear: bool,
    },
}

#[derive(Debug, Subcommand, Serialize)]
#[serde(rename_all = "kebab-case")]
enum QueueCmd {
    /// Depths per shard (ready, pending, retry, due, oldest age, events not yet recorded).
    Stats {
        /// Also count the retry sets by the site their jobs were last routed to.
        #[arg(long)]
        by_site: bool,
    },
    /// Makes deferred jobs due now (e.g. a site's, after its problem is fixed).
    Requeue {
        /// Jobs last routed to this site.
        #[arg(long)]
        site: Option<String>,
        /// Jobs of this campaign.
        #[arg(long)]
        campaign: Option<u64>,
        /// Every deferred job.
        #[arg(long, conflicts_with_all = ["site", "campaign"])]
        all: bool,
    },
    /// Ends the queued jobs of a site or campaign unsent, bounced or cancelled, with a reason.
    Drain {
        /// A site's jobs.
        #[arg(
            long,
            required_unless_present = "campaign",
            conflicts_with = "campaign"
        )]
        site: Option<String>,
        /// A campaign's jobs.
        #[arg(long)]
        campaign: Option<u64>,
        /// End them as bounced or cancelled.
        #[arg(long = "as", value_enum, required_unless_present = "clear")]
        status: Option<DrainAs>,
        /// Why (recorded with every event).
        #[arg(long, required_unless_present = "clear")]
        reason: Option<String>,
        /// Withdraw the order instead.
        #[arg(long)]
        clear: bool,
    },
    /// Lists drain orders in force.
    Drains,
    /// Shows sample jobs (retry sets first, soonest due), with their site and last error.
    Inspect {
        /// Jobs last routed to this site.
        #[arg(long)]
        site: Option<String>,
        /// Jobs of this campaign.
        #[arg(long)]
        campaign: Option<u64>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum DrainAs {
    Bounced,
    Cancelled,
}

#[derive(Debug, Subcommand, Serialize)]
#[serde(rename_all = "kebab-case")]
enum CampaignCmd {
    /// Campaigns with progress, newest first.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<i64>,
        /// Only in this status.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Pauses a sending campaign.
    Pause {
        /// Campaign id.
        id: i64,
    },
    /// Resumes a paused campaign.
    Resume {
        /// Campaign id.
        id: i64,
    },
    /// Cancels a campaign: its queued jobs end unsent.
    Cancel {
        /// Campaign id.
        id: i64,
    },
    /// Per-site results as CSV (sent, delivered, deferred, bounced by class, complaints,
    /// unsubscribes, opens, clicks).
    Report {
        /// Campaign id.
        id: i64,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args, Serialize)]
struct DigestArgs {
    /// The day (default: yesterday).
    #[arg(long)]
    date: Option<NaiveDate>,
    /// Where days start, as an offset from UTC (e.g. +09:00 for Japan).
    #[arg(long, default_value = "+00:00", allow_hyphen_values = true)]
    utc_offset: String,
    /// Start of another period (RFC 3339), instead of --date.
    #[arg(long, requires = "until", conflicts_with = "date")]
    since: Option<DateTime<Utc>>,
    /// End of that period (RFC 3339).
    #[arg(long, requires = "since")]
    until: Option<DateTime<Utc>>,
    /// Output format (--json means json).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Also POST the JSON digest to this http:// URL.
    #[arg(long)]
    #[serde(skip)] // webhook URLs carry tokens: not in the audit trail
    webhook: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Format {
    Text,
    Csv,
    Json,
}

#[derive(Debug, Subcommand, Serialize)]
#[serde(rename_all = "kebab-case")]
enum SuppressionCmd {
    /// Imports `email[,reason]` lines (a header `email,reason` is skipped) for a tenant.
    Import {
        /// Tenant id.
        #[arg(long)]
        tenant: i64,
        /// File, or - for stdin.
        file: String,
    },
    /// Exports a tenant's suppressions as CSV.
    Export {
        /// Tenant id.
        #[arg(long)]
        tenant: i64,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The command's name (`site pause`) and its arguments, for the audit trail.
fn audit_of(cmd: &Cmd) -> (String, serde_json::Value) {
    use serde_json::Value;
    // `{"<command>": {"cmd": "<sub>" | {"<sub>": {args}}}}` or `{"<command>": {args}}`.
    let v = serde_json::to_value(cmd).unwrap_or_default();
    let Some((top, inner)) = v.as_object().and_then(|m| m.iter().next()) else {
        return (String::new(), Value::Null);
    };
    match inner.get("cmd") {
        Some(Value::String(sub)) => (format!("{top} {sub}"), Value::Object(Default::default())),
        Some(Value::Object(m)) => match m.iter().next() {
            Some((sub, args)) => (format!("{top} {sub}"), args.clone()),
            None => (top.clone(), Value::Null),
        },
        _ => (top.clone(), inner.clone()),
    }
}

/// Runs the CLI; the exit code says how it ended.
pub fn main() -> ExitCode {
    let matches = <Args as clap::CommandFactory>::command().get_matches();
    let secrets = crate::secrets::refuse_on_command_line(
        &matches,
        &[
            ("database_url", "HIKYAKU_DATABASE_URL"),
            ("redis_url", "HIKYAKU_REDIS_URL"),
        ],
    );
    let args = secrets.and_then(|()| {
        <Args as clap::FromArgMatches>::from_arg_matches(&matches).map_err(|e| e.to_string())
    });
    let args = match args {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hikyaku: error: {}", terminal(&e));
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hikyaku: error: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hikyaku: error: {}", terminal(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(args: Args) -> Result<(), AdminError> {
    // Site and queue commands need only Redis: they must work while PostgreSQL is down (an
    // incident is when operators pause sites), so the pool connects lazily and their audit
    // event, if the record is unreachable, becomes a warning on stderr.
    let db = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(3))
        .connect_lazy(&args.database_url)
        .map_err(|e| AdminError::Invalid(format!("--database-url: {e}")))?;
    let redis_only = matches!(args.cmd, Cmd::Site { .. } | Cmd::Queue { .. });
    if let Err(e) = crate::migrate::run(&db).await {
        let e = format!("PostgreSQL (set --database-url or HIKYAKU_DATABASE_URL): {e}");
        if !redis_only {
            return Err(AdminError::Other(e));
        }
        eprintln!("hikyaku: warning: {e}; going on without the record");
    }
    let ctx = Ctx::new(db, &args.redis_url);
    let (command, audit_args) = audit_of(&args.cmd);
    let result = match execute(&ctx, args.cmd, args.json).await {
        // `hikyaku … | head`: the reader had what it wanted; the command itself did its work.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        r => r,
    };
    if command != "audit" {
        let detail = result.as_ref().err().map(ToString::to_string);
        let outcome = match &detail {
            None => Ok(()),
            Some(d) => Err(d.as_str()),
        };
        if let Err(e) =
            audit::record(&ctx.db, &audit::actor(), &command, &audit_args, outcome).await
        {
            eprintln!(
                "hikyaku: warning: audit event not written ({e}): {} {command} {audit_args}",
                audit::actor()
            );
        }
    }
    result
}

/// Writes `text` to stdout. A reader that went away (`hikyaku … | head`) is an
/// `Io(BrokenPipe)` error, which [`run`] takes for a quiet end: never a panic, as `print!`
/// would.
fn print_out(text: &str) -> Result<(), AdminError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Whether `e` is the reader of our output going away.
fn is_broken_pipe(e: &AdminError) -> bool {
    matches!(e, AdminError::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Prints `value` as JSON, or `text` otherwise.
fn show<T: Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> Result<(), AdminError> {
    if json {
        let mut v =
            serde_json::to_string_pretty(value).map_err(|e| AdminError::Other(e.to_string()))?;
        v.push('\n');
        print_out(&v)
    } else {
        print_out(&text())
    }
}

fn opt_rate(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.1}"))
}

async fn execute(ctx: &Ctx, cmd: Cmd, json: bool) -> Result<(), AdminError> {
    match cmd {
        Cmd::Tenant { cmd } => tenant(ctx, cmd, json).await,
        Cmd::Apikey { cmd } => apikey(ctx, cmd, json).await,
        Cmd::Site { cmd } => site(ctx, cmd, json).await,
        Cmd::Queue { cmd } => queue(ctx, cmd, json).await,
        Cmd::Campaign { cmd } => campaign(ctx, cmd, json).await,
        Cmd::Digest(a) => digest(ctx, a, json).await,
        Cmd::Suppressions { cmd } => suppressions(ctx, cmd, json).await,
        Cmd::Purge {
            older_than,
            dry_run,
        } => {
            let age = super::purge::parse_age(&older_than)?;
            let p = super::purge::purge(ctx, age, dry_run).await?;
            show(json, &p, || {
                let verb = if p.dry_run { "would delete" } else { "deleted" };
                let mut s = format!("events before {}:\n", p.before.to_rfc3339());
                for (t, n) in &p.tables {
                    s.push_str(&format!("  {t:<18} {verb} {n}\n"));
                }
                s
            })
        }
        Cmd::Audit { limit } => {
            let rows = audit::list(&ctx.db, limit).await?;
            show(json, &rows, || {
                rows.iter()
                    .map(|r| {
                        format!(
                            "{}  {:<10} {:<5} {} {}{}\n",
                            r.at.format("%Y-%m-%d %H:%M:%S"),
                            terminal(&r.actor),
                            r.outcome,
                            terminal(&r.command),
                            terminal(&r.args.to_string()),
                            if r.detail.is_empty() {
                                String::new()
                            } else {
                                format!("  ({})", terminal(&r.detail))
                            }
                        )
                    })
                    .collect()
            })
        }
    }
}

async fn tenant(ctx: &Ctx, cmd: TenantCmd, json: bool) -> Result<(), AdminError> {
    match cmd {
        TenantCmd::Create { name } => {
            let t = super::create_tenant(&ctx.db, &name).await?;
            print_key(&t, json)
        }
        TenantCmd::List => {
            let rows = super::tenants::list(&ctx.db).await?;
            show(json, &rows, || {
                let mut s = format!(
                    "{:>6}  {:<30} {:>5} {:>9} {:>11}  created\n",
                    "id", "name", "keys", "campaigns", "subscribers"
                );
                for r in &rows {
                    s.push_str(&format!(
                        "{:>6}  {:<30} {:>5} {:>9} {:>11}  {}\n",
                        r.id,
                        terminal(&r.name),
                        r.active_keys,
                        r.campaigns,
                        r.subscribers,
                        r.created_at.format("%Y-%m-%d")
                    ));
                }
                s
            })
        }
        TenantCmd::Quota {
            tenant,
            monthly,
            unlimited,
            list_size,
        } => {
            let set = match (monthly, unlimited) {
                (Some(n), _) => Some(Some(n)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let u = super::tenants::quota(&ctx.db, tenant, set, list_size).await?;
            show(json, &u, || {
                format!(
                    "tenant {tenant}: quota {} per month, {} used this month; lists of up to {} subscribers\n",
                    u.quota.map_or("unlimited".into(), |q| q.to_string()),
                    u.used,
                    u.max_list_size
                )
            })
        }
        TenantCmd::Retire {
            tenant,
            export_dir,
            yes,
        } => {
            if !yes {
                return Err(AdminError::Invalid(format!(
                    "retiring tenant {tenant} revokes its keys, cancels its campaigns and deletes its data after exporting it to {}; add --yes to go ahead",
                    export_dir.display()
                )));
            }
            let r = super::tenants::retire(ctx, tenant, &export_dir).await?;
            show(json, &r, || {
                format!(
                    "tenant {} retired: {} keys revoked, {} campaigns cancelled, {} files exported to {}; deleted {}\n",
                    r.tenant_id,
                    r.keys_revoked,
                    r.campaigns_cancelled,
                    r.exported.len(),
                    export_dir.display(),
                    r.deleted.iter().map(|(t, n)| format!("{t}={n}")).collect::<Vec<_>>().join(" ")
                )
            })
        }
    }
}

fn print_key(t: &super::CreatedTenant, json: bool) -> Result<(), AdminError> {
    show(json, t, || {
        format!(
            "tenant  {}\napi key {}   (shown once; prefix {})\nscopes  {}\n",
            t.tenant_id,
            t.api_key,
            t.prefix,
            t.scopes.join(",")
        )
    })
}

async fn apikey(ctx: &Ctx, cmd: KeyCmd, json: bool) -> Result<(), AdminError> {
    match cmd {
        KeyCmd::Create { tenant, scopes } => {
            let scopes = if scopes.is_empty() {
                crate::scope::Scope::ALL.to_vec()
            } else {
                scopes
            };
            let t = super::create_key(&ctx.db, tenant, &scopes).await?;
            print_key(&t, json)
        }
        KeyCmd::List { tenant } => {
            let rows = super::keys::list_keys(&ctx.db, tenant).await?;
            show(json, &rows, || {
                let mut s =
                    String::from("prefix    tenant  scopes            created           revoked\n");
                for r in &rows {
                    s.push_str(&format!(
                        "{:<9} {:>6}  {:<16}  {}  {}\n",
                        r.prefix,
                        r.tenant_id,
                        r.scopes.join(","),
                        r.created_at.format("%Y-%m-%d %H:%M"),
                        r.revoked_at
                            .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string())
                    ));
                }
                s
            })
        }
        KeyCmd::Revoke { prefix } => {
            // A malformed key reaches revoke_key as nothing it could echo.
            let prefix = prefix.0.unwrap_or_default();
            super::revoke_key(&ctx.db, &prefix).await?;
            show(json, &serde_json::json!({ "revoked": prefix }), || {
                format!("revoked key {prefix}\n")
            })
        }
    }
}

async fn site(ctx: &Ctx, cmd: SiteCmd, json: bool) -> Result<(), AdminError> {
    match cmd {
        SiteCmd::List => {
            let rows = super::sites::list(ctx).await?;
            show(json, &rows, || {
                let mut s = format!(
                    "{:<12} {:<6} {:>9} {:>9} {:<10} {:>6} {:>8} {:>5}\n",
                    "site", "paused", "override", "rate", "adaptive", "conns", "queued", "nodes"
                );
                for r in &rows {
                    s.push_str(&format!(
                        "{:<12} {:<6} {:>9} {:>9} {:<10} {:>6} {:>8} {:>5}\n",
                        terminal(&r.site),
                        r.paused_label(),
                        opt_rate(r.rate_override),
                        r.rate.map_or("unlimited".into(), |v| format!("{v:.1}")),
                        terminal(&r.adaptive),
                        r.connections,
                        r.queued,
                        r.nodes
                    ));
                }
                if rows.is_empty() {
                    s.push_str("(no engine is running: sites are listed by running engines)\n");
                }
                s
            })
        }
        SiteCmd::Pause { site } => {
            super::sites::set_paused(ctx, &site, true).await?;
            show(
                json,
                &serde_json::json!({ "site": site, "paused": true }),
                || format!("site {site} paused (engines stop starting messages within a second)\n"),
            )
        }
        SiteCmd::Resume { site } => {
            super::sites::set_paused(ctx, &site, false).await?;
            show(
                json,
                &serde_json::json!({ "site": site, "paused": false }),
                || format!("site {site} resumed\n"),
            )
        }
        SiteCmd::Events { site, limit } => {
            let rows = super::sites::events(ctx, site.as_deref(), limit).await?;
            show(json, &rows, || {
                let mut s = format!(
                    "{:<24} {:<12} {:<8} {:>9} {:<24} {}\n",
                    "at (UTC)", "site", "action", "rate", "until (UTC)", "reply"
                );
                for r in &rows {
                    s.push_str(&format!(
                        "{:<24} {:<12} {:<8} {:>9} {:<24} {}\n",
                        utc_ms(r.at_ms),
                        terminal(&r.site),
                        terminal(&r.action),
                        if r.rate > 0.0 {
                            format!("{:.1}", r.rate)
                        } else {
                            "-".into()
                        },
                        if r.until_ms > 0 {
                            utc_ms(r.until_ms)
                        } else {
                            "-".into()
                        },
                        terminal(&r.reply)
                    ));
                }
                if rows.is_empty() {
                    s.push_str("(no adaptive change recorded)\n");
                }
                s
            })
        }
        SiteCmd::SetRate { site, rate, clear } => {
            let rate = if clear { None } else { rate };
            super::sites::set_rate(ctx, &site, rate).await?;
            show(
                json,
                &serde_json::json!({ "site": site, "rate": rate }),
                || match rate {
                    Some(r) => format!("site {site}: {r} msg/s per engine node\n"),
                    None => format!("site {site}: back to its policy's rate\n"),
                },
            )
        }
    }
}

/// A time in ms since the epoch as `2026-12-03 16:04:05.123`, UTC.
fn utc_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map_or_else(
            || ms.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        )
}

async fn queue(ctx: &Ctx, cmd: QueueCmd, json: bool) -> Result<(), AdminError> {
    use super::queue as q;
    match cmd {
        QueueCmd::Stats { by_site } => {
            let st = q::stats(ctx, by_site).await?;
            show(json, &st, || {
                let mut s = format!(
                    "{:>5} {:>10} {:>9} {:>10} {:>9} {:>10} {:>12} {:>9}\n",
                    "shard", "ready", "pending", "retry", "due", "parked", "oldest age", "events"
                );
                for r in &st.shards {
                    s.push_str(&format!(
                        "{:>5} {:>10} {:>9} {:>10} {:>9} {:>10} {:>11.0}s {:>9}\n",
                        r.shard,
                        r.ready,
                        r.pending,
                        r.retry,
                        r.retry_due,
                        r.parked,
                        r.oldest_age_s,
                        r.events
                    ));
                }
                if let Some(by) = &st.retry_by_site {
                    s.push_str(&format!(
                        "\nretry sets by site:\n  {:<16} {:>10} {:>10} {:>12}\n",
                        "site", "jobs", "held", "oldest age"
                    ));
                    for (site, n) in by {
                        let held = st
                            .retry_held_by_site
                            .as_ref()
                            .and_then(|h| h.get(site))
                            .copied()
                            .unwrap_or(0);
                        let age = st
                            .retry_oldest_age_s_by_site
                            .as_ref()
                            .and_then(|h| h.get(site))
                            .copied()
                            .unwrap_or(0.0);
                        s.push_str(&format!("  {site:<16} {n:>10} {held:>10} {age:>11.0}s\n"));
                    }
                }
                s
            })
        }
        QueueCmd::Requeue {
            site,
            campaign,
            all,
        } => {
            let n = q::requeue(ctx, &q::Filter { site, campaign }, all).await?;
            show(json, &serde_json::json!({ "requeued": n }), || {
                format!("{n} deferred jobs due now\n")
            })
        }
        QueueCmd::Drain {
            site,
            campaign,
            status,
            reason,
            clear,
        } => {
            let scope = match (site, campaign) {
                (Some(s), None) => Scope::Site(s),
                (None, Some(c)) => Scope::Campaign(c),
                _ => return Err(AdminError::Invalid("give --site or --campaign".into())),
            };
            if clear {
                let had = q::clear_drain(ctx, &scope).await?;
                return show(
                    json,
                    &serde_json::json!({ "order": scope.field(), "cleared": had }),
                    || {
                        if had {
                            format!("drain order {} withdrawn\n", scope.field())
                        } else {
                            format!("no drain order for {}\n", scope.field())
                        }
                    },
                );
            }
            let status = match status {
                Some(DrainAs::Bounced) => EventStatus::Bounced,
                Some(DrainAs::Cancelled) | None => EventStatus::Cancelled,
            };
            let d = q::drain(ctx, scope, status, reason.as_deref().unwrap_or_default()).await?;
            show(json, &d, || {
                format!(
                    "drain order {} given: its queued jobs end {} (reason drained); {} deferred jobs made due now\n",
                    d.order, d.status, d.requeued
                )
            })
        }
        QueueCmd::Drains => {
            let rows = q::drains(ctx).await?;
            let view: Vec<serde_json::Value> = rows
                .iter()
                .map(|(f, r)| {
                    serde_json::json!({ "order": f, "status": r.status.as_str(), "before_ms": r.before_ms, "reason": r.reason })
                })
                .collect();
            show(json, &view, || {
                rows.iter()
                    .map(|(f, r)| {
                        format!(
                            "{:<24} {:<9} since {}  {}\n",
                            terminal(f),
                            r.status.as_str(),
                            r.before_ms,
                            terminal(&r.reason)
                        )
                    })
                    .collect()
            })
        }
        QueueCmd::Inspect {
            site,
            campaign,
            limit,
        } => {
            let jobs = q::inspect(ctx, &q::Filter { site, campaign }, limit).await?;
            show(json, &jobs, || {
                let mut s = String::new();
                for j in &jobs {
                    s.push_str(&format!(
                        "{:<5} s{:<3} {:<14} {:<32} attempt {} age {:.0}s{} site {}\n      last error: {}\n",
                        j.place,
                        j.shard,
                        j.id,
                        terminal(&j.rcpt),
                        j.attempt,
                        j.age_s,
                        j.due_in_s.map_or(String::new(), |d| format!(" due in {d:.0}s")),
                        terminal(j.site.as_deref().unwrap_or("-")),
                        terminal(j.last_error.as_deref().unwrap_or("-"))
                    ));
                }
                if jobs.is_empty() {
                    s.push_str("no matching jobs\n");
                }
                s
            })
        }
    }
}

async fn campaign(ctx: &Ctx, cmd: CampaignCmd, json: bool) -> Result<(), AdminError> {
    use super::campaigns as c;
    let act = |id: i64, action: RunAction, verb: &'static str| async move {
        let camp = c::act(ctx, id, action).await?;
        show(json, &camp, || {
            format!("campaign {id} {verb} (now {})\n", camp.status)
        })
    };
    match cmd {
        CampaignCmd::List {
            tenant,
            status,
            limit,
        } => {
            let rows = c::list(ctx, tenant, status.as_deref(), limit).await?;
            show(json, &rows, || {
                let mut s = format!(
                    "{:>7} {:>6}  {:<24} {:<10} {:>10} {:>10} {:>10}\n",
                    "id", "tenant", "name", "status", "expanded", "finished", "delivered"
                );
                for r in &rows {
                    s.push_str(&format!(
                        "{:>7} {:>6}  {:<24} {:<10} {:>10} {:>10} {:>10}\n",
                        r.id,
                        r.tenant_id,
                        terminal(&r.name),
                        r.status,
                        r.expanded,
                        r.finished,
                        r.delivered
                    ));
                }
                s
            })
        }
        CampaignCmd::Pause { id } => act(id, RunAction::Pause, "paused").await,
        CampaignCmd::Resume { id } => act(id, RunAction::Resume, "resumed").await,
        CampaignCmd::Cancel { id } => act(id, RunAction::Cancel, "cancelled").await,
        CampaignCmd::Report { id, out } => {
            let r = super::report::build(ctx, id).await?;
            let csv = r.to_csv();
            match out {
                Some(path) => {
                    std::fs::write(&path, &csv)?;
                    show(json, &r, || {
                        format!("report of campaign {id} written to {}\n", path.display())
                    })
                }
                None if json => show(true, &r, String::new),
                None => print_out(&csv),
            }
        }
    }
}

async fn digest(ctx: &Ctx, a: DigestArgs, json: bool) -> Result<(), AdminError> {
    let (from, to) = match (a.since, a.until) {
        (Some(s), Some(u)) => (s, u),
        _ => {
            let offset: chrono::FixedOffset = a.utc_offset.parse().map_err(|_| {
                AdminError::Invalid(format!("--utc-offset {:?}: expected +HH:MM", a.utc_offset))
            })?;
            let today = Utc::now().with_timezone(&offset).date_naive();
            let day = a.date.unwrap_or(today - chrono::Duration::days(1));
            let start = day
                .and_hms_opt(0, 0, 0)
                .and_then(|t| t.and_local_timezone(offset).single())
                .ok_or_else(|| AdminError::Invalid(format!("--date {day}: no such day")))?;
            let start = start.with_timezone(&Utc);
            (start, start + chrono::Duration::days(1))
        }
    };
    let d = super::digest::build(ctx, from, to).await?;
    if let Some(url) = &a.webhook {
        let body = serde_json::to_string(&d).map_err(|e| AdminError::Other(e.to_string()))?;
        super::digest::post_webhook(url, &body).await?;
    }
    let format = if json { Format::Json } else { a.format };
    match format {
        Format::Json => show(true, &d, String::new),
        Format::Csv => print_out(&d.to_csv()),
        Format::Text => print_out(&d.to_text()),
    }
}

async fn suppressions(ctx: &Ctx, cmd: SuppressionCmd, json: bool) -> Result<(), AdminError> {
    match cmd {
        SuppressionCmd::Import { tenant, file } => {
            let r = super::suppressions::import(ctx, tenant, &file).await?;
            show(json, &r, || {
                format!("{} suppressions imported\n", r.accepted)
            })
        }
        SuppressionCmd::Export { tenant, out } => match out {
            Some(path) => {
                // The file is written only for a tenant that exists.
                super::tenants::check_exists(&ctx.db, tenant).await?;
                let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
                let n = super::suppressions::export(ctx, tenant, &mut f).await?;
                show(
                    json,
                    &serde_json::json!({ "exported": n, "file": path }),
                    || format!("{n} suppressions written to {}\n", path.display()),
                )
            }
            None => {
                let mut out = std::io::stdout().lock();
                super::suppressions::export(ctx, tenant, &mut out).await?;
                Ok(())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_names_the_command_and_keeps_its_arguments() {
        let a = Args::try_parse_from(["hikyaku", "site", "pause", "yahoo"]).expect("parses");
        let (name, args) = audit_of(&a.cmd);
        assert_eq!(name, "site pause");
        assert_eq!(args, serde_json::json!({ "site": "yahoo" }));
        let a = Args::try_parse_from(["hikyaku", "tenant", "list"]).expect("parses");
        assert_eq!(audit_of(&a.cmd).0, "tenant list");
        let a = Args::try_parse_from(["hikyaku", "purge", "--older-than", "30d"]).expect("parses");
        let (name, args) = audit_of(&a.cmd);
        assert_eq!(name, "purge");
        assert_eq!(args["older_than"], "30d");
        let a = Args::try_parse_from([
            "hikyaku", "queue", "drain", "--site", "au", "--as", "bounced", "--reason", "gone",
        ])
        .expect("parses");
        let (name, args) = audit_of(&a.cmd);
        assert_eq!(name, "queue drain");
        assert_eq!(args["status"], "bounced");
        assert!(Args::try_parse_from(["hikyaku", "queue", "drain", "--site", "au"]).is_err());
        assert!(Args::try_parse_from(["hikyaku", "site", "set-rate", "au"]).is_err());
        assert!(Args::try_parse_from(["hikyaku", "site", "set-rate", "au", "--clear"]).is_ok());
        // A whole key is audited as its prefix; a malformed one as nothing.
        let key = format!("hk_0123abcd_{}", "5".repeat(64));
        let a = Args::try_parse_from(["hikyaku", "apikey", "revoke", &key]).expect("parses");
        let (name, args) = audit_of(&a.cmd);
        assert_eq!(name, "apikey revoke");
        assert_eq!(args, serde_json::json!({ "prefix": "0123abcd" }));
        let a = Args::try_parse_from(["hikyaku", "apikey", "revoke", "hk_x_5555"]).expect("parses");
        assert_eq!(audit_of(&a.cmd).1, serde_json::json!({ "prefix": null }));
    }
}
