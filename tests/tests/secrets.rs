//! Secrets come only from files or the environment and never come back out.
//!
//! The API process runs with a database password, a Redis password (`requirepass`) and a
//! token-signing key, all from the environment, at debug log level (API keys are not logged
//! either); requests of every kind
//! (documents, metrics, reads, writes, bad input, bad keys, bad tokens) are made. Neither its
//! log nor any response holds any of the three. Given on the command line, a URL with a
//! password is refused by the daemon and the admin CLI (non-zero exit, the environment
//! variable named, the password not echoed), and the token key has no flag at all.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use hikyaku_tests::api::TestDb;
use hikyaku_tests::redis::{free_port, TestRedis};

const API: &str = env!("CARGO_BIN_EXE_api-under-test");
const CLI: &str = env!("CARGO_BIN_EXE_hikyaku-under-test");
const PG_PASSWORD: &str = "PgPassw0rd-4e1c9a";
const REDIS_PASSWORD: &str = "RedisPassw0rd-77b2d0";
const TOKEN_SECRET: &str = "TokenSigningKey-0f8e7d6c5b4a39281706f5e4d3c2b1a0";

/// `url` with a password for its user, and the password: the test database's own if it has
/// one, else `PG_PASSWORD` (trust authentication ignores it; the client does not know that).
fn with_pg_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, host) = rest
        .split_once('@')
        .expect("a user in the test database URL");
    match userinfo.split_once(':') {
        Some((_, pw)) => (url.to_owned(), pw.to_owned()),
        None => (
            format!("{scheme}://{userinfo}:{PG_PASSWORD}@{host}"),
            PG_PASSWORD.to_owned(),
        ),
    }
}

/// One HTTP/1.1 request; the whole response (status line, headers, body) as text.
fn http(port: u16, method: &str, path: &str, key: Option<&str>, body: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

fn assert_no_secret(what: &str, text: &str, pg_password: &str) {
    for secret in [pg_password, REDIS_PASSWORD, TOKEN_SECRET] {
        assert!(!text.contains(secret), "{what} holds a secret:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_the_environment_are_never_logged_or_returned_and_refused_as_flags() {
    let redis = TestRedis::start_with(&["--appendonly", "no", "--requirepass", REDIS_PASSWORD]);
    let db = TestDb::create().await;
    let (db_url, pg_password) = with_pg_password(&db.url);
    let redis_url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", redis.port);
    let port = free_port();
    let log = std::env::temp_dir().join(format!("hikyaku-secrets-{}.log", std::process::id()));
    let mut api = Command::new(API)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("HIKYAKU_DATABASE_URL", &db_url)
        .env("HIKYAKU_REDIS_URL", &redis_url)
        .env("HIKYAKU_TOKEN_SECRET", TOKEN_SECRET)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("api starts");
    hikyaku_tests::wait_for(Duration::from_secs(30), "api ready", || async {
        TcpStream::connect(("127.0.0.1", port))
            .is_ok()
            .then(|| http(port, "GET", "/readyz", None, ""))
            .filter(|r| r.starts_with("HTTP/1.1 200"))
    })
    .await;

    // The admin CLI with the same environment makes a tenant and shows its key once.
    let out = Command::new(CLI)
        .args(["--json", "tenant", "create", "acme"])
        .env("HIKYAKU_DATABASE_URL", &db_url)
        .env("HIKYAKU_REDIS_URL", &redis_url)
        .output()
        .expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let key = created["api_key"].as_str().expect("key").to_owned();

    let mut responses = String::new();
    let list = http(port, "POST", "/v1/lists", Some(&key), r#"{"name":"news"}"#);
    assert!(list.starts_with("HTTP/1.1 201"), "{list}");
    for (method, path, key, body) in [
        ("GET", "/openapi.json", None, ""),
        ("GET", "/metrics", None, ""),
        ("GET", "/readyz", None, ""),
        ("GET", "/v1/lists", Some(key.as_str()), ""),
        ("POST", "/v1/lists", Some(key.as_str()), r#"{"name": 12}"#),
        ("POST", "/v1/lists", Some(key.as_str()), "not json"),
        ("GET", "/v1/lists/999999", Some(key.as_str()), ""),
        ("GET", "/v1/lists", Some("hk_00000000_wrong"), ""),
        ("GET", "/u/1.1.1.00000000000000000000000000000000", None, ""),
        (
            "GET",
            "/t/1.1.1.00000000000000000000000000000000/o.gif",
            None,
            "",
        ),
        ("GET", "/v1/suppressions/export", Some(key.as_str()), ""),
    ] {
        let r = http(port, method, path, key, body);
        assert!(r.starts_with("HTTP/1.1 "), "{method} {path}: {r}");
        assert_no_secret(&format!("{method} {path}"), &r, &pg_password);
        responses.push_str(&r);
    }
    assert!(
        responses.contains("HTTP/1.1 401"),
        "the wrong key was refused"
    );

    let _ = Command::new("kill")
        .args(["-TERM", &api.id().to_string()])
        .status();
    let _ = api.wait();
    let logged = std::fs::read_to_string(&log).expect("log");
    let _ = std::fs::remove_file(&log);
    assert!(logged.contains("api listening"), "the API logged: {logged}");
    assert!(
        logged.lines().count() >= 5,
        "debug logging was on: {logged}"
    );
    assert_no_secret("the API's log", &logged, &pg_password);
    assert!(
        !logged.contains(&key[12..]),
        "the API key's secret part is not logged: {logged}"
    );

    // As flags: refused, named, not echoed.
    for (bin, args) in [
        (API, vec!["--database-url", db_url.as_str()]),
        (API, vec!["--redis-url", redis_url.as_str()]),
        (
            CLI,
            vec!["--database-url", db_url.as_str(), "tenant", "list"],
        ),
        (
            CLI,
            vec!["tenant", "list", "--redis-url", redis_url.as_str()],
        ),
    ] {
        let out = Command::new(bin)
            .args(&args)
            .env_remove("HIKYAKU_DATABASE_URL")
            .env_remove("HIKYAKU_REDIS_URL")
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bin} {args:?} must refuse");
        assert!(err.contains("in the environment (HIKYAKU_"), "{err}");
        assert_no_secret("the refusal", &err, &pg_password);
    }
    // `--help` shows where the URLs come from, not what they are.
    for bin in [API, CLI] {
        let out = Command::new(bin)
            .arg("--help")
            .env("HIKYAKU_DATABASE_URL", &db_url)
            .env("HIKYAKU_REDIS_URL", &redis_url)
            .output()
            .expect("runs");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("HIKYAKU_DATABASE_URL"), "{help}");
        assert_no_secret("--help", &help, &pg_password);
    }
    let out = Command::new(API)
        .args(["--token-secret", TOKEN_SECRET])
        .output()
        .expect("runs");
    assert!(!out.status.success(), "there is no --token-secret flag");
    assert_no_secret(
        "the refusal",
        &String::from_utf8_lossy(&out.stderr),
        &pg_password,
    );
}
