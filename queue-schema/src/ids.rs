//! Signed job identifiers: what reaches recipients and their providers about a job — the VERP
//! envelope sender ([`crate::verp`]) and the Message-ID — names its campaign and sequence
//! number *and* carries a MAC, so a report naming a job (a bounce to a VERP address, a
//! complaint quoting a Message-ID) is taken only for identifiers the service made. Campaign
//! and subscriber ids are sequential and visible to every recipient; without the MAC anyone
//! could name any job.
//!
//! Keys: the API holds the token secret and derives one key per campaign
//! ([`campaign_key`]), which travels to the engines in the campaign snapshot (never the secret
//! itself). The engine tags each job with [`Tagger::tag`]: the first 8 bytes of
//! HMAC-SHA256(campaign key, seq), as 16 lowercase hex digits. The API verifies with
//! [`verify`], recomputing the campaign key from the secret.
//!
//! Every part has exactly one spelling: decimal ids without sign or leading zeros, the tag in
//! lowercase hex. Anything else is not ours.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Hex digits of a tag.
pub const TAG_LEN: usize = 16;

/// The domain of campaign keys under the token secret.
const KEY_DOMAIN: &[u8] = b"hikyaku job ids:";

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// `n` in decimal, written at the end of `buf` (no allocation per message).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn key_bytes(secret: &[u8], campaign: u64) -> [u8; 32] {
    let mut m = hmac(secret);
    m.update(KEY_DOMAIN);
    m.update(campaign.to_string().as_bytes());
    m.finalize().into_bytes().into()
}

/// The key that tags `campaign`'s jobs, derived from the token `secret`, as hex (the form the
/// snapshot carries).
pub fn campaign_key(secret: &[u8], campaign: u64) -> String {
    hex(&key_bytes(secret, campaign))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Tags one campaign's jobs.
#[derive(Clone)]
pub struct Tagger {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for Tagger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tagger(..)")
    }
}

impl Tagger {
    /// A tagger for the campaign key `key_hex` ([`campaign_key`]); `None` when it is not 64 hex
    /// digits (a snapshot without one).
    pub fn new(key_hex: &str) -> Option<Tagger> {
        if key_hex.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(key_hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Tagger { keyed: hmac(&key) })
    }

    fn mac(&self, seq: u64) -> Hmac<Sha256> {
        let mut m = self.keyed.clone();
        let mut digits = [0u8; 20];
        m.update(decimal(seq, &mut digits));
        m
    }

    /// The tag of job `seq`: 16 lowercase hex digits.
    pub fn tag(&self, seq: u64) -> [u8; TAG_LEN] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let full = self.mac(seq).finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        for (i, b) in full.iter().take(TAG_LEN / 2).enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 15)];
        }
        out
    }
}

/// Whether `tag` is the tag of job (`campaign`, `seq`) under the token `secret` (constant-time
/// comparison; only the canonical lowercase spelling is accepted).
pub fn verify(secret: &[u8], campaign: u64, seq: u64, tag: &str) -> bool {
    if tag.len() != TAG_LEN
        || !tag
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return false;
    }
    let mut want = [0u8; TAG_LEN / 2];
    for (i, b) in want.iter_mut().enumerate() {
        match u8::from_str_radix(&tag[2 * i..2 * i + 2], 16) {
            Ok(v) => *b = v,
            Err(_) => return false,
        }
    }
    let mut m = hmac(&key_bytes(secret, campaign));
    let mut digits = [0u8; 20];
    m.update(decimal(seq, &mut digits));
    m.verify_truncated_left(&want).is_ok()
}

/// A decimal id in its one spelling: digits only, no leading zero (but `0` itself), at most
/// 20 digits.
pub fn parse_id(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// Message-ID local part prefix.
pub const MESSAGE_ID_PREFIX: &str = "hk.";

/// The job a Message-ID (without angle brackets) names: `hk.<campaign>.<seq>.<tag>@…`, and
/// its tag. Untagged ids (older messages) are not ours to act on.
pub fn parse_message_id(id: &str) -> Option<(u64, u64, &str)> {
    let local = id.rsplit_once('@')?.0;
    let mut parts = local.strip_prefix(MESSAGE_ID_PREFIX)?.split('.');
    let c = parse_id(parts.next()?)?;
    let s = parse_id(parts.next()?)?;
    let tag = parts.next()?;
    parts.next().is_none().then_some((c, s, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_verify_for_their_job_and_key_only() {
        let key = campaign_key(b"secret", 42);
        let t = Tagger::new(&key).expect("key");
        let tag = t.tag(7);
        let tag = std::str::from_utf8(&tag).expect("hex");
        assert!(verify(b"secret", 42, 7, tag));
        assert!(!verify(b"secret", 42, 8, tag), "another job");
        assert!(!verify(b"secret", 43, 7, tag), "another campaign");
        assert!(!verify(b"other", 42, 7, tag), "another secret");
        assert!(
            !verify(b"secret", 42, 7, &tag.to_ascii_uppercase()),
            "one spelling"
        );
        assert!(!verify(b"secret", 42, 7, &tag[..15]));
        assert!(!verify(b"secret", 42, 7, "+123456789abcdef"));
        assert!(Tagger::new("").is_none());
        assert!(Tagger::new(&key[..63]).is_none());
    }

    #[test]
    fn decimals_are_written_as_to_string_writes_them() {
        for n in [0, 7, 10, 42, 1_000_007, u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn ids_have_one_spelling() {
        assert_eq!(parse_id("0"), Some(0));
        assert_eq!(parse_id("42"), Some(42));
        for bad in ["", "01", "+1", "-1", " 1", "1a", "123456789012345678901"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
        assert_eq!(
            parse_message_id("hk.42.7.0123456789abcdef@acme.test"),
            Some((42, 7, "0123456789abcdef"))
        );
        for bad in [
            "hk.42.7@acme.test",
            "hk.42.07.0123456789abcdef@acme.test",
            "hk.42.7.x.y@acme.test",
            "xx.42.7.0123456789abcdef@acme.test",
        ] {
            assert_eq!(parse_message_id(bad), None, "{bad}");
        }
    }
}
