//! The operations files speak of what the code really exports: every `hikyaku_*` metric named
//! in the Prometheus rules (and the Grafana dashboards, when present) is on the `/metrics` of
//! a running engine (its own process) or API after a small campaign, and every alert has its
//! runbook page.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hikyaku_tests::api::TestApi;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, STANDARD_SITES};

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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let recorders =
        hikyaku_api::recorder::spawn(api.state.clone(), api.redis_client.clone(), stop_rx.clone());
    let expander = tokio::spawn(hikyaku_api::expansion::run(api.state.clone(), stop_rx));

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
    wait_for(
        Duration::from_secs(60),
        "the campaign completed",
        || async {
            let (_, stats) = api.get(&format!("/v1/campaigns/{cid}/stats")).await;
            (stats["status"] == "completed").then_some(())
        },
    )
    .await;

    let scrape = || async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    let engine_text = wait_for(Duration::from_secs(10), "engine metrics", || async move {
        scrape()
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
    let _ = stop_tx.send(true);
    engine.kill();
    for t in recorders {
        let _ = t.await;
    }
    let _ = expander.await;

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
