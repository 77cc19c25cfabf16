//! Rolling upgrades: the fleet is upgraded one process at a time in the middle of a campaign,
//! so for a while two releases share the queues.
//!
//! The previous release (ops/compat/PREVIOUS_RELEASE) is built from git history
//! (ops/compat/previous-release.sh; `ops/run-tests.sh` builds it before the tests and passes
//! its directory in `HIKYAKU_PREVIOUS_RELEASE_DIR`, else this test builds it itself, once). Its
//! API creates and sends a campaign; its engine and one of this release deliver it together;
//! mid-campaign the API is upgraded (this release's API starts on the same database and queues,
//! then the old one stops), and then the old engine is stopped, as a rolling restart does.
//! Nothing is lost, nothing is sent twice, nothing ends undecodable, every recipient's end is
//! recorded once.
//!
//! A second test covers the next upgrade: what a newer release may write (codec rules) reaches
//! this release's engine, which delivers a job whose appended fields it does not know and puts
//! back, unchanged and unended, one marked must-understand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hikyaku_loadtest::promtext;
use hikyaku_queue_schema::codec::MUST_UNDERSTAND;
use hikyaku_queue_schema::{Keys, LastTry};
use hikyaku_tests::api::{TestApi, TestDb};
use hikyaku_tests::queue::{self, job};
use hikyaku_tests::redis::free_port;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, SHARDS, STANDARD_SITES};

const ENGINE: &str = env!("CARGO_BIN_EXE_engine-under-test");
const RECIPIENTS: u64 = 2_400;
const DOMAINS: [&str; 4] = ["gmail.test", "yahoo.test", "docomo.test", "corp.test"];

/// Sites slow enough (per node) that the campaign lasts the upgrade.
const SITES: &str = r#"
[sites.google]
mx_suffixes = ["google.test"]
rate = "60/s"
max_connections = 2
[sites.yahoo]
mx_suffixes = ["yahoo.test"]
rate = "60/s"
max_connections = 2
[sites.docomo]
mx_suffixes = ["docomo.test"]
rate = "60/s"
max_connections = 2
[sites.default]
rate = "60/s"
max_connections = 2
"#;

