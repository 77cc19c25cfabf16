//! [`run`]: wiring the engine together, and its graceful shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hikyaku_queue_schema::{Keys, ENGINE_GROUP, SCHEMA_VERSION};
use hikyaku_queue_schema::{Redis, RedisClient};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::config::EngineConfig;
use crate::control;
use crate::intake::inflight::InFlight;
use crate::intake::membership::{self, Heartbeat, ReaderParts, Readers};
use crate::intake::{flusher, mover};
use crate::message::Renderer;
use crate::metrics::{self, Metrics};
use crate::outcome::report::Reporter;
use crate::routing::dispatcher::{DispatchConfig, Dispatcher};
use crate::routing::mx::{HickoryLookup, MxLookup};
use crate::site::connect::Connector;
use crate::site::{Site, SiteDeps};
use crate::smtp::tls::opportunistic_connector;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Redis refused or failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis holds a layout this engine cannot use.
    #[error("queue layout mismatch: {0}")]
    Schema(String),
    /// The DNS resolver could not be set up.
    #[error("dns resolver: {0}")]
    Dns(String),
    /// The TLS client could not be set up.
    #[error("tls: {0}")]
    Tls(String),
    /// The configuration is unusable.
    #[error("config: {0}")]
    Config(String),
}

/// Sockets the engine serves on, bound by the caller (tests bind port 0).
#[derive(Debug, Default)]
pub struct Listeners {
    /// The Prometheus `/metrics` listener.
    pub metrics: Option<TcpListener>,
}

