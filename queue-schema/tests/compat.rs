//! Wire formats across releases (rolling upgrades; the rules are in `codec`'s docs).
//!
//! `fixtures/previous-release/` holds what the previous release (ops/compat/PREVIOUS_RELEASE)
//! wrote for the values below, byte for byte: this release must read them (its nodes meet them
//! in the queues), and must write the same bytes for the same values (the previous release's
//! nodes, still running, read what this one writes). `fixtures/next-release/` holds what a next
//! release may write under the rules: fields appended under a higher version, read as far as
//! they are known; the same marked must-understand, refused as [`DecodeError::TooNew`] so that
//! callers leave it for a newer node.

use std::path::PathBuf;

use hikyaku_queue_schema::node::SiteState;
use hikyaku_queue_schema::{
    CampaignSnapshot, DecodeError, Event, EventStatus, Job, JobId, LastTry,
};

fn fixture(dir: &str, name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let hex: String = text.split_whitespace().collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn job(last: bool) -> Job {
    Job {
        id: JobId {
            campaign: 42,
            seq: 7_001,
        },
        attempt: u32::from(last),
        queued_ms: 1_764_547_200_000,
        expires_ms: 0,
        priority: 0,
        rcpt: "taro@docomo.ne.jp".into(),
        fields: vec!["太郎".into(), "gold".into()],
        last: last.then(|| {
            Box::new(LastTry::new(
                "yahoo",
                "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred",
            ))
        }),
    }
}

fn snapshot() -> CampaignSnapshot {
    CampaignSnapshot {
        id: 42,
        tenant: "7".into(),
        from_name: "Acme ニュース".into(),
        from_addr: "news@acme.test".into(),
        reply_to: "".into(),
        subject: "今週のお知らせ {{name}}".into(),
        text_body: "こんにちは {{name}} さん\n".into(),
        html_body: "<p>{{name}}</p>".into(),
        field_names: vec!["name".into(), "plan".into()],
        return_path: "bounce@bounces.acme.test".into(),
        message_id_domain: "acme.test".into(),
        headers: vec!["List-Unsubscribe: <https://acme.test/u>".into()],
        verp_domain: "bounces.acme.test".into(),
        mobile_charset: "iso-2022-jp".into(),
        id_key: "0123456789abcdef0123456789abcdef".into(),
    }
}

fn event() -> Event {
    Event {
        id: JobId {
            campaign: 42,
            seq: 7_001,
        },
        attempt: 1,
        status: EventStatus::Delivered,
        reason: "delivered".into(),
        code: 250,
        enhanced: "2.0.0".into(),
        text: "250 2.0.0 Ok: queued as 4Xyz".into(),
        site: "docomo".into(),
        mx: "mx1.docomo.test".into(),
        rcpt: "taro@docomo.ne.jp".into(),
        queued_ms: 1_764_547_200_000,
        at_ms: 1_764_547_201_234,
    }
}

fn site_state() -> SiteState {
    SiteState {
        rate: 300.5,
        override_rate: 0.0,
        adaptive: "cut to 150/s".into(),
        paused: false,
        connections: 12,
        queued: 3_400,
        at_ms: 1_764_547_201_234,
    }
}

#[test]
fn what_the_previous_release_wrote_is_read_and_written_the_same() {
    let prev = "previous-release";
    for (name, value) in [("job-v1.hex", job(false)), ("job-v2.hex", job(true))] {
        let bytes = fixture(prev, name);
        assert_eq!(Job::decode(&bytes).as_ref(), Ok(&value), "{name}");
        assert_eq!(
            value.encode(),
            bytes,
            "{name}: written as the previous release did"
        );
    }
    let bytes = fixture(prev, "snapshot-v4.hex");
    assert_eq!(CampaignSnapshot::decode(&bytes), Ok(snapshot()));
    assert_eq!(snapshot().encode(), bytes);
    let bytes = fixture(prev, "event-v1.hex");
    assert_eq!(Event::decode(&bytes), Ok(event()));
    assert_eq!(event().encode(), bytes);
    let bytes = fixture(prev, "site-state-v1.hex");
    assert_eq!(SiteState::decode(&bytes), Ok(site_state()));
    assert_eq!(site_state().encode(), bytes);
}

#[test]
fn what_a_next_release_may_write_is_read_as_far_as_known_or_left_alone() {
    let next = "next-release";
    // Fields appended under a higher version: read as far as this release knows them.
    assert_eq!(
        Job::decode(&fixture(next, "job-v3-appended.hex")),
        Ok(job(true))
    );
    assert_eq!(
        CampaignSnapshot::decode(&fixture(next, "snapshot-v5-appended.hex")),
        Ok(snapshot())
    );
    assert_eq!(
        Event::decode(&fixture(next, "event-v2-appended.hex")),
        Ok(event())
    );
    // Marked must-understand: not for this release, whose callers leave it for a newer node.
    assert_eq!(
        Job::decode(&fixture(next, "job-v3-must-understand.hex")),
        Err(DecodeError::TooNew(3))
    );
    assert_eq!(
        CampaignSnapshot::decode(&fixture(next, "snapshot-v5-must-understand.hex")),
        Err(DecodeError::TooNew(5))
    );
    assert_eq!(
        Event::decode(&fixture(next, "event-v2-must-understand.hex")),
        Err(DecodeError::TooNew(2))
    );
}
