//! `/metrics` need not face the public: with `HIKYAKU_API_METRICS_LISTEN` (`--metrics-listen`)
//! the API process serves it on that address only, and its public listener answers it like
//! any unknown path (404 problem+json); without the setting the public listener serves it as
//! before.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hikyaku_tests::api::TestDb;
use hikyaku_tests::redis::{free_port, TestRedis};

const API: &str = env!("CARGO_BIN_EXE_api-under-test");

/// `GET path` on 127.0.0.1:`port`: the whole response as text, `None` if nothing listens.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The API process on `port`, with `metrics` as `HIKYAKU_API_METRICS_LISTEN` if given, ready.
async fn start(db: &TestDb, redis: &TestRedis, port: u16, metrics: Option<u16>) -> Child {
    let mut cmd = Command::new(API);
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .env("HIKYAKU_DATABASE_URL", &db.url)
        .env("HIKYAKU_REDIS_URL", &redis.url)
        .env(
            "HIKYAKU_TOKEN_SECRET",
            "metrics-test-secret-of-32-bytes-or-more",
        )
        .env_remove("HIKYAKU_API_METRICS_LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(m) = metrics {
        cmd.env("HIKYAKU_API_METRICS_LISTEN", format!("127.0.0.1:{m}"));
    }
    let child = cmd.spawn().expect("api starts");
    hikyaku_tests::wait_for(Duration::from_secs(30), "api ready", || async {
        get(port, "/readyz").filter(|r| r.starts_with("HTTP/1.1 200"))
    })
    .await;
    child
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_to_their_own_listener_when_one_is_given() {
    let redis = TestRedis::start();
    let db = TestDb::create().await;

    // Unset: served publicly, as before.
    let port = free_port();
    let api = start(&db, &redis, port, None).await;
    let r = get(port, "/metrics").expect("an answer");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("hikyaku_api_"), "{r}");
    stop(api);

    // Set: only on the metrics listener.
    let port = free_port();
    let metrics = free_port();
    let api = start(&db, &redis, port, Some(metrics)).await;
    let r = hikyaku_tests::wait_for(Duration::from_secs(10), "metrics listener", || async {
        get(metrics, "/metrics")
    })
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("hikyaku_api_"), "{r}");
    let public = get(port, "/metrics").expect("an answer");
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
    assert!(
        public.contains("application/problem+json"),
        "a problem like any unknown path: {public}"
    );
    let r = get(port, "/healthz").expect("an answer");
    assert!(
        r.starts_with("HTTP/1.1 200"),
        "the public API still serves: {r}"
    );
    let r = get(metrics, "/v1/lists").expect("an answer");
    assert!(
        r.starts_with("HTTP/1.1 404"),
        "the metrics listener serves metrics only: {r}"
    );
    stop(api);
}
