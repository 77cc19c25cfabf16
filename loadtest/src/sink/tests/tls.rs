//! STARTTLS with the sink's self-signed certificate.

use rustls::pki_types::ServerName;

use super::client::{body, Client};
use super::start_with;
use crate::sink::Profile;

#[tokio::test]
async fn starttls_upgrades_and_resets_the_session() {
    let (sink, addr) = start_with(Profile::plain("plain"), true).await;
    let (mut c, ehlo) = Client::ready(addr).await;
    assert!(ehlo.contains("250-STARTTLS\r\n"));
    c.send("STARTTLS\r\n").await;
    assert_eq!(c.reply().await, "220 2.0.0 Ready to start TLS\r\n");

    // The engine's own opportunistic client: the sink must interoperate with it.
    let tls = hikyaku_engine::smtp::tls::opportunistic_connector()
        .unwrap()
        .connect(ServerName::try_from("sink.test").unwrap(), c.stream)
        .await
        .unwrap();
    let mut c = Client::over(tls);

    // The session forgot the EHLO: MAIL needs a new one.
    c.send("MAIL FROM:<a@s.test>\r\n").await;
    assert_eq!(c.reply().await, "503 5.5.1 Bad sequence of commands\r\n");
    c.send("EHLO client.test\r\n").await;
    let ehlo = c.reply().await;
    assert!(
        ehlo.ends_with("250 HELP\r\n") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    c.send("STARTTLS\r\n").await;
    assert_eq!(c.reply().await, "503 5.5.1 Bad sequence of commands\r\n");
    c.send(format!(
        "MAIL FROM:<a@s.test>\r\nRCPT TO:<tls@x.test>\r\nDATA\r\n{}",
        body("tls")
    ))
    .await;
    let r = c.replies(4).await;
    assert!(r[3].starts_with("250 2.0.0 Ok: queued"), "{r:?}");
    assert_eq!(sink.stats().count_of("tls@x.test"), 1);
    sink.stop().await;
}

#[tokio::test]
async fn starttls_not_offered_is_refused() {
    let (sink, addr) = start_with(Profile::plain("plain"), false).await;
    let (mut c, _) = Client::ready(addr).await;
    c.send("STARTTLS\r\n").await;
    assert_eq!(c.reply().await, "454 4.7.0 TLS not available\r\n");
    sink.stop().await;
}
