//! Signed per-recipient tokens: `<tenant>.<campaign>.<subscriber>.<mac>`, where `mac` is the
//! first 16 bytes of HMAC-SHA256 over the [`Purpose`]'s domain and the three ids, hex-encoded.
//! No API key is needed to use one; a token only ever acts for the recipient it names, for its
//! tenant, and only for the purpose it was signed for: an unsubscribe token is no tracking
//! token, and a tracking token (which a mail client may leak in a `Referer` or a proxy log)
//! unsubscribes nobody.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a token is for. Each purpose signs under its own domain prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// One-click unsubscribe (`/u/{token}`).
    Unsubscribe,
    /// Open pixel and click redirects (`/t/{token}/…`).
    Track,
}

impl Purpose {
    /// The bytes the MAC covers before the ids. Unsubscribe's is empty because its tokens
    /// predate the others and are in delivered mail: they must keep verifying.
    fn domain(self) -> &'static str {
        match self {
            Purpose::Unsubscribe => "",
            Purpose::Track => "track:",
        }
    }
}

/// Subscriber id of test sends: no real subscriber has it (ids start at 1), so its tokens
/// work as links and act on no one.
pub const NO_SUBSCRIBER: i64 = 0;

/// What a valid token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient {
    /// Tenant.
    pub tenant: i64,
    /// Campaign the message came from.
    pub campaign: i64,
    /// Subscriber ([`NO_SUBSCRIBER`] for a test send).
    pub subscriber: i64,
}

/// HMAC-SHA256 of `purpose`'s domain and `body` under `secret`.
fn mac(secret: &[u8], purpose: Purpose, body: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(purpose.domain().as_bytes());
    m.update(body.as_bytes());
    m
}

/// Makes the token of `r` for `purpose`.
pub fn sign(secret: &[u8], purpose: Purpose, r: Recipient) -> String {
    let body = format!("{}.{}.{}", r.tenant, r.campaign, r.subscriber);
    let tag: String = mac(secret, purpose, &body).finalize().into_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{body}.{tag}")
}

/// A non-negative id as [`sign`] writes it: decimal digits, no sign, no leading zero.
pub fn canonical_id(s: &str) -> Option<i64> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

/// Checks a token; `None` if it is not exactly as [`sign`] wrote it (ids in canonical
/// decimal, the tag in lower-case hex: one spelling per token, so a token cannot be varied
/// to look new), not signed with `secret`, or signed for another purpose.
pub fn verify(secret: &[u8], purpose: Purpose, token: &str) -> Option<Recipient> {
    let (body, tag) = token.rsplit_once('.')?;
    let mut ids = body.split('.').map(canonical_id);
    let (tenant, campaign, subscriber) = (ids.next()??, ids.next()??, ids.next()??);
    if ids.next().is_some()
        || tag.len() != 32
        || !tag
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let want: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(tag.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    // Constant-time comparison of the truncated tag.
    mac(secret, purpose, body)
        .verify_truncated_left(&want)
        .ok()?;
    Some(Recipient {
        tenant,
        campaign,
        subscriber,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Recipient = Recipient {
        tenant: 3,
        campaign: 44,
        subscriber: 12345,
    };

    #[test]
    fn tokens_verify_and_resist_tampering() {
        for p in [Purpose::Unsubscribe, Purpose::Track] {
            let t = sign(b"secret", p, R);
            assert_eq!(verify(b"secret", p, &t), Some(R));
            assert_eq!(verify(b"other", p, &t), None, "another key");
            let forged = t.replacen("12345", "12346", 1);
            assert_eq!(verify(b"secret", p, &forged), None, "another subscriber");
            for bad in [
                "",
                "a.b.c.d",
                "1.2.3",
                "1.2.3.zz",
                "1.2.3.4.0123456789abcdef0123456789abcdef",
            ] {
                assert_eq!(verify(b"secret", p, bad), None, "{bad}");
            }
        }
    }

    #[test]
    fn a_token_has_one_spelling() {
        for p in [Purpose::Unsubscribe, Purpose::Track] {
            let t = sign(b"secret", p, R);
            let (body, tag) = t.rsplit_once('.').expect("tag");
            for other in [
                format!("+{t}"),
                format!("0{t}"),
                t.replacen("44", "+44", 1),
                t.replacen("44", "044", 1),
                format!("{body}.{}", tag.to_ascii_uppercase()),
                format!(" {t}"),
                format!("{t} "),
            ] {
                if other != t {
                    assert_eq!(verify(b"secret", p, &other), None, "{other}");
                }
            }
        }
        assert_eq!(canonical_id("0"), Some(0));
        assert_eq!(canonical_id("120"), Some(120));
        for bad in [
            "",
            "00",
            "01",
            "+1",
            "-1",
            "-0",
            "1 ",
            "1e3",
            "99999999999999999999",
        ] {
            assert_eq!(canonical_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_token_is_good_for_its_own_purpose_only() {
        let unsubscribe = sign(b"secret", Purpose::Unsubscribe, R);
        let track = sign(b"secret", Purpose::Track, R);
        assert_ne!(unsubscribe, track);
        assert_eq!(verify(b"secret", Purpose::Track, &unsubscribe), None);
        assert_eq!(verify(b"secret", Purpose::Unsubscribe, &track), None);
    }

    /// Unsubscribe tokens already delivered keep working: the MAC is over the bare ids.
    #[test]
    fn unsubscribe_tokens_are_unchanged() {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"secret").expect("key");
        m.update(b"3.44.12345");
        let tag: String = m.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            sign(b"secret", Purpose::Unsubscribe, R),
            format!("3.44.12345.{tag}")
        );
    }
}