/// Runs the engine until `shutdown` resolves, then stops reading, lets in-flight messages
/// finish (up to `queue.shutdown_grace`), hands queued jobs back, and returns.
pub async fn run(
    config: EngineConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), EngineError> {
    config
        .validate()
        .map_err(|e| EngineError::Config(e.to_string()))?;
    let handle = metrics::install();
    let client = RedisClient::open(config.redis_url.as_str())?;
    let mut con = client.connect().await?;
    prepare(&mut con, &config).await?;

    let q = config.queue.clone();
    let lookup: Arc<dyn MxLookup> = Arc::new(
        HickoryLookup::new(
            config.dns.nameserver,
            config.dns.timeout.map_or(Duration::from_secs(5), |s| s.0),
        )
        .map_err(|e| EngineError::Dns(e.to_string()))?,
    );
    let tls = if config.tls.starttls {
        Some(opportunistic_connector().map_err(|e| EngineError::Tls(e.to_string()))?)
    } else {
        None
    };
    let dkim = Arc::new(
        crate::message::dkim::DkimKeys::load(&config.dkim)
            .map_err(|e| EngineError::Config(e.to_string()))?,
    );
    let inflight = InFlight::new(q.max_in_flight, config.shards);
    let mut txs = Vec::new();
    let mut flushers = Vec::new();
    let (finish_tx, finish_rx) = watch::channel(false);
    for shard in 0..config.shards {
        let (tx, rx) = mpsc::unbounded_channel();
        txs.push(tx);
        flushers.push(tokio::spawn(flusher::run(
            shard,
            rx,
            con.clone(),
            inflight.clone(),
            q.flush_interval.0,
            finish_rx.clone(),
        )));
    }
    let reporter = Reporter::new(txs, Metrics);
    let campaigns = Arc::new(crate::control::campaigns::CampaignStates::new(
        q.campaign_idle.0,
    ));
    let (events, events_writer) = crate::site::events::SiteEvents::to_redis(con.clone());
    let suppressed = Arc::new(crate::control::suppressed::Suppressed::default());
    let drains = Arc::new(crate::routing::drains::Drains::default());
    let live_nodes = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let fleet_view = membership::FleetView::new(config.fleet.node_ttl.0);
    let renderer = Arc::new(Renderer::new(con.clone(), campaigns.clone(), dkim));
    let deps = SiteDeps {
        connector: Connector {
            lookup: lookup.clone(),
            ehlo: config.ehlo_name.clone(),
            tls,
        },
        renderer: renderer.clone(),
        reporter: reporter.clone(),
        campaigns: campaigns.clone(),
        events,
        suppressed: suppressed.clone(),
        fleet: config
            .fleet
            .global_limits
            .then(|| crate::site::fleet::FleetDeps {
                con: con.clone(),
                node: config.node_id.as_str().into(),
                lease: config.fleet.lease.0,
                slot_ttl: config.fleet.node_ttl.0 * 2,
                live_nodes: live_nodes.clone(),
            }),
    };
    let sites: BTreeMap<String, Arc<Site>> = config
        .site_policies()
        .into_iter()
        .map(|(name, policy)| (name, Site::new(policy, deps.clone())))
        .collect();
    let smarthost = config.smarthost.as_ref().and_then(|s| {
        let (h, p) = s.rsplit_once(':')?;
        Some((h.trim_matches(['[', ']']).to_owned(), p.parse().ok()?))
    });
    let dispatcher = Dispatcher::new(
        sites.clone(),
        lookup,
        reporter.clone(),
        Metrics,
        DispatchConfig {
            port: config.smtp_port,
            smarthost,
            max_cache_ttl: config
                .dns
                .max_cache_ttl
                .map_or(Duration::from_secs(3600), |s| s.0),
            failure_ttl: config
                .dns
                .failure_ttl
                .map_or(Duration::from_secs(5), |s| s.0),
            requeue_delay: q.requeue_delay.0,
            cache_domains: config
                .dns
                .cache_domains
                .unwrap_or(crate::routing::dispatcher::DEFAULT_CACHED_DOMAINS),
        },
        campaigns.clone(),
        drains.clone(),
    )
    .ok_or_else(|| EngineError::Config("no default site".into()))?;

    // Operator state first: a site paused before this node started must not get a message.
    control::poll(&mut con.clone(), &sites, config.shards, &inflight, &Metrics).await?;
    suppressed.refresh(&mut con.clone()).await?;
    drains.refresh(&mut con.clone()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Shard readers follow the fleet's membership (every shard read when this node is alone).
    let readers = Readers::new(ReaderParts {
        client: client.clone(),
        node_id: config.node_id.clone(),
        inflight: inflight.clone(),
        dispatcher: dispatcher.clone(),
        reporter: reporter.clone(),
        queue: q.clone(),
        fleet: fleet_view.clone(),
    });
    let membership = tokio::spawn(membership::run(
        con.clone(),
        Heartbeat {
            node_id: config.node_id.clone(),
            ttl: config.fleet.node_ttl.0,
            shards: config.shards,
            live_nodes,
            view: fleet_view.clone(),
        },
        readers,
        stop_rx.clone(),
    ));
    let refreshers: Vec<_> = (0..config.shards)
        .map(|shard| {
            tokio::spawn(crate::intake::shard::keep_held(
                crate::intake::shard::Keeper {
                    shard,
                    node_id: config.node_id.clone(),
                    con: con.clone(),
                    inflight: inflight.clone(),
                    dispatcher: dispatcher.clone(),
                    reporter: reporter.clone(),
                    queue: q.clone(),
                },
            ))
        })
        .collect();
    let background = [
        tokio::spawn(mover::run(
            con.clone(),
            config.shards,
            q.mover_interval.0,
            Metrics,
            stop_rx.clone(),
        )),
        tokio::spawn(control::run(
            con.clone(),
            control::Control {
                sites: sites.clone(),
                campaigns: campaigns.clone(),
                renderer,
                dispatcher: dispatcher.clone(),
                suppressed,
                drains,
                shards: config.shards,
                inflight: inflight.clone(),
                node_id: config.node_id.clone(),
                fleet: fleet_view,
            },
            stop_rx.clone(),
        )),
    ];
    if let Some(l) = listeners.metrics {
        let mut stop = stop_rx.clone();
        tokio::spawn(metrics::serve(l, handle, async move {
            let _ = stop.changed().await;
        }));
    }
    tracing::info!(
        node = %config.node_id,
        shards = config.shards,
        sites = sites.len(),
        "engine running"
    );

    shutdown.await;
    tracing::info!("shutdown: no more reads; finishing in-flight messages");
    let deadline = clock::now() + q.shutdown_grace.0;
    let _ = stop_tx.send(true);
    let _ = membership.await;
    loop {
        // Jobs not yet started go back to the queue at once (and connections hand back what
        // they hold unsent); messages on the wire finish.
        for site in sites.values() {
            for r in site.drain() {
                reporter.requeue(r.work, &site.policy, Duration::ZERO);
            }
        }
        let left = inflight.in_flight();
        if left == 0 {
            break;
        }
        if clock::now() >= deadline {
            tracing::warn!(
                left,
                "shutdown grace over; messages still on the wire stay pending for reclaim"
            );
            for site in sites.values() {
                site.abort();
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Connections end (at once when aborted); what they finished is reported by then.
    let closing = clock::now() + Duration::from_secs(5);
    while sites.values().any(|s| s.connections() > 0) && clock::now() < closing {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for b in background {
        let _ = b.await;
    }
    // Every result reported is written before the engine returns (bounded, should Redis be
    // away: those entries stay pending for reclaim).
    let _ = finish_tx.send(true);
    let written = async {
        for f in flushers.iter_mut() {
            let _ = f.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), written)
        .await
        .is_err()
    {
        tracing::warn!(
            "results not all written within 30 s; their entries stay pending for reclaim"
        );
    }
    for t in flushers
        .into_iter()
        .chain(refreshers)
        .chain(std::iter::once(events_writer))
    {
        t.abort();
    }
    tracing::info!("engine stopped");
    Ok(())
}

/// Checks or records the queue layout in `hk:meta` and creates the consumer groups.
async fn prepare(con: &mut Redis, config: &EngineConfig) -> Result<(), EngineError> {
    let layout = hikyaku_queue_schema::meta::record_or_read(con, config.shards).await?;
    if layout.schema != SCHEMA_VERSION {
        return Err(EngineError::Schema(format!(
            "Redis holds schema {}, this engine speaks {SCHEMA_VERSION}",
            layout.schema
        )));
    }
    if layout.shards != config.shards {
        return Err(EngineError::Schema(format!(
            "Redis is laid out for {} shards, config says {}",
            layout.shards, config.shards
        )));
    }
    for shard in 0..config.shards {
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(Keys::ready(shard))
            .arg(ENGINE_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(con)
            .await;
        if let Err(e) = r {
            if e.code() != Some("BUSYGROUP") {
                return Err(e.into());
            }
        }
    }
    Ok(())
}
