//! Bad input to the engine's command line: a clear message naming the problem, a non-zero exit,
//! and nothing written to Redis.

use std::process::Command;

use hikyaku_tests::redis::TestRedis;

const ENGINE: &str = env!("CARGO_BIN_EXE_engine-under-test");

fn run_with(config: &str) -> (bool, String) {
    let path = std::env::temp_dir().join(format!(
        "hikyaku-bad-{}-{}.toml",
        std::process::id(),
        config.len()
    ));
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(ENGINE)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("engine runs");
    let _ = std::fs::remove_file(&path);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bad_configs_are_refused_with_the_field_named_and_change_nothing() {
    let redis = TestRedis::start();
    let url = &redis.url;
    let cases = [
        (format!("redis_url = \"{url}\"\nshardz = 2\n"), "shardz"),
        (format!("redis_url = \"{url}\"\nshards = 0\n"), "shards"),
        (
            format!("redis_url = \"{url}\"\n[sites.google]\nrate = \"fast\"\n"),
            "rate",
        ),
        (
            format!("redis_url = \"{url}\"\n[queue]\nclaim_idle = \"10\"\n"),
            "unit",
        ),
        (
            format!("redis_url = \"{url}\"\nsmarthost = \"relay-without-port\"\n"),
            "smarthost",
        ),
        (
            format!("redis_url = \"{url}\"\n[queue]\nmover_interval = \"0s\"\n"),
            "mover_interval",
        ),
        (
            format!("redis_url = \"{url}\"\n[sites.google]\ndata_timeout = \"0s\"\n"),
            "data_timeout",
        ),
    ];
    for (config, needle) in cases {
        let (ok, stderr) = run_with(&config);
        assert!(!ok, "refused: {config}");
        assert!(
            stderr.contains(needle),
            "message names {needle:?}: {stderr}"
        );
    }
    let (ok, stderr) = run_with("redis_url = \"redis://127.0.0.1:1\"\n");
    assert!(
        !ok && stderr.contains("redis"),
        "unreachable Redis is a clear error: {stderr}"
    );
    let mut con = redis.con().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .expect("keys");
    assert!(keys.is_empty(), "nothing written: {keys:?}");

    // A Redis laid out for another shard count is refused, not reshuffled.
    hikyaku_queue_schema::meta::record_or_read(&mut con, 4)
        .await
        .expect("meta");
    let (ok, stderr) = run_with(&format!("redis_url = \"{url}\"\nshards = 2\n"));
    assert!(!ok && stderr.contains("4 shards"), "{stderr}");
}
