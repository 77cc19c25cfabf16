//! The frozen campaign content the engine renders every recipient's message from.

use crate::codec::{DecodeError, Reader, Writer};

const TAG: u8 = b'C';
const VERSION: u8 = 4;

/// A campaign as it was when sending started. Written once to `hk:camp:{id}` and never changed,
/// so every engine renders the same message for the same job.
///
/// Bodies and the subject may contain merge placeholders `{{name}}` where `name` is one of
/// `field_names`; a job's `fields` carry the values in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CampaignSnapshot {
    /// Campaign id.
    pub id: u64,
    /// Owning tenant, carried into events and headers.
    pub tenant: String,
    /// Display name of the sender (may be empty).
    pub from_name: String,
    /// Header From address.
    pub from_addr: String,
    /// Reply-To address, or empty for none.
    pub reply_to: String,
    /// Subject template.
    pub subject: String,
    /// Plain-text body template.
    pub text_body: String,
    /// HTML body template, or empty for a text-only message.
    pub html_body: String,
    /// Names of the merge fields, in the order jobs carry their values.
    pub field_names: Vec<String>,
    /// Envelope sender (MAIL FROM) for this campaign's messages.
    pub return_path: String,
    /// Domain used on the right of generated Message-IDs.
    pub message_id_domain: String,
    /// Extra header lines, each `Name: value` without the line end, in order; values may hold
    /// `{{name}}` placeholders of `field_names` (the per-recipient `List-Unsubscribe`, say).
    /// ASCII only: the writer encodes anything else before it gets here. Version 2 on; a
    /// version-1 snapshot has none.
    pub headers: Vec<String>,
    /// Domain of per-job VERP envelope senders ([`crate::verp`]); empty: every message is
    /// sent from `return_path`. Version 2 on.
    pub verp_domain: String,
    /// Charset for recipients at Japanese mobile carriers ([`crate::carriers`]): empty for the
    /// site policy's choice, else `iso-2022-jp` (7bit) or `utf-8` for this campaign. Version 3
    /// on.
    pub mobile_charset: String,
    /// The campaign's job-id key ([`crate::ids::campaign_key`], 64 hex digits): the engine tags
    /// every VERP address and Message-ID with it. Empty in snapshots before version 4 (their
    /// messages carry untagged identifiers, which the inbound listener does not act on).
    pub id_key: String,
}

impl CampaignSnapshot {
    /// Encodes the snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(
            TAG,
            VERSION,
            64 + self.text_body.len() + self.html_body.len() + self.subject.len(),
        );
        w.u64(self.id)
            .str(&self.tenant)
            .str(&self.from_name)
            .str(&self.from_addr)
            .str(&self.reply_to)
            .str(&self.subject)
            .str(&self.text_body)
            .str(&self.html_body)
            .strs(&self.field_names)
            .str(&self.return_path)
            .str(&self.message_id_domain)
            .strs(&self.headers)
            .str(&self.verp_domain)
            .str(&self.mobile_charset)
            .str(&self.id_key);
        w.finish()
    }

    /// Decodes a snapshot written by [`CampaignSnapshot::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (mut r, version) = Reader::new(bytes, TAG, VERSION)?;
        let s = CampaignSnapshot {
            id: r.u64("id")?,
            tenant: r.str("tenant")?.to_owned(),
            from_name: r.str("from_name")?.to_owned(),
            from_addr: r.str("from_addr")?.to_owned(),
            reply_to: r.str("reply_to")?.to_owned(),
            subject: r.str("subject")?.to_owned(),
            text_body: r.str("text_body")?.to_owned(),
            html_body: r.str("html_body")?.to_owned(),
            field_names: r.strs("field_names")?,
            return_path: r.str("return_path")?.to_owned(),
            message_id_domain: r.str("message_id_domain")?.to_owned(),
            headers: Vec::new(),
            verp_domain: String::new(),
            mobile_charset: String::new(),
            id_key: String::new(),
        };
        let s = if version >= 2 {
            CampaignSnapshot {
                headers: r.strs("headers")?,
                verp_domain: r.str("verp_domain")?.to_owned(),
                ..s
            }
        } else {
            s
        };
        let s = if version >= 3 {
            CampaignSnapshot {
                mobile_charset: r.str("mobile_charset")?.to_owned(),
                ..s
            }
        } else {
            s
        };
        let s = if version >= 4 {
            CampaignSnapshot {
                id_key: r.str("id_key")?.to_owned(),
                ..s
            }
        } else {
            s
        };
        r.end()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_truncation() {
        let s = CampaignSnapshot {
            id: 9,
            tenant: "acme".into(),
            from_name: "Acme ニュース".into(),
            from_addr: "news@acme.test".into(),
            reply_to: String::new(),
            subject: "Hello {{first_name}}".into(),
            text_body: "Hi {{first_name}},\r\n".into(),
            html_body: "<p>Hi {{first_name}}</p>".into(),
            field_names: vec!["first_name".into()],
            return_path: "bounce@acme.test".into(),
            message_id_domain: "acme.test".into(),
            headers: vec![
                "List-Unsubscribe: <{{unsubscribe_url}}>".into(),
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click".into(),
            ],
            verp_domain: "bounces.acme.test".into(),
            mobile_charset: "iso-2022-jp".into(),
            id_key: crate::ids::campaign_key(b"secret", 9),
        };
        let bytes = s.encode();
        assert_eq!(CampaignSnapshot::decode(&bytes), Ok(s));
        for cut in 0..bytes.len() {
            assert!(CampaignSnapshot::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn version_one_decodes_without_headers() {
        let mut s = CampaignSnapshot {
            id: 3,
            from_addr: "news@acme.test".into(),
            subject: "Hi".into(),
            ..CampaignSnapshot::default()
        };
        let mut w = Writer::new(TAG, 1, 64);
        w.u64(s.id)
            .str(&s.tenant)
            .str(&s.from_name)
            .str(&s.from_addr)
            .str(&s.reply_to)
            .str(&s.subject)
            .str(&s.text_body)
            .str(&s.html_body)
            .strs(&s.field_names)
            .str(&s.return_path)
            .str(&s.message_id_domain);
        let v1 = w.finish();
        assert_eq!(CampaignSnapshot::decode(&v1), Ok(s.clone()));
        s.headers = vec!["Feedback-ID: 3:acme:newsletter:hikyaku".into()];
        assert_eq!(CampaignSnapshot::decode(&s.encode()), Ok(s));
    }
}
