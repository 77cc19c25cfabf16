//! `hikyaku … | head`: every command whose reader goes away before it has written quits
//! quietly with status 0 — no panic, no abort, no "Broken pipe" message.

use std::io::Read;
use std::process::{Command, Stdio};

use hikyaku_tests::api::{Cli, TestApi};
use hikyaku_tests::redis::TestRedis;

const CLI: &str = env!("CARGO_BIN_EXE_hikyaku-under-test");

/// Runs `args` with stdout a pipe whose reading end is closed at once: (status, stderr).
fn with_closed_stdout(cli: &Cli, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(&cli.bin)
        .env("HIKYAKU_DATABASE_URL", &cli.database_url)
        .env("HIKYAKU_REDIS_URL", &cli.redis_url)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the CLI runs");
    drop(child.stdout.take());
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (child.wait().expect("wait"), err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let cli = Cli::new(CLI, &api, &redis);
    let list = api.list_with_csv("email\na@b.test\n").await;
    let cid = api.create_campaign(list, "hello").await.to_string();
    let tenant = api.tenant.to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["campaign", "report", &cid],
        vec!["campaign", "list"],
        vec!["--json", "campaign", "list"],
        vec!["tenant", "list"],
        vec!["apikey", "list"],
        vec!["digest"],
        vec!["digest", "--format", "csv"],
        vec!["suppressions", "export", "--tenant", &tenant],
        vec!["audit"],
    ];
    for args in commands {
        let (status, err) = with_closed_stdout(&cli, &args);
        assert!(
            !err.contains("panicked") && !err.to_ascii_lowercase().contains("broken pipe"),
            "hikyaku {args:?}: {err}"
        );
        assert_eq!(status.code(), Some(0), "hikyaku {args:?}: {status:?} {err}");
    }
}
