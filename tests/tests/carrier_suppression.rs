//! Japanese carrier addresses are suppressed after one permanent failure of any kind (a policy
//! refusal included); other addresses only for a bad mailbox or domain.

use hikyaku_queue_schema::{Event, EventStatus, JobId};
use hikyaku_tests::api::TestApi;
use hikyaku_tests::redis::TestRedis;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_policy_bounce_suppresses_a_carrier_address_only() {
    let redis = TestRedis::start();
    let api = TestApi::start(&redis).await;
    let l = api
        .list_with_csv("email\nhanako@docomo.ne.jp\ntaro@gmail.test\n")
        .await;
    let cid = api.create_campaign(l, "hi").await;
    let event = |seq: u64, rcpt: &str| Event {
        id: JobId {
            campaign: cid as u64,
            seq,
        },
        attempt: 1,
        status: EventStatus::Bounced,
        reason: "policy".into(),
        code: 550,
        enhanced: "5.7.1".into(),
        text: "550 5.7.1 rejected for policy reasons".into(),
        site: "docomo".into(),
        mx: "mx.test".into(),
        rcpt: rcpt.into(),
        queued_ms: 1,
        at_ms: 2,
    };
    let n = hikyaku_api::recorder::record(
        &api.state,
        &[event(1, "Hanako@docomo.ne.jp"), event(2, "taro@gmail.test")],
    )
    .await
    .expect("recorded");
    assert_eq!(n, 2);
    let suppressed: Vec<(String, String)> =
        sqlx::query_as("SELECT email_lower, reason FROM suppressions ORDER BY 1")
            .fetch_all(&api.state.db)
            .await
            .expect("suppressions");
    assert_eq!(
        suppressed,
        vec![("hanako@docomo.ne.jp".to_owned(), "policy".to_owned())]
    );
    // The engines' suppression feed got it once: recording the batch again adds nothing.
    let feed = || async {
        let mut con = redis.con().await;
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(hikyaku_queue_schema::Keys::suppressed())
            .arg("-")
            .arg("+")
            .query_async(&mut con)
            .await
            .expect("feed");
        entries
            .into_iter()
            .map(|(_, fields)| fields.into_iter().map(|(_, v)| v).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    let tenant = api.tenant.to_string();
    assert_eq!(
        feed().await,
        vec![vec![
            tenant.clone(),
            "hanako@docomo.ne.jp".into(),
            "add".into()
        ]]
    );
    hikyaku_api::recorder::record(&api.state, &[event(1, "Hanako@docomo.ne.jp")])
        .await
        .expect("recorded again");
    assert_eq!(feed().await.len(), 1);
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT email_lower, status FROM subscribers ORDER BY 1")
            .fetch_all(&api.state.db)
            .await
            .expect("subscribers");
    assert_eq!(
        statuses,
        vec![
            ("hanako@docomo.ne.jp".to_owned(), "bounced".to_owned()),
            ("taro@gmail.test".to_owned(), "active".to_owned())
        ]
    );
}
