//! Signed per-recipient unsubscribe tokens: `<tenant>.<campaign>.<subscriber>.<mac>`, where
//! `mac` is the first 16 bytes of HMAC-SHA256 over the three ids, hex-encoded. No API key is
//! needed to use one; a token only ever unsubscribes the subscriber it names, for its tenant.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a valid token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Tenant.
    pub tenant: i64,
    /// Campaign the message came from.
    pub campaign: i64,
    /// Subscriber.
    pub subscriber: i64,
}

fn mac(secret: &[u8], msg: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(msg.as_bytes());
    m.finalize().into_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Makes the token.
pub fn sign(secret: &[u8], u: Unsubscribe) -> String {
    let body = format!("{}.{}.{}", u.tenant, u.campaign, u.subscriber);
    let tag = mac(secret, &body);
    format!("{body}.{tag}")
}

/// Checks a token; `None` if malformed or not signed with `secret`.
pub fn verify(secret: &[u8], token: &str) -> Option<Unsubscribe> {
    let (body, tag) = token.rsplit_once('.')?;
    let mut ids = body.split('.').map(|p| p.parse::<i64>().ok());
    let (tenant, campaign, subscriber) = (ids.next()??, ids.next()??, ids.next()??);
    if ids.next().is_some() || tag.len() != 32 {
        return None;
    }
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    m.update(body.as_bytes());
    let want: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(tag.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    // Constant-time comparison of the truncated tag.
    m.verify_truncated_left(&want).ok()?;
    Some(Unsubscribe {
        tenant,
        campaign,
        subscriber,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_resist_tampering() {
        let u = Unsubscribe {
            tenant: 3,
            campaign: 44,
            subscriber: 12345,
        };
        let t = sign(b"secret", u);
        assert_eq!(verify(b"secret", &t), Some(u));
        assert_eq!(verify(b"other", &t), None, "another key");
        let forged = t.replacen("12345", "12346", 1);
        assert_eq!(verify(b"secret", &forged), None, "another subscriber");
        for bad in [
            "",
            "a.b.c.d",
            "1.2.3",
            "1.2.3.zz",
            "1.2.3.4.0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(verify(b"secret", bad), None, "{bad}");
        }
    }
}
