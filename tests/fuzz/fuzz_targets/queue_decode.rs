//! Decoding what Redis hands back (jobs, events, campaign snapshots, node states, drain rules,
//! VERP addresses): never panics, and whatever decodes encodes back to bytes that decode to
//! the same value.
#![no_main]

use hikyaku_queue_schema::{CampaignSnapshot, Event, Job};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(job) = Job::decode(data) {
        let again = Job::decode(&job.encode()).expect("a decoded job re-encodes");
        assert_eq!(format!("{job:?}"), format!("{again:?}"));
    }
    if let Ok(event) = Event::decode(data) {
        let again = Event::decode(&event.encode()).expect("a decoded event re-encodes");
        assert_eq!(format!("{event:?}"), format!("{again:?}"));
    }
    if let Ok(snap) = CampaignSnapshot::decode(data) {
        let again =
            CampaignSnapshot::decode(&snap.encode()).expect("a decoded snapshot re-encodes");
        assert_eq!(format!("{snap:?}"), format!("{again:?}"));
    }
    let _ = hikyaku_queue_schema::node::SiteState::decode(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = hikyaku_queue_schema::drain::Rule::parse(text);
        let _ = hikyaku_queue_schema::verp::parse(text, "bounce.test");
    }
});