/// The directory holding the previous release's `hikyaku-engine` and `hikyaku-api`.
fn previous_release() -> PathBuf {
    if let Ok(dir) = std::env::var("HIKYAKU_PREVIOUS_RELEASE_DIR") {
        return PathBuf::from(dir);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("ops/compat/previous-release.sh"))
        .current_dir(&root)
        .stderr(Stdio::inherit())
        .output()
        .expect("running ops/compat/previous-release.sh");
    assert!(
        out.status.success(),
        "building the previous release failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A child process killed when dropped, stopped gracefully with [`Proc::terminate`].
struct Proc(Child);

impl Proc {
    fn terminate(mut self) -> bool {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.0.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: Option<(&str, &[u8])>,
) -> serde_json::Value {
    hikyaku_loadtest::httpc::request(addr, method, path, Some(key), body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        .json()
        .unwrap_or(serde_json::Value::Null)
}

/// `hikyaku_messages_total` summed over the labels matching `want`.
async fn messages(port: u16, want: &[(&str, &str)]) -> f64 {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(resp) = hikyaku_loadtest::httpc::request(addr, "GET", "/metrics", None, None).await
    else {
        return 0.0;
    };
    String::from_utf8_lossy(&resp.body)
        .lines()
        .filter_map(promtext::parse_line)
        .filter(|s| {
            s.name == "hikyaku_messages_total"
                && want
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(n, x)| n == k && x == v))
        })
        .map(|s| s.value)
        .sum()
}

fn engine_config(world: &World, node: &str, metrics: u16) -> String {
    format!(
        "metrics_listen = \"127.0.0.1:{metrics}\"\n{}",
        world.node_config_toml(node, SHARDS, "", SITES)
    )
}

fn spawn_engine(bin: &std::path::Path, config: &str, name: &str) -> Proc {
    let path = std::env::temp_dir().join(format!(
        "hikyaku-rolling-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(&path, config).expect("engine config");
    Proc(
        Command::new(bin)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_releases_share_a_campaign_through_an_upgrade_and_lose_nothing() {
    let previous = previous_release();
    let world = World::standard().await;
    let db = TestDb::create().await;

    // The previous release's API on a fresh database (its migrations) and the test's queues.
    let api_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let old_api = Proc(
        Command::new(previous.join("hikyaku-api"))
            .env("HIKYAKU_DATABASE_URL", &db.url)
            .env("HIKYAKU_REDIS_URL", &world.queue_url)
            .env("HIKYAKU_TOKEN_SECRET", "test-secret-of-at-least-32-bytes!")
            .env("HIKYAKU_BOUNCE_DOMAIN", "bounces.acme.test")
            .env(
                "HIKYAKU_UNSUBSCRIBE_MAILBOX",
                "unsubscribe@bounces.acme.test",
            )
            .env("RUST_LOG", "warn")
            .args(["--listen", &api_addr.to_string()])
            .args(["--shards", &SHARDS.to_string()])
            .args(["--public-url", "http://127.0.0.1:8080"])
            .spawn()
            .expect("starting the previous release's API"),
    );
    wait_for(Duration::from_secs(60), "the previous API up", || async {
        tokio::net::TcpStream::connect(api_addr).await.ok()
    })
    .await;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("database");
    // The port answers before the previous release has migrated its database: the tenant can
    // be made once its tables exist.
    let tenant = wait_for(
        Duration::from_secs(60),
        "the previous release's schema",
        || async { hikyaku_api::admin::create_tenant(&pool, "shop").await.ok() },
    )
    .await;
    let key = tenant.api_key;

    // Both engines on the same queues, as one fleet.
    let (old_port, new_port) = (free_port(), free_port());
    let old_engine = spawn_engine(
        &previous.join("hikyaku-engine"),
        &engine_config(&world, "node-old", old_port),
        "old",
    );
    let new_engine = spawn_engine(
        std::path::Path::new(ENGINE),
        &engine_config(&world, "node-new", new_port),
        "new",
    );

    // The campaign, through the previous API.
    let list = http(
        api_addr,
        "POST",
        "/v1/lists",
        &key,
        Some(("application/json", br#"{"name":"readers"}"#)),
    )
    .await;
    let list_id = list["id"].as_i64().expect("list id");
    let mut csv = String::from("email,name\n");
    for i in 0..RECIPIENTS {
        csv.push_str(&format!(
            "reader{i}@{},Reader {i}\n",
            DOMAINS[(i % 4) as usize]
        ));
    }
    let report = http(
        api_addr,
        "POST",
        &format!("/v1/lists/{list_id}/subscribers/import"),
        &key,
        Some(("text/csv", csv.as_bytes())),
    )
    .await;
    assert_eq!(report["accepted"].as_u64(), Some(RECIPIENTS), "{report}");
    let body = serde_json::json!({
        "name": "upgrade week", "list_id": list_id, "from_addr": "news@acme.test",
        "subject": "Hello {{name}}", "text_body": "Dear {{name}},\nnews.\n"
    })
    .to_string();
    let campaign = http(
        api_addr,
        "POST",
        "/v1/campaigns",
        &key,
        Some(("application/json", body.as_bytes())),
    )
    .await;
    let cid = campaign["id"].as_i64().expect("campaign id");
    http(
        api_addr,
        "POST",
        &format!("/v1/campaigns/{cid}/send"),
        &key,
        Some(("application/json", b"{}")),
    )
    .await;

    let stats = world.sink.stats();
    let delivered_at_least = |n: u64| {
        let s = stats.clone();
        move || {
            let s = s.clone();
            async move { (s.distinct() >= n).then_some(()) }
        }
    };
    // A quarter delivered: the API is upgraded. This release's API starts on the same
    // database and queues (both run a moment, as a rolling upgrade of API nodes does), then
    // the old one stops.
    wait_for(
        Duration::from_secs(60),
        "a quarter delivered",
        delivered_at_least(RECIPIENTS / 4),
    )
    .await;
    let api = TestApi::start_on_existing(db, &world.queue_url, SHARDS).await;
    let background = api.background();
    assert!(old_api.terminate(), "the previous API stops cleanly");

    // Half delivered: the old engine is stopped (its node is being upgraded).
    wait_for(
        Duration::from_secs(60),
        "half delivered",
        delivered_at_least(RECIPIENTS / 2),
    )
    .await;
    let old_delivered = messages(old_port, &[("result", "delivered")]).await;
    let old_undecodable = messages(old_port, &[("reason", "undecodable-job")]).await;
    assert!(old_engine.terminate(), "the previous engine stops cleanly");
    assert!(
        old_delivered > 0.0,
        "the previous release's engine delivered part of the campaign"
    );

    wait_for(
        Duration::from_secs(120),
        "every recipient delivered",
        delivered_at_least(RECIPIENTS),
    )
    .await;
    // The campaign is the old API's tenant's: its state from the record.
    wait_for(
        Duration::from_secs(60),
        "the campaign completed",
        || async {
            let status: String = sqlx::query_scalar("SELECT status FROM campaigns WHERE id = $1")
                .bind(cid)
                .fetch_one(&pool)
                .await
                .ok()?;
            (status == "completed").then_some(())
        },
    )
    .await;
    let new_delivered = messages(new_port, &[("result", "delivered")]).await;
    let new_undecodable = messages(new_port, &[("reason", "undecodable-job")]).await;
    assert!(
        new_engine.terminate(),
        "this release's engine stops cleanly"
    );
    background.stop().await;

    assert_eq!(stats.duplicates(), 0, "nothing sent twice");
    assert_eq!(
        (old_undecodable, new_undecodable),
        (0.0, 0.0),
        "nothing ended undecodable"
    );
    // The old engine's count was read before it stopped: it may finish a few more on the way
    // out, so its share is a lower bound (the sink and the record count every message).
    assert!(
        (old_delivered + new_delivered) as u64 <= RECIPIENTS,
        "the engines' counts: {old_delivered} + {new_delivered}"
    );
    let (rows, distinct, undecodable): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE campaign_id = $1 AND status = 'delivered'),
                count(DISTINCT seq) FILTER (WHERE campaign_id = $1 AND status = 'delivered'),
                count(*) FILTER (WHERE reason = 'undecodable-job')
           FROM delivery_events",
    )
    .bind(cid)
    .fetch_one(&api.state.db)
    .await
    .expect("events");
    assert_eq!(
        (rows, distinct, undecodable),
        (RECIPIENTS as i64, RECIPIENTS as i64, 0),
        "every recipient's delivery recorded once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_releases_jobs_are_read_as_far_as_known_or_left_for_its_nodes() {
    let world = World::standard().await;
    let mut con = world.redis.con().await;
    // A job of a next release (version 3: every field of version 2, then one appended), and
    // the same marked must-understand.
    let v3 = |seq: u64, rcpt: &str, version: u8| {
        let mut j = job(seq, rcpt);
        j.last = Some(Box::new(LastTry::new("google", "")));
        let mut bytes = j.encode();
        assert_eq!(bytes[1], 2);
        bytes[1] = version;
        bytes.extend_from_slice(&[3, b'n', b'e', b'w']);
        bytes
    };
    let appended = v3(1, "appended@gmail.test", 3);
    let marked = v3(2, "marked@gmail.test", 3 | MUST_UNDERSTAND);
    queue::enqueue_raw(
        &mut con,
        SHARDS,
        vec![("gmail.test", appended), ("gmail.test", marked.clone())],
    )
    .await;

    let engine = world.engine(world.config("", STANDARD_SITES));
    wait_for(
        Duration::from_secs(30),
        "the appended job delivered",
        || {
            let s = world.sink.stats();
            async move { (s.count_of("appended@gmail.test") == 1).then_some(()) }
        },
    )
    .await;
    // The marked one waits in the retry set, byte for byte, for a node that reads it.
    let retry = wait_for(Duration::from_secs(10), "the marked job put back", || {
        let mut con = con.clone();
        let marked = marked.clone();
        async move {
            for shard in 0..SHARDS {
                let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                    .arg(Keys::retry(shard))
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut con)
                    .await
                    .ok()?;
                if members.contains(&marked) {
                    return Some(members);
                }
            }
            None
        }
    })
    .await;
    assert!(retry.contains(&marked));
    engine.stop().await.expect("clean stop");
    let events = queue::events(&mut con, SHARDS).await;
    assert_eq!(events.len(), 1, "only the appended job ended: {events:?}");
    assert_eq!(events[0].rcpt, "appended@gmail.test");
    assert_eq!(world.sink.stats().count_of("marked@gmail.test"), 0);
}
