//! Provider emulation: connection caps, rate limits, per-connection message caps.

use super::client::{body, Client};
use super::start;
use crate::sink::{Profile, ProviderKind};

/// Sends one complete message to `rcpt` on an EHLO'd client and checks it is queued.
async fn deliver(c: &mut Client, rcpt: &str) {
    c.send(format!(
        "MAIL FROM:<a@s.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
    ))
    .await;
    let r = c.replies(3).await;
    assert!(r[2].starts_with("354"), "{r:?}");
    c.send(body(rcpt)).await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued"));
}

#[tokio::test]
async fn max_conns_refuses_with_421() {
    let mut profile = Profile::provider(ProviderKind::Google);
    profile.max_conns = 1;
    let (sink, addr) = start(profile).await;
    let (_first, _) = Client::ready(addr).await;
    let mut second = Client::connect(addr).await;
    assert_eq!(
        second.reply().await,
        "421 4.7.0 Too many concurrent SMTP connections; please try again later\r\n"
    );
    assert!(second.closed().await);
    let stats = sink.stats().profile("google").unwrap();
    assert_eq!(stats.throttled, 1);
    assert_eq!(stats.max_concurrent_conns, 1);
    assert_eq!(stats.connections_total, 1);
    sink.stop().await;
}

#[tokio::test]
async fn au_resets_connections_over_the_cap() {
    let mut profile = Profile::provider(ProviderKind::Au);
    profile.max_conns = 1;
    let (sink, addr) = start(profile).await;
    let (_first, _) = Client::ready(addr).await;
    let mut second = Client::connect(addr).await;
    assert!(second.closed().await);
    assert_eq!(sink.stats().profile("au").unwrap().throttled, 1);
    sink.stop().await;
}

#[tokio::test]
async fn google_rate_limit_text_names_the_peer() {
    let mut profile = Profile::provider(ProviderKind::Google);
    profile.max_rate = 2;
    let (sink, addr) = start(profile).await;
    let (mut c, _) = Client::ready(addr).await;
    deliver(&mut c, "r1@x.test").await;
    deliver(&mut c, "r2@x.test").await;
    c.send("MAIL FROM:<a@s.test>\r\n").await;
    assert_eq!(
        c.reply().await,
        "421-4.7.28 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail originating\r\n\
         421-4.7.28 from your IP address. To protect our users from spam, mail sent from your IP\r\n\
         421 4.7.28 address has been temporarily rate limited. - gsmtp\r\n"
    );
    assert!(c.closed().await);
    let stats = sink.stats().profile("google").unwrap();
    assert_eq!(
        (stats.accepted, stats.throttled, stats.max_in_any_second),
        (2, 1, 2)
    );
    sink.stop().await;
}

#[tokio::test]
async fn yahoo_jp_rate_limit_text() {
    let mut profile = Profile::provider(ProviderKind::YahooJp);
    profile.max_rate = 1;
    let (sink, addr) = start(profile).await;
    let (mut c, _) = Client::ready(addr).await;
    deliver(&mut c, "r1@x.test").await;
    c.send("MAIL FROM:<a@s.test>\r\n").await;
    assert_eq!(
        c.reply().await,
        "421 4.7.0 Messages from 127.0.0.1 temporarily deferred - VS98-IP0 deferred\r\n"
    );
    sink.stop().await;
}

#[tokio::test]
async fn max_msgs_per_conn_closes_after_n() {
    let mut profile = Profile::provider(ProviderKind::Yahoo);
    profile.max_msgs_per_conn = 1;
    let (sink, addr) = start(profile).await;
    let (mut c, _) = Client::ready(addr).await;
    deliver(&mut c, "r1@x.test").await;
    c.send("MAIL FROM:<a@s.test>\r\n").await;
    assert_eq!(
        c.reply().await,
        "421 Max message per connection reached, closing transmission channel\r\n"
    );
    assert!(c.closed().await);
    sink.stop().await;
}
