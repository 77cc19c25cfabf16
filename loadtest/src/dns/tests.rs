//! End-to-end tests: a real server on 127.0.0.1:0 queried over UDP.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

use super::{DnsServer, Zone};

const ZONE: &str = "\
gmail.test            MX 10 mx1.google.test
gmail.test            MX 20 mx2.google.test
mx1.google.test       A 127.0.0.2
mx1.google.test       AAAA ::1
mx2.google.test       A 127.0.0.4
nullmx.test           MX 0 .
servfail.test         SERVFAIL
slow.test             TIMEOUT        # never answer queries for this name
plain.test  ttl=5     A 127.0.0.3      # optional ttl
";

async fn server() -> DnsServer {
    DnsServer::start("127.0.0.1:0".parse().unwrap(), Zone::parse(ZONE).unwrap())
        .await
        .unwrap()
}

fn query_packet(id: u16, name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// Sends `packet` and waits up to `wait` for an answer.
async fn exchange(server: &DnsServer, packet: &[u8], wait: Duration) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, server.local_addr()).await.unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(Message::from_vec(&buf[..n]).unwrap())
}

async fn ask(server: &DnsServer, name: &str, qtype: RecordType) -> Message {
    let packet = query_packet(0x4242, name, qtype, false);
    exchange(server, &packet, Duration::from_secs(5))
        .await
        .unwrap()
}

fn addresses(records: &[hickory_proto::rr::Record]) -> Vec<IpAddr> {
    records
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn mx_answer_carries_target_addresses_as_additionals() {
    let server = server().await;
    let m = ask(&server, "GMail.Test.", RecordType::MX).await;
    assert_eq!(m.id(), 0x4242);
    assert_eq!(m.message_type(), MessageType::Response);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert!(m.recursion_desired());
    assert!(!m.recursion_available());
    assert_eq!(m.queries().len(), 1);
    let mut mx: Vec<(u16, String)> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::MX(mx) => Some((mx.preference(), mx.exchange().to_ascii())),
            _ => None,
        })
        .collect();
    mx.sort();
    assert_eq!(
        mx,
        [
            (10, "mx1.google.test.".to_owned()),
            (20, "mx2.google.test.".to_owned())
        ]
    );
    let extra = addresses(m.additionals());
    assert!(extra.contains(&IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    assert!(extra.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert!(extra.contains(&IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4))));
    assert_eq!(server.queries(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_and_aaaa_and_ttl() {
    let server = server().await;
    let m = ask(&server, "plain.test", RecordType::A).await;
    assert_eq!(
        addresses(m.answers()),
        [IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))]
    );
    assert_eq!(m.answers()[0].ttl(), 5);
    let m = ask(&server, "mx1.google.test", RecordType::AAAA).await;
    assert_eq!(addresses(m.answers()), [IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    assert_eq!(m.answers()[0].ttl(), 300);
    server.stop().await;
}

#[tokio::test]
async fn null_mx_is_preference_zero_to_the_root() {
    let server = server().await;
    let m = ask(&server, "nullmx.test", RecordType::MX).await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    let RData::MX(mx) = m.answers()[0].data() else {
        panic!("not an MX: {m:?}");
    };
    assert_eq!(mx.preference(), 0);
    assert!(mx.exchange().is_root());
    assert!(m.additionals().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn nxdomain_nodata_and_servfail() {
    let server = server().await;
    let m = ask(&server, "nowhere.test", RecordType::MX).await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert!(m.answers().is_empty());

    let m = ask(&server, "plain.test", RecordType::MX).await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());

    for qtype in [RecordType::MX, RecordType::A, RecordType::AAAA] {
        let m = ask(&server, "servfail.test", qtype).await;
        assert_eq!(m.response_code(), ResponseCode::ServFail);
    }
    server.stop().await;
}

#[tokio::test]
async fn timeout_names_get_no_reply_and_garbage_is_ignored() {
    let server = server().await;
    let packet = query_packet(7, "slow.test", RecordType::MX, false);
    assert!(exchange(&server, &packet, Duration::from_millis(300))
        .await
        .is_none());
    assert!(
        exchange(&server, b"\x01\x02garbage", Duration::from_millis(200))
            .await
            .is_none()
    );
    assert!(exchange(&server, &[], Duration::from_millis(200))
        .await
        .is_none());
    // Still alive afterwards.
    assert_eq!(
        ask(&server, "plain.test", RecordType::A)
            .await
            .answers()
            .len(),
        1
    );
    assert_eq!(server.queries(), 1);
    assert_eq!(server.received(), 4);
    server.stop().await;
}

#[tokio::test]
async fn edns_queries_get_an_edns_response() {
    let server = server().await;
    let packet = query_packet(9, "gmail.test", RecordType::MX, true);
    let m = exchange(&server, &packet, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.extensions().is_some());
    assert_eq!(m.answers().len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn zone_errors_carry_line_numbers() {
    let err = Zone::parse("ok.test A 127.0.0.1\n\nbad.test MX 10\n").unwrap_err();
    assert_eq!(err.line(), 3);
    assert_eq!(err.to_string(), "zone line 3: missing MX exchange");
}
