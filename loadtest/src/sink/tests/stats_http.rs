//! The stats JSON and its HTTP endpoint.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::client::{body, Client};
use super::start;
use crate::sink::{serve_stats, Profile};

#[tokio::test]
async fn stats_json_over_http() {
    let (sink, addr) = start(Profile::plain("plain")).await;
    let (mut c, _) = Client::ready(addr).await;
    c.send("MAIL FROM:<a@s.test>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
        .await;
    c.replies(4).await;
    c.send(body("json")).await;
    c.reply().await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_stats(listener, sink.stats(), async move {
        let _ = stop_rx.await;
    }));

    let mut http = TcpStream::connect(http_addr).await.unwrap();
    http.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    let json: serde_json::Value =
        serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["accepted"], 2);
    assert_eq!(json["distinct"], 2);
    assert_eq!(json["duplicates"], 0);
    let plain = &json["profiles"]["plain"];
    assert_eq!(plain["accepted"], 2);
    assert_eq!(plain["connections_total"], 1);
    assert_eq!(plain["max_in_any_second"], 2);
    assert_eq!(plain["per_second"][0], 2);
    assert!(json["first_accept_ms"].is_u64());

    let mut other = TcpStream::connect(http_addr).await.unwrap();
    other
        .write_all(b"GET /nope HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    other.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 404"));

    stop_tx.send(()).unwrap();
    server.await.unwrap();
    sink.stop().await;
}
