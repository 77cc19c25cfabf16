//! VERP bounce addresses: the envelope sender of each message names its job, so a bounce that
//! comes back later (a DSN after the receiving MTA accepted the message) maps to the campaign
//! and recipient without parsing the returned message.
//!
//! Form: `b-<campaign>-<seq>@<bounce domain>` (decimal). The engine writes it as MAIL FROM; the
//! API's inbound listener reads the address a DSN is sent to. The local part holds no MAC yet:
//! the listener takes a DSN only when its Final-Recipient (or Original-Recipient) is the job's
//! address, so a forged bounce must name a campaign id, a subscriber id and that subscriber's
//! address together.

use std::fmt::Write as _;

/// Local-part prefix of VERP addresses.
pub const PREFIX: &str = "b-";

/// Appends the VERP address of job (`campaign`, `seq`) under `domain` to `out`.
pub fn write(out: &mut String, campaign: u64, seq: u64, domain: &str) {
    let _ = write!(out, "{PREFIX}{campaign}-{seq}@{domain}");
}

/// The job a VERP address names, if `address` is one under `domain` (case-insensitive domain).
pub fn parse(address: &str, domain: &str) -> Option<(u64, u64)> {
    let (local, d) = address.rsplit_once('@')?;
    if !d.eq_ignore_ascii_case(domain) {
        return None;
    }
    let rest = local.strip_prefix(PREFIX)?;
    let (c, s) = rest.split_once('-')?;
    let all_digits =
        |x: &str| !x.is_empty() && x.len() <= 20 && x.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(c) || !all_digits(s) {
        return None;
    }
    Some((c.parse().ok()?, s.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_others() {
        let mut a = String::new();
        write(&mut a, 42, 1_000_007, "bounces.acme.test");
        assert_eq!(a, "b-42-1000007@bounces.acme.test");
        assert_eq!(parse(&a, "bounces.acme.test"), Some((42, 1_000_007)));
        assert_eq!(
            parse("b-42-7@BOUNCES.acme.test", "bounces.acme.test"),
            Some((42, 7))
        );
        for bad in [
            "b-42-7@other.test",
            "x-42-7@bounces.acme.test",
            "b-42@bounces.acme.test",
            "b--7@bounces.acme.test",
            "b-4a-7@bounces.acme.test",
            "b-42-7-9@bounces.acme.test",
            "b-99999999999999999999999-1@bounces.acme.test",
            "no-at-sign",
        ] {
            assert_eq!(parse(bad, "bounces.acme.test"), None, "{bad}");
        }
    }
}
