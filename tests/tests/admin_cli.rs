//! The admin batch CLI (`hikyaku`, run as a process) against a running engine and API: site
//! control and the fleet's view of sites, queue stats / inspect / drain / requeue, campaign
//! list / report / state changes, exit codes for bad input, and the audit trail.

use std::time::Duration;

use hikyaku_api::admin::queue::Filter;
use hikyaku_api::admin::Ctx;
use hikyaku_queue_schema::{Job, JobId, Keys, LastTry};
use hikyaku_tests::api::{Cli, TestApi};
use hikyaku_tests::queue;
use hikyaku_tests::redis::TestRedis;
use hikyaku_tests::wait_for;
use hikyaku_tests::world::{World, STANDARD_SITES};

const CLI: &str = env!("CARGO_BIN_EXE_hikyaku-under-test");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_control_sites_queues_and_campaigns_from_the_cli_and_every_command_is_audited() {
    let world = World::standard().await;
    let api = TestApi::start(&world.redis).await;
    let background = api.background();
    let engine = world.engine(world.config("", STANDARD_SITES));
    let r = &world.redis;
    let cli = Cli::new(CLI, &api, r);

    // The fleet's view of its sites, as running engines publish it.
    let sites = wait_for(Duration::from_secs(10), "sites published", || async {
        let v = cli.json(&["site", "list"]);
        (v.as_array().is_some_and(|a| a.len() >= 4)).then_some(v)
    })
    .await;
    let names: Vec<&str> = sites
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["site"].as_str())
        .collect();
    for s in ["default", "docomo", "google", "yahoo"] {
        assert!(names.contains(&s), "{s} in {names:?}");
    }
    assert!(sites
        .as_array()
        .into_iter()
        .flatten()
        .all(|s| s["nodes"] == 1 && s["adaptive"] == "normal" && s["paused"] == false));

    // Bad input: clear errors, distinct exit codes, nothing changed.
    let (code, _, err) = cli.run(&["site", "pause", "nosuch"]);
    assert_eq!(code, 3, "unknown site: {err}");
    assert!(err.contains("nosuch") && err.contains("yahoo"), "{err}");
    let (code, _, err) = cli.run(&["site", "set-rate", "yahoo", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("rate"), "{err}");
    let (code, _, err) = cli.run(&["queue", "requeue"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli.run(&[
        "queue",
        "drain",
        "--site",
        "yahooo",
        "--as",
        "cancelled",
        "--reason",
        "typo",
    ]);
    assert_eq!(code, 3, "a drain of an unknown site is refused: {err}");
    let (code, _, err) = cli.run(&[
        "queue",
        "drain",
        "--campaign",
        "999999",
        "--as",
        "cancelled",
        "--reason",
        "x",
    ]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = cli.run(&[
        "queue",
        "drain",
        "--site",
        "yahoo",
        "--as",
        "cancelled",
        "--reason",
        "",
    ]);
    assert_eq!(code, 2, "{err}");
    let drains: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(Keys::drains())
        .query_async(&mut r.con().await)
        .await
        .expect("drains");
    assert!(
        drains.is_empty(),
        "refused drains wrote nothing: {drains:?}"
    );
    let (code, _, _) = cli.run(&["campaign", "pause", "999999"]);
    assert_eq!(code, 3);
    let (code, _, err) = cli.run(&["site", "pause"]);
    assert_eq!(code, 2, "usage error: {err}");
    let mut con = r.con().await;
    let ctl: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(Keys::site_ctl("yahoo"))
        .query_async(&mut con)
        .await
        .expect("ctl");
    assert!(ctl.is_empty(), "bad input changed nothing: {ctl:?}");

    // Yahoo paused: its jobs wait in the retry sets, remembered as yahoo's.
    let (code, out, err) = cli.run(&["site", "pause", "yahoo"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("paused"), "{out}");
    wait_for(Duration::from_secs(10), "yahoo shown paused", || async {
        let v = cli.json(&["site", "list"]);
        v.as_array()
            .into_iter()
            .flatten()
            .any(|s| s["site"] == "yahoo" && s["paused"] == true && s["nodes_paused"] == 1)
            .then_some(())
    })
    .await;
    let l = api
        .list_with_csv(
            "email\na@gmail.test\nb@gmail.test\ny1@yahoo.test\ny2@yahoo.test\ny3@aol.test\n",
        )
        .await;
    let cid = api.create_campaign(l, "hello").await;
    api.send(cid).await;
    wait_for(
        Duration::from_secs(30),
        "yahoo's jobs held in the retry sets",
        || async {
            let v = cli.json(&["queue", "stats", "--by-site"]);
            (v["retry_by_site"]["yahoo"].as_u64() == Some(3)).then_some(v)
        },
    )
    .await;
    let jobs = cli.json(&["queue", "inspect", "--site", "yahoo"]);
    let jobs = jobs.as_array().expect("array");
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    assert!(jobs
        .iter()
        .all(|j| j["place"] == "retry" && j["site"] == "yahoo"));

    // Drain them as bounced with a reason: engines end them, nothing is sent to yahoo.
    let d = cli.json(&[
        "queue",
        "drain",
        "--site",
        "yahoo",
        "--as",
        "bounced",
        "--reason",
        "domain retired by customer",
    ]);
    assert_eq!(d["requeued"], 3, "{d}");
    api.wait_completed(cid, 30).await;
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT rcpt, status, reason, detail FROM delivery_events WHERE campaign_id = $1 ORDER BY rcpt",
    )
    .bind(cid)
    .fetch_all(&api.state.db)
    .await
    .expect("events");
    for (rcpt, status, reason, detail) in &rows {
        if rcpt.ends_with("@gmail.test") {
            assert_eq!(status, "delivered", "{rcpt}");
        } else {
            assert_eq!(
                (status.as_str(), reason.as_str(), detail.as_str()),
                ("bounced", "drained", "domain retired by customer"),
                "{rcpt}"
            );
        }
    }
    assert_eq!(rows.len(), 5);
    assert_eq!(
        world
            .sink
            .stats()
            .profile("yahoo")
            .map_or(0, |p| p.accepted),
        0,
        "nothing reached yahoo"
    );
    let drains = cli.json(&["queue", "drains"]);
    assert_eq!(drains[0]["order"], "site:yahoo");
    let (code, out, _) = cli.run(&["queue", "drain", "--site", "yahoo", "--clear"]);
    assert_eq!(code, 0);
    assert!(out.contains("withdrawn"), "{out}");

    // The report: per site, bounces by class.
    let (code, csv, err) = cli.run(&["campaign", "report", &cid.to_string()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("site,sent,delivered,deferred,bounced,bounced:drained,expired"),
        "{csv}"
    );
    assert!(
        lines.contains(&"google,2,2,0,0,0,0,0,0,0,0,0,0,0,0"),
        "{csv}"
    );
    assert!(
        lines.contains(&"yahoo,0,0,0,3,3,0,0,0,0,0,0,0,0,0"),
        "{csv}"
    );
    assert!(
        lines.contains(&"TOTAL,2,2,0,3,3,0,0,0,0,0,0,0,0,0"),
        "{csv}"
    );

    // Campaign list and state changes through the API's rules.
    let list = cli.json(&["campaign", "list", "--status", "completed"]);
    assert_eq!(list[0]["id"], cid);
    assert_eq!(list[0]["finished"], 5);
    assert_eq!(list[0]["delivered"], 2);
    let (code, _, err) = cli.run(&["campaign", "pause", &cid.to_string()]);
    assert_eq!(code, 4, "a completed campaign cannot pause: {err}");
    let (code, _, err) = cli.run(&["campaign", "list", "--status", "bogus"]);
    assert_eq!(code, 2, "{err}");

    // PostgreSQL unreachable: site and queue commands still work (the audit event goes to
    // stderr), the others fail.
    let no_db = Cli {
        database_url: "postgres://postgres@127.0.0.1:1/none".into(),
        ..cli.clone()
    };
    let dead_db = |args: &[&str]| {
        let (code, _, err) = no_db.run(args);
        (code, err)
    };
    let (code, err) = dead_db(&["site", "pause", "docomo"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("audit event not written") && err.contains("site pause"),
        "{err}"
    );
    let (code, err) = dead_db(&["site", "resume", "docomo"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = dead_db(&["tenant", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("PostgreSQL"), "{err}");

    let (code, _, err) = cli.run(&["site", "resume", "yahoo"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli.run(&["site", "set-rate", "yahoo", "25"]);
    assert_eq!(code, 0, "{err}");
    let ctl: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(Keys::site_ctl("yahoo"))
        .query_async(&mut con)
        .await
        .expect("ctl");
    assert_eq!(ctl.get("paused").map(String::as_str), Some("0"));
    assert_eq!(ctl.get("rate").map(String::as_str), Some("25"));
    wait_for(
        Duration::from_secs(10),
        "yahoo's override shown",
        || async {
            let v = cli.json(&["site", "list"]);
            v.as_array()
                .into_iter()
                .flatten()
                .any(|s| s["site"] == "yahoo" && s["rate_override"] == 25.0 && s["rate"] == 25.0)
                .then_some(())
        },
    )
    .await;

    // Every command above left an audit event, failures included.
    let audit = cli.json(&["audit", "--limit", "200"]);
    let events: Vec<(String, String, String)> = audit
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["command"].as_str().unwrap_or("").to_owned(),
                e["outcome"].as_str().unwrap_or("").to_owned(),
                e["args"].to_string(),
            )
        })
        .collect();
    let has = |cmd: &str, outcome: &str, arg: &str| {
        events
            .iter()
            .any(|(c, o, a)| c == cmd && o == outcome && a.contains(arg))
    };
    assert!(has("site pause", "ok", "yahoo"), "{events:?}");
    assert!(has("site pause", "error", "nosuch"), "{events:?}");
    assert!(has("queue drain", "ok", "domain retired"), "{events:?}");
    assert!(
        has("campaign pause", "error", &cid.to_string()),
        "{events:?}"
    );
    assert!(has("campaign report", "ok", &cid.to_string()), "{events:?}");
    assert!(
        !events.iter().any(|(c, _, _)| c == "audit"),
        "reading the trail is not an action"
    );

    engine.stop().await.expect("engine stops");
    background.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_makes_only_the_chosen_deferred_jobs_due_now() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let ctx = Ctx::from_state(api.state.clone());
    let mut con = redis.con().await;
    let later = queue::now_ms() + 3_600_000;
    let mut members = Vec::new();
    for (seq, site, campaign) in [
        (1, "yahoo", 7),
        (2, "yahoo", 8),
        (3, "google", 7),
        (4, "", 7),
    ] {
        let mut j: Job = queue::job(seq, "a@b.test");
        j.id = JobId { campaign, seq };
        if !site.is_empty() {
            j.last = Some(Box::new(LastTry::new(site, "421 4.7.0 try later")));
        }
        let _: () = redis::cmd("ZADD")
            .arg(Keys::retry(0))
            .arg(later)
            .arg(j.encode())
            .query_async(&mut con)
            .await
            .expect("zadd");
        members.push(j);
    }
    let due = |con: &mut hikyaku_queue_schema::Redis| {
        let mut con = con.clone();
        async move {
            let now = queue::now_ms() + 1;
            let v: Vec<Vec<u8>> = redis::cmd("ZRANGEBYSCORE")
                .arg(Keys::retry(0))
                .arg("-inf")
                .arg(now)
                .query_async(&mut con)
                .await
                .expect("range");
            let mut ids: Vec<u64> = v
                .iter()
                .map(|b| Job::decode(b).expect("job").id.seq)
                .collect();
            ids.sort_unstable();
            ids
        }
    };
    let site = Filter {
        site: Some("yahoo".into()),
        campaign: None,
    };
    assert_eq!(
        hikyaku_api::admin::queue::requeue(&ctx, &site, false)
            .await
            .expect("requeue"),
        2
    );
    assert_eq!(due(&mut con).await, vec![1, 2]);
    let both = Filter {
        site: Some("google".into()),
        campaign: Some(7),
    };
    assert_eq!(
        hikyaku_api::admin::queue::requeue(&ctx, &both, false)
            .await
            .expect("requeue"),
        1
    );
    assert_eq!(due(&mut con).await, vec![1, 2, 3]);
    assert!(
        hikyaku_api::admin::queue::requeue(&ctx, &Filter::default(), false)
            .await
            .is_err()
    );
    let stats = hikyaku_api::admin::queue::stats(&ctx, true)
        .await
        .expect("stats");
    let by = stats.retry_by_site.expect("by site");
    assert_eq!(by.get("yahoo"), Some(&2));
    assert_eq!(by.get("google"), Some(&1));
    assert_eq!(by.get("(never routed)"), Some(&1));
    let retry: u64 = stats.shards.iter().map(|s| s.retry).sum();
    assert_eq!(retry, 4, "requeue moved nothing out of the retry set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_events_shows_the_adaptive_log_newest_first_without_remote_escapes() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let cli = Cli::new(CLI, &api, &redis);
    let mut con = redis.con().await;
    let add = |site: &str, action: &str, rate: &str, until: &str, reply: &str| {
        let mut c = redis::cmd("XADD");
        c.arg(Keys::site_events())
            .arg("*")
            .arg("site")
            .arg(site)
            .arg("action")
            .arg(action)
            .arg("rate")
            .arg(rate)
            .arg("until_ms")
            .arg(until)
            .arg("reply")
            .arg(reply);
        c
    };
    let hostile = "421 4.7.0 [TSS04] deferred \u{1b}[2J\u{1b}]0;owned\u{7}";
    for c in [
        add("yahoo", "suspend", "0", "1796313600000", hostile),
        add("yahoo", "learn", "97.5", "0", hostile),
        add("google", "cut", "50", "0", "421 4.7.28 unusual rate"),
        add("yahoo", "recover", "52.5", "0", ""),
    ] {
        let _: String = c.query_async(&mut con).await.expect("event written");
    }
    let all = cli.json(&["site", "events"]);
    let actions: Vec<&str> = all
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["recover", "cut", "learn", "suspend"],
        "newest first"
    );
    let yahoo = cli.json(&["site", "events", "yahoo", "--limit", "2"]);
    assert_eq!(yahoo.as_array().map(Vec::len), Some(2));
    assert_eq!(yahoo[1]["action"], "learn");
    assert_eq!(yahoo[1]["rate"], 97.5);
    let (code, text, err) = cli.run(&["site", "events", "yahoo"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("[TSS04] deferred") && text.contains("97.5"),
        "{text}"
    );
    assert!(text.contains("2026-12-03"), "suspension end in UTC: {text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "no escape sequence from a remote reply reaches the terminal: {text:?}"
    );
    assert!(!text.contains("google"), "one site's only: {text}");
    let (code, _, err) = cli.run(&["site", "events", "Bad Site!"]);
    assert_eq!(code, 2, "a bad site name is refused: {err}");
    let (code, _, err) = cli.run(&["site", "events", "--limit", "0"]);
    assert_eq!(code, 2, "{err}");
}
