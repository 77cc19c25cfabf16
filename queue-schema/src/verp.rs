//! VERP bounce addresses: the envelope sender of each message names its job, so a bounce that
//! comes back later (a DSN after the receiving MTA accepted the message) maps to the campaign
//! and recipient without parsing the returned message.
//!
//! Form: `b-<campaign>-<seq>-<tag>@<bounce domain>` (decimal ids, the job's [`crate::ids`] tag).
//! The engine writes it as MAIL FROM; the API's inbound listener reads the address a DSN is
//! sent to and takes the report only when the tag verifies (and the job was delivered to the
//! address the DSN names), so nobody can name a job the service did not send.

use std::fmt::Write as _;

use crate::ids::{parse_id, TAG_LEN};

/// Local-part prefix of VERP addresses.
pub const PREFIX: &str = "b-";

/// Appends the VERP address of job (`campaign`, `seq`), tagged with `tag`, under `domain` to
/// `out`.
pub fn write(out: &mut String, campaign: u64, seq: u64, tag: &[u8; TAG_LEN], domain: &str) {
    let tag = std::str::from_utf8(tag).unwrap_or_default();
    let _ = write!(out, "{PREFIX}{campaign}-{seq}-{tag}@{domain}");
}

/// Whether `address` has the shape of a VERP address under `domain` (case-insensitive domain),
/// tagged or in the untagged form of messages sent before tags: what the inbound listener
/// accepts at RCPT. Whether it names a real job is decided after the report is read, with the
/// same reply either way; an untagged one never does (no double bounce for it, though).
pub fn is_verp(address: &str, domain: &str) -> bool {
    if parse(address, domain).is_some() {
        return true;
    }
    let Some((local, d)) = address.rsplit_once('@') else {
        return false;
    };
    let legacy = local.strip_prefix(PREFIX).and_then(|rest| {
        let (c, s) = rest.split_once('-')?;
        Some(parse_id(c).is_some() && parse_id(s).is_some())
    });
    d.eq_ignore_ascii_case(domain) && legacy == Some(true)
}

/// The job a VERP address names and its tag, if `address` is one under `domain`
/// (case-insensitive domain; ids and tag in their one spelling).
pub fn parse<'a>(address: &'a str, domain: &str) -> Option<(u64, u64, &'a str)> {
    let (local, d) = address.rsplit_once('@')?;
    if !d.eq_ignore_ascii_case(domain) {
        return None;
    }
    let mut parts = local.strip_prefix(PREFIX)?.split('-');
    let c = parse_id(parts.next()?)?;
    let s = parse_id(parts.next()?)?;
    let tag = parts.next()?;
    let hex = tag.len() == TAG_LEN
        && tag
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && parts.next().is_none()).then_some((c, s, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_others() {
        let mut a = String::new();
        write(
            &mut a,
            42,
            1_000_007,
            b"0123456789abcdef",
            "bounces.acme.test",
        );
        assert_eq!(a, "b-42-1000007-0123456789abcdef@bounces.acme.test");
        assert_eq!(
            parse(&a, "bounces.acme.test"),
            Some((42, 1_000_007, "0123456789abcdef"))
        );
        assert_eq!(
            parse(
                "b-42-7-0123456789abcdef@BOUNCES.acme.test",
                "bounces.acme.test"
            ),
            Some((42, 7, "0123456789abcdef"))
        );
        for bad in [
            "b-42-7-0123456789abcdef@other.test",
            "b-42-7@bounces.acme.test",
            "x-42-7-0123456789abcdef@bounces.acme.test",
            "b-42-0123456789abcdef@bounces.acme.test",
            "b--7-0123456789abcdef@bounces.acme.test",
            "b-4a-7-0123456789abcdef@bounces.acme.test",
            "b-042-7-0123456789abcdef@bounces.acme.test",
            "b-42-7-0123456789ABCDEF@bounces.acme.test",
            "b-42-7-0123456789abcdef-9@bounces.acme.test",
            "b-99999999999999999999999-1-0123456789abcdef@bounces.acme.test",
            "no-at-sign",
        ] {
            assert_eq!(parse(bad, "bounces.acme.test"), None, "{bad}");
        }
        // The listener takes tagged and legacy untagged addresses, nothing else.
        assert!(is_verp(&a, "bounces.acme.test"));
        assert!(is_verp("b-42-7@bounces.acme.test", "bounces.acme.test"));
        assert!(!is_verp("b-42-7@other.test", "bounces.acme.test"));
        assert!(!is_verp("b-42-07@bounces.acme.test", "bounces.acme.test"));
        assert!(!is_verp("x-42-7@bounces.acme.test", "bounces.acme.test"));
    }
}
