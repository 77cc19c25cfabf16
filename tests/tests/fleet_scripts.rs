//! The fleet's Redis scripts on a real Redis: the GCRA limiter nodes lease send tokens from,
//! connection slots, and heartbeats.

use std::time::Duration;

use hikyaku_queue_schema::scripts;
use hikyaku_tests::redis::TestRedis;

#[tokio::test]
async fn leases_never_grant_more_than_the_rate_plus_the_burst() {
    let r = TestRedis::start();
    let mut con = r.con().await;
    // 1,000/s (1 ms apart), burst 10: a quiet site gives 11 at once, then nothing until the
    // schedule catches up, and says when.
    let first = scripts::lease(&mut con, "g", 1000, 10, 100)
        .await
        .expect("lease");
    assert_eq!(first.granted, 11);
    let next = scripts::lease(&mut con, "g", 1000, 10, 100)
        .await
        .expect("lease");
    if next.granted == 0 {
        assert!(
            next.wait_us > 0 && next.wait_us <= 1000,
            "wait {}",
            next.wait_us
        );
    } else {
        // Only the time that passed between the two calls (a ms or two) was granted.
        assert!(next.granted <= 3, "granted {}", next.granted);
    }

    // Three clients leasing as fast as they can for one second get the rate, not three times it.
    let started = tokio::time::Instant::now();
    let mut total = 0u64;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let mut con = r.con().await;
        tasks.push(tokio::spawn(async move {
            let mut got = 0u64;
            while started.elapsed() < Duration::from_secs(1) {
                let l = scripts::lease(&mut con, "y", 1000, 10, 5)
                    .await
                    .expect("lease");
                got += u64::from(l.granted);
                if l.granted == 0 {
                    tokio::time::sleep(Duration::from_micros(l.wait_us)).await;
                }
            }
            got
        }));
    }
    for t in tasks {
        total += t.await.expect("task");
    }
    assert!(
        (900..=1025).contains(&total),
        "three leasers got {total} tokens in a second at 1,000/s"
    );
}

#[tokio::test]
async fn connection_slots_hold_the_cap_and_lapse_without_renewal() {
    let r = TestRedis::start();
    let mut con = r.con().await;
    assert!(scripts::take_slot(&mut con, "g", "a", "a/0", 2, 60_000)
        .await
        .expect("slot"));
    assert!(scripts::take_slot(&mut con, "g", "b", "b/0", 2, 600)
        .await
        .expect("slot"));
    assert!(
        !scripts::take_slot(&mut con, "g", "c", "c/0", 2, 60_000)
            .await
            .expect("slot"),
        "a third slot over a cap of 2"
    );
    // Renewing a held slot is not a new one.
    assert!(scripts::take_slot(&mut con, "g", "a", "a/0", 2, 60_000)
        .await
        .expect("slot"));
    scripts::release_slot(&mut con, "g", "a/0")
        .await
        .expect("release");
    assert!(scripts::take_slot(&mut con, "g", "c", "c/0", 2, 60_000)
        .await
        .expect("slot"));
    // b/0's holder died (no renewal): its slot lapses and the cap frees up.
    assert!(!scripts::take_slot(&mut con, "g", "d", "d/0", 2, 60_000)
        .await
        .expect("slot"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(scripts::take_slot(&mut con, "g", "d", "d/0", 2, 60_000)
        .await
        .expect("slot"));
    // Renewal extends only slots still held.
    let renewed = scripts::renew_slots(&mut con, "g", "c", &["c/0".into(), "b/0".into()], 60_000)
        .await
        .expect("renew");
    assert_eq!(renewed, (1, 0, 2), "c and d hold slots, nobody waits");
}

#[tokio::test]
async fn a_node_that_took_every_slot_gives_them_up_to_a_node_that_wants_some() {
    let r = TestRedis::start();
    let mut con = r.con().await;
    for i in 0..4 {
        let m = format!("a/{i}");
        assert!(scripts::take_slot(&mut con, "g", "a", &m, 4, 60_000)
            .await
            .expect("slot"));
    }
    // b asks while a holds all four: refused, and now b wants one.
    assert!(!scripts::take_slot(&mut con, "g", "b", "b/0", 4, 60_000)
        .await
        .expect("slot"));
    // One of a's connections closes; a may not take the slot straight back (it holds more
    // than half while b waits), b gets it.
    scripts::release_slot(&mut con, "g", "a/0")
        .await
        .expect("release");
    assert!(!scripts::take_slot(&mut con, "g", "a", "a/4", 4, 60_000)
        .await
        .expect("slot"));
    // a learns at its next renewal that another node waits (so it closes idle connections).
    let (_, waiting, interested) =
        scripts::renew_slots(&mut con, "g", "a", &["a/1".into()], 60_000)
            .await
            .expect("renew");
    assert_eq!(
        (waiting, interested),
        (1, 2),
        "b waits; a's fair share is 4 / 2"
    );
    assert!(scripts::take_slot(&mut con, "g", "b", "b/1", 4, 60_000)
        .await
        .expect("slot"));
    let (_, waiting, _) = scripts::renew_slots(&mut con, "g", "a", &["a/1".into()], 60_000)
        .await
        .expect("renew");
    assert_eq!(waiting, 0, "b got its slot");
}

#[tokio::test]
async fn heartbeats_tell_live_from_dead_and_a_leaving_node_goes_at_once() {
    let r = TestRedis::start();
    let mut con = r.con().await;
    scripts::heartbeat(&mut con, "a", 300).await.expect("beat");
    scripts::heartbeat(&mut con, "b", 10_000)
        .await
        .expect("beat");
    let m = scripts::heartbeat(&mut con, "c", 10_000)
        .await
        .expect("beat");
    assert_eq!(m.live(), ["a", "b", "c"]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let m = scripts::heartbeat(&mut con, "c", 10_000)
        .await
        .expect("beat");
    assert_eq!(m.live(), ["b", "c"]);
    assert_eq!(m.dead(), ["a"]);
    let m = scripts::heartbeat(&mut con, "b", 0).await.expect("leave");
    assert_eq!(m.live(), ["c"]);
    assert!(
        !scripts::forget_node(&mut con, "c").await.expect("forget"),
        "a live node is not forgotten"
    );
    assert!(scripts::forget_node(&mut con, "a").await.expect("forget"));
    let m = scripts::heartbeat(&mut con, "c", 10_000)
        .await
        .expect("beat");
    assert!(m.dead().is_empty());
}
