//! The API under test: a fresh PostgreSQL database per test (dropped afterwards), a private
//! Redis, and the router called in-process with `oneshot`.

use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use hikyaku_api::state::AppState;
use hikyaku_api::ApiConfig;
use tower::ServiceExt;

use crate::redis::TestRedis;

/// The server URL tests create databases on (`HIKYAKU_TEST_DATABASE_URL`, default: the local
/// PostgreSQL with trust authentication).
pub fn admin_url() -> String {
    std::env::var("HIKYAKU_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDb {
    /// URL of the database.
    pub url: String,
    name: String,
}

impl TestDb {
    /// Creates an empty database.
    pub async fn create() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "hk_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let admin = admin_url();
        let mut con = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("PostgreSQL must be running (ops/run-tests.sh starts it)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut con)
            .await
            .expect("create test database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        TestDb {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = admin_url();
        let name = self.name.clone();
        // Drop runs outside async context: a short-lived runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut con = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut con)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// A running API (router in-process) with one tenant and its key.
#[derive(Debug)]
pub struct TestApi {
    /// Shared state (database pool, Redis).
    pub state: AppState,
    /// The router.
    pub router: Router,
    /// The tenant's API key.
    pub key: String,
    /// The tenant.
    pub tenant: i64,
    /// Its database.
    pub db: TestDb,
    /// Its Redis client (for the recorder).
    pub redis_client: hikyaku_queue_schema::RedisClient,
}

impl TestApi {
    /// Connects to `redis`, migrates a fresh database, creates tenant "acme".
    pub async fn start(redis: &TestRedis) -> Self {
        Self::start_on(&redis.url, crate::world::SHARDS).await
    }

    /// [`TestApi::start`] on the queues at `redis_url` (a server or a cluster), laid out in
    /// `shards` shards.
    pub async fn start_on(redis_url: &str, shards: u16) -> Self {
        Self::start_with_db(redis_url, shards, str::to_owned).await
    }

    /// [`TestApi::start_on`], the API reaching its fresh database at the URL `db_url` makes of
    /// the database's own (a test puts a proxy in between); `db.url` stays the direct one.
    pub async fn start_with_db(
        redis_url: &str,
        shards: u16,
        db_url: impl FnOnce(&str) -> String,
    ) -> Self {
        Self::start_in(TestDb::create().await, redis_url, shards, db_url).await
    }

    /// An API of this release on a database another process may have made and used already
    /// (the API of an earlier release, say): it migrates what is left to migrate, and adds a
    /// tenant of its own.
    pub async fn start_on_existing(db: TestDb, redis_url: &str, shards: u16) -> Self {
        Self::start_in(db, redis_url, shards, str::to_owned).await
    }

    async fn start_in(
        db: TestDb,
        redis_url: &str,
        shards: u16,
        db_url: impl FnOnce(&str) -> String,
    ) -> Self {
        let config = ApiConfig {
            database_url: db_url(&db.url),
            redis_url: redis_url.to_owned(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            shards,
            public_url: "http://127.0.0.1:8080".into(),
            token_secret: Some("test-secret-of-at-least-32-bytes!".into()),
            token_secret_file: None,
            unsubscribe_mailbox: Some("unsubscribe@bounces.acme.test".into()),
            bounce_domain: Some("bounces.acme.test".into()),
            inbound_listen: None,
            fbl_address: None,
            inbound_max_connections: 200,
            inbound_max_connections_per_ip: 10,
            inbound_session_secs: 600,
            inbound_idle_secs: 60,
            metrics_listen: None,
            soft_bounce_limit: 2,
            soft_bounce_days: 30,
            db_pool: 8,
            key_rate: 0,
            test_sends_per_hour: 100,
            tracking_days: 90,
        };
        let (state, redis_client) = hikyaku_api::server::connect(&config)
            .await
            .expect("api connects");
        let t = hikyaku_api::admin::create_tenant(&state.db, "acme")
            .await
            .expect("tenant");
        TestApi {
            router: hikyaku_api::app(state.clone()),
            state,
            key: t.api_key,
            tenant: t.tenant_id,
            db,
            redis_client,
        }
    }

    /// Another tenant's key on the same API.
    pub async fn other_tenant_key(&self) -> String {
        hikyaku_api::admin::create_tenant(&self.state.db, "other")
            .await
            .expect("tenant")
            .api_key
    }

    /// Calls the API: `body` is (content type, bytes). Returns status, content type, JSON body
    /// (or `Null` when empty / not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> (StatusCode, String, serde_json::Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let req = match body {
            Some((ct, bytes)) => req.header(header::CONTENT_TYPE, ct).body(Body::from(bytes)),
            None => req.body(Body::empty()),
        }
        .expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, ct, json)
    }

    /// JSON call with this tenant's key.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let (s, _, v) = self
            .call(
                method,
                path,
                Some(&self.key),
                Some(("application/json", body.to_string().into_bytes())),
            )
            .await;
        (s, v)
    }

    /// Creates a campaign to `list` with this text body (subject "s", from n@a.test).
    pub async fn create_campaign(&self, list: i64, text_body: &str) -> i64 {
        let body = serde_json::json!({
            "name": "c", "list_id": list, "from_addr": "n@a.test", "subject": "s", "text_body": text_body
        });
        let (s, c) = self.json(Method::POST, "/v1/campaigns", body).await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        c["id"].as_i64().expect("campaign id")
    }

    /// A new list holding the subscribers of `csv` (imported through the API; 200 expected).
    pub async fn list_with_csv(&self, csv: &str) -> i64 {
        let (s, list) = self
            .json(Method::POST, "/v1/lists", serde_json::json!({"name": "l"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{list}");
        let l = list["id"].as_i64().expect("list id");
        let (s, _, report) = self
            .call(
                Method::POST,
                &format!("/v1/lists/{l}/subscribers/import"),
                Some(&self.key),
                Some(("text/csv", csv.as_bytes().to_vec())),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{report}");
        l
    }

    /// Sends a campaign (202 expected).
    pub async fn send(&self, campaign: i64) {
        let (s, body) = self
            .json(
                Method::POST,
                &format!("/v1/campaigns/{campaign}/send"),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    }

    /// GET with this tenant's key.
    pub async fn get(&self, path: &str) -> (StatusCode, serde_json::Value) {
        let (s, _, v) = self.call(Method::GET, path, Some(&self.key), None).await;
        (s, v)
    }
}

/// The API's background work (one recorder per shard, the expander) running for a test.
#[derive(Debug)]
pub struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    /// Stops the tasks and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

impl TestApi {
    /// Starts the recorders and the expander, as the API process does.
    pub fn background(&self) -> Background {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let mut tasks =
            hikyaku_api::recorder::spawn(self.state.clone(), self.redis_client.clone(), rx.clone());
        tasks.push(tokio::spawn(hikyaku_api::expansion::run(
            self.state.clone(),
            rx,
        )));
        Background { stop, tasks }
    }

    /// Serves the inbound listener (bounces, complaints) with `settings` on a free port of
    /// 127.0.0.1; send `true` to stop it.
    pub async fn inbound(
        &self,
        settings: hikyaku_api::inbound::InboundSettings,
    ) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(hikyaku_api::inbound::serve(
            self.state.clone(),
            l,
            settings,
            rx,
        ));
        (addr, tx)
    }

    /// Records deliveries of jobs (`campaign`, seq) to their recipients, as the recorder records
    /// the engine's `delivered` events.
    pub async fn record_delivered(&self, campaign: i64, jobs: &[(i64, &str)]) {
        use hikyaku_queue_schema::{Event, EventStatus, JobId};
        let now = crate::queue::now_ms();
        let events: Vec<Event> = jobs
            .iter()
            .map(|(seq, rcpt)| Event {
                id: JobId {
                    campaign: campaign as u64,
                    seq: *seq as u64,
                },
                attempt: 1,
                status: EventStatus::Delivered,
                reason: "accepted".into(),
                code: 250,
                enhanced: "2.0.0".into(),
                text: "ok".into(),
                site: "default".into(),
                mx: "mx.test".into(),
                rcpt: (*rcpt).to_owned(),
                queued_ms: now,
                at_ms: now,
            })
            .collect();
        hikyaku_api::recorder::record(&self.state, &events)
            .await
            .expect("deliveries recorded");
    }

    /// Rows in `delivery_events` for campaign `id` (events the recorder wrote).
    pub async fn recorded_events(&self, id: i64) -> i64 {
        let (rows,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM delivery_events WHERE campaign_id = $1")
                .bind(id)
                .fetch_one(&self.state.db)
                .await
                .expect("count delivery events");
        rows
    }

    /// Waits (up to `secs`) until campaign `id` is completed.
    pub async fn wait_completed(&self, id: i64, secs: u64) {
        crate::wait_for(
            std::time::Duration::from_secs(secs),
            &format!("campaign {id} completed"),
            || async {
                let (_, stats) = self.get(&format!("/v1/campaigns/{id}/stats")).await;
                (stats["status"] == "completed").then_some(())
            },
        )
        .await;
    }
}

/// The admin CLI as a process (`bin`: a test's `env!("CARGO_BIN_EXE_hikyaku-under-test")`)
/// against one test's database and Redis.
#[derive(Debug, Clone)]
pub struct Cli {
    /// The binary.
    pub bin: String,
    /// `HIKYAKU_DATABASE_URL`.
    pub database_url: String,
    /// `HIKYAKU_REDIS_URL`.
    pub redis_url: String,
}

impl Cli {
    /// The CLI for `api`'s database and `redis`.
    pub fn new(bin: &str, api: &TestApi, redis: &TestRedis) -> Self {
        Cli {
            bin: bin.to_owned(),
            database_url: api.db.url.clone(),
            redis_url: redis.url.clone(),
        }
    }

    /// Runs it: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        // Through the environment: a URL with a password is refused as a flag.
        let out = std::process::Command::new(&self.bin)
            .env("HIKYAKU_DATABASE_URL", &self.database_url)
            .env("HIKYAKU_REDIS_URL", &self.redis_url)
            .args(args)
            .output()
            .expect("the CLI runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs it with `--json`, expects success, returns the parsed output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (code, out, err) = self.run(&all);
        assert_eq!(code, 0, "hikyaku {args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("hikyaku {args:?} JSON: {e}: {out}"))
    }
}
