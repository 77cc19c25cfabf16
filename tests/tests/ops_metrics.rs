//! The operations files speak of what the code really exports: every `hikyaku_*` metric named
//! in the Prometheus rules (and the Grafana dashboards, when present) is on the `/metrics` of
//! a running engine (its own process) or API after a small campaign, and every alert has its
//! runbook page.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hikyaku_tests::api::TestApi;
use hikyaku_tests::world::{World, STANDARD_SITES};
use hikyaku_tests::{http_get, wait_for};

const ENGINE: &str = env!("CARGO_BIN_EXE_engine-under-test");

fn ops() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ops")
        .canonicalize()
        .expect("ops/ exists")
}

/// Every file under `dir` with extension `ext`.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p, ext));
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
    out
}

/// The `hikyaku_…` metric names a text mentions (histogram series suffixes folded into their
/// family).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(p) = text[i..].find("hikyaku_") {
        let start = i + p;
        let word_start = start == 0
            || !(b[start - 1].is_ascii_alphanumeric()
                || b[start - 1] == b'_'
                || b[start - 1] == b':');
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(text.len() - start);
        if word_start {
            let name = &text[start..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(family.to_owned());
        }
        i = end;
    }
    names
}

/// Metric families a Prometheus text exposition holds (`# TYPE` lines).
fn exported(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_dashboards_name_is_exported_and_every_alert_has_a_runbook() {
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let background = api.background();

    let port = hikyaku_tests::redis::free_port();
    let config = format!(
        "metrics_listen = \"127.0.0.1:{port}\"\n{}",
        world.config_toml("", STANDARD_SITES)
    );
    let engine = world.engine_process(ENGINE, &config);
    let l = api
        .list_with_csv("email\na@gmail.test\nb@yahoo.test\nc@other.test\n")
        .await;
    let cid = api.create_campaign(l, "hello").await;
    api.send(cid).await;
    api.wait_completed(cid, 60).await;

    let engine_text = wait_for(Duration::from_secs(10), "engine metrics", || async move {
        http_get(port, "/metrics")
            .await
            .filter(|t| t.contains("hikyaku_messages_total"))
    })
    .await;
    let api_text = {
        // Text, not JSON: through the router directly.
        let req = axum::http::Request::builder()
            .uri("/metrics")
            .body(axum::body::Body::empty())
            .expect("request");
        let r = tower::ServiceExt::oneshot(api.router.clone(), req)
            .await
            .expect("infallible");
        assert!(r.status().is_success(), "{:?}", r.status());
        let bytes = axum::body::to_bytes(r.into_body(), 16 << 20)
            .await
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf8")
    };
    engine.kill();
    background.stop().await;

    let have: BTreeSet<String> = exported(&engine_text)
        .union(&exported(&api_text))
        .cloned()
        .collect();
    let mut named = BTreeSet::new();
    let mut sources = Vec::new();
    for f in files(&ops().join("prometheus"), "yml")
        .into_iter()
        .chain(files(&ops().join("grafana"), "json"))
    {
        if f.starts_with(ops().join("prometheus/tests")) {
            continue; // rule tests feed made-up series on purpose
        }
        let text = std::fs::read_to_string(&f).expect("ops file");
        named.extend(metric_names(&text));
        sources.push(f);
    }
    assert!(
        named.len() >= 10,
        "the rules name the metrics they watch: {named:?} in {sources:?}"
    );
    let missing: Vec<&String> = named.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named in ops/ but not exported: {missing:?}\nexported: {have:?}"
    );

    let rules =
        std::fs::read_to_string(ops().join("prometheus/rules/hikyaku.rules.yml")).expect("rules");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for a in alerts {
        let page = ops().join(format!("runbooks/{a}.md"));
        let text = std::fs::read_to_string(&page)
            .unwrap_or_else(|e| panic!("runbook for {a} ({}): {e}", page.display()));
        assert!(text.contains(a), "{} is about {a}", page.display());
    }
}

/// Every `expr` of every panel target in a Grafana dashboard (rows' panels included).
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_owned()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Percent-encodes a query parameter.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Kills the child when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_a_run_and_every_dashboard_query_returns_data() {
    let prometheus = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect(
            "prometheus is installed (Debian package `prometheus`; ops/run-tests.sh installs it)",
        );
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let background = api.background();
    // The API's /metrics on a real port, for Prometheus.
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("api port");
    let api_port = api_listener.local_addr().expect("addr").port();
    let router = api.router.clone();
    tokio::spawn(async move {
        let _ = axum::serve(api_listener, router).await;
    });
    let engine_port = hikyaku_tests::redis::free_port();
    let config = format!(
        "metrics_listen = \"127.0.0.1:{engine_port}\"\n{}",
        world.config_toml("", STANDARD_SITES)
    );
    let engine = world.engine_process(ENGINE, &config);

    let dir = std::env::temp_dir().join(format!("hk-prom-{}-{engine_port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("prometheus dir");
    let rules = ops().join("prometheus/rules/hikyaku.rules.yml");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: hikyaku-engine\n    static_configs:\n      - targets: ['127.0.0.1:{engine_port}']\n  - job_name: hikyaku-api\n    static_configs:\n      - targets: ['127.0.0.1:{api_port}']\n",
            rules.display()
        ),
    )
    .expect("config");
    let prom_port = hikyaku_tests::redis::free_port();
    let _prom = Killed(
        std::process::Command::new(prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );

    // Deliveries, a deferral that then goes through, a bounce, at three sites.
    let l = api
        .list_with_csv(
            "email\na@gmail.test\nb@yahoo.test\nc@other.test\ndefer1-d@other.test\nunknown-e@gmail.test\n",
        )
        .await;
    let cid = api.create_campaign(l, "hello").await;
    api.send(cid).await;
    api.wait_completed(cid, 60).await;

    let mut exprs = Vec::new();
    for f in files(&ops().join("grafana"), "json") {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).expect("dashboard")).expect("json");
        for (title, e) in dashboard_exprs(&d) {
            exprs.push((
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                title,
                e,
            ));
        }
    }
    assert!(
        exprs.len() >= 20,
        "the dashboards have panels: {}",
        exprs.len()
    );
    let panels: BTreeSet<&str> = exprs.iter().map(|e| e.1.as_str()).collect();
    for needed in [
        "Messages/min by site and result",
        "Deferrals by site and reason",
        "Bounces by reason",
        "Queue depth and oldest job age per shard",
        "Connections per site",
        "Rate-limit state and adaptive changes",
        "Campaign progress",
        "Delivery latency",
        "SMTP reply time",
        "Redis ops",
        "Memory",
    ] {
        assert!(
            panels.contains(needed),
            "panel {needed:?} (runbooks point to it)"
        );
    }
    // Every query, as Grafana would send it, until each returns data (rates need two scrapes).
    let mut empty: Vec<String> = Vec::new();
    for _ in 0..30 {
        empty.clear();
        for (file, title, e) in &exprs {
            let q = e.replace("$__rate_interval", "1m").replace("$site", ".*");
            let body = http_get(prom_port, &format!("/api/v1/query?query={}", encode(&q))).await;
            let has_data = body
                .as_deref()
                .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                .is_some_and(|v| {
                    v["status"] == "success"
                        && v["data"]["result"]
                            .as_array()
                            .is_some_and(|r| !r.is_empty())
                });
            if !has_data {
                empty.push(format!("{file} / {title}: {q}"));
            }
        }
        if empty.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    engine.kill();
    background.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
}
